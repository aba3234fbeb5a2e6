"""The streaming worker: Kafka frames in, detections to PostgreSQL and Kafka out.

Public: `settings` (the worker's settings), `service` (the composition root: `open_worker`,
`serve`), `observability` (logging, metrics, health), `run_command` (`steel-worker run`). The
loop, the door (validation, decode), the sinks and the transport are this package's own.
"""

__all__ = ["observability", "run_command", "service", "settings"]
