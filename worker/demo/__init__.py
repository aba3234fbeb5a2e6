"""`steel-worker demo`: the whole product on one machine (see `worker.demo.run`).

Public: `command` (the subcommand), `run` (`run_demo`, the demo's strip scenarios), `quality` (the
model's measured quality on a simulated stream, also used by `scripts/synthetic_stream_check.py`),
`model` (the cached demo model, also used by `scripts/roll_mark_recall.py`), `worker_process`
(a `steel-worker run` subprocess with its log, also used by `bench/scaling.py`).
"""

__all__ = ["command", "model", "quality", "run", "worker_process"]
