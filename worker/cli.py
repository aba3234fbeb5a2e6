"""`steel-worker`: one command with a subcommand per job.

Each subcommand lives in its own module, which exposes `register(subparsers)`: it adds its parser
and sets `func` to the function that runs it. Modules import heavy libraries (TensorFlow, Kafka)
inside that function, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from worker import __version__
from worker.core.errors import SteelWorkerError
from worker.core.native_logs import filtered_stderr

COMMAND_MODULES = (
    "worker.datasets.command",  # dataset
    "worker.model.train_command",  # train
    "worker.evaluation.command",  # evaluate
    "worker.model.predict_command",  # predict
    "worker.model.explain_command",  # explain
    "worker.model.export_command",  # export
    "worker.storage.command",  # db
    "worker.streaming.run_command",  # run
    "worker.streaming.dlq_command",  # dlq
    "worker.camera.command",  # simulate
    "worker.alerts.command",  # alerts
    "worker.reports.command",  # report
    "worker.console.command",  # console
    "worker.demo.command",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steel-worker",
        description=(
            "Steel strip surface inspection. Build tile sets from labelled images (dataset), train "
            "the focal-loss ResNet50 classifier (train), judge it (evaluate), classify images "
            "(predict), show where on a tile it saw each class (explain), export it for OpenVINO or ONNX "
            "(export). Run `steel-worker COMMAND "
            "--help` for each command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command; a SteelWorkerError prints its message and returns 2."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's native INFO lines: off
    try:
        with filtered_stderr():  # and its start-up lines that no setting reaches
            result = args.func(args)
    except SteelWorkerError as exc:
        print(f"steel-worker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steel-worker {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
