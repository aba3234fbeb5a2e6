"""`steel-worker demo`: the whole product on one machine (see `worker.demo.run`).

Public: `command` (the subcommand), `run` (`run_demo`), `quality` (the model's measured quality on
a simulated stream, also used by `scripts/synthetic_stream_check.py`).
"""

__all__ = ["command", "quality", "run"]
