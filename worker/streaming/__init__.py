"""The streaming worker: Kafka frames in, detections to PostgreSQL and Kafka out.

Public: `settings` (the worker's settings), `service` (the composition root: `open_worker`,
`serve`), `observability` (logging, metrics, health), `classify` (frames → detections placed on
the strip, as the worker makes them: also for scripts that measure the chain), `run_command`
(`steel-worker run`). The loop, the door (validation, decode), the sinks and the transport are
this package's own.
"""

__all__ = ["classify", "observability", "run_command", "service", "settings"]
