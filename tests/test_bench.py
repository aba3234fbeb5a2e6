"""Smoke test of the throughput benchmark (`make bench`): the script runs as documented on a tiny
stream and reports the three throughputs and their ratios. Slow (a model, a broker, two worker
runs); the numbers themselves are measured by hand (docs/benchmark.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_measures_bare_model_and_worker_with_rules_on_and_off(
    postgres_server_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "numbers.json"
    env = {**os.environ, "DATABASE_URL": postgres_server_url, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "bench/throughput.py", "--tiles", "28", "--input-size", "32", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in (
        "(a) bare model",
        "(b) worker, rules on",
        "(c) worker, rules off",
        "worker/bare",
        "load average",
    ):
        assert line in done.stdout, done.stdout
    numbers = json.loads(out.read_text())
    for key in ("bare_tiles_per_s", "worker_rules_on_tiles_per_s", "worker_rules_off_tiles_per_s"):
        assert numbers[key] > 0, numbers
    for mode in ("on", "off"):  # one round: each worker run against the bare pass just before it
        assert numbers[f"ratio_{mode}_bare"] == pytest.approx(
            numbers["worker_runs"][mode][0] / numbers["bare_passes"][mode][0]
        )
        assert 0 < numbers["model_busy"][mode] <= 1
