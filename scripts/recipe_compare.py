"""Compare training recipes on one tile set: train each variant, evaluate it on its test split, print a table.

Each variant is `steel-worker train` with the base options plus the variant's own, then `steel-worker
evaluate` on the model's persisted test split (the split depends only on the tile set and the seed,
so every variant is scored on the same tiles). Runs are separate processes, one at a time (two runs
pinned to one core each were four times slower per step here than one run on both). The table
(Markdown) goes to OUT/table.md and to stdout, with each run's load average and the machine's CPU
flags, so numbers from loaded or different machines are not mistaken for each other.

    python scripts/recipe_compare.py --data runs/neu200 --out runs/neu-compare \\
        --base "--input-size 64 --epochs 8" --variant base= --variant focal="--loss focal"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STEEL_WORKER = [sys.executable, "-m", "worker"]


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    wanted = [f for f in flags if f == "avx2" or f.startswith("avx512") or f in ("avx_vnni", "amx_tile")]
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )
    return f"{model}, {os.cpu_count()} cores, {' '.join(sorted(wanted)) or 'no AVX2'}"


def run_variant(name: str, options: list[str], args: argparse.Namespace) -> subprocess.Popen[str]:
    model = args.out / name
    log = (args.out / f"{name}.log").open("w")
    train = [*STEEL_WORKER, "train", "--data", str(args.data), "--out", str(model)]
    evaluate = [*STEEL_WORKER, "evaluate", "--model", str(model), "--out", str(model / "report")]
    script = f"{shlex.join(train + shlex.split(args.base) + options)} && {shlex.join(evaluate)}"
    for extra in args.tta:
        tta_out = model / f"report-tta-{extra}"
        tta = [*STEEL_WORKER, "evaluate", "--model", str(model), "--tta", extra, "--out", str(tta_out)]
        script += f" && {shlex.join(tta)}"
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    print(f"[{time.strftime('%H:%M:%S')}] start {name}: {script}", flush=True)
    return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env, text=True)


def row(name: str, options: list[str], out: Path, tta: list[str]) -> dict[str, Any]:
    model = out / name
    result: dict[str, Any] = {"variant": name, "options": " ".join(options) or "(base)"}
    try:
        meta = json.loads((model / "model.json").read_text())
        report = json.loads((model / "report" / "report.json").read_text())
    except (OSError, ValueError) as exc:
        result["error"] = f"no result ({exc}); see {out / (name + '.log')}"
        return result
    training = meta.get("training", {})
    single = report.get("single_label") or {}
    aucs = [c.get("auc") for c in report.get("classes", {}).values() if c.get("auc") is not None]
    result.update(
        top1=single.get("top1_accuracy"),
        macro_f1=single.get("macro_f1"),
        macro_auc=sum(aucs) / len(aucs) if aucs else None,
        binary_accuracy=report.get("binary_accuracy"),
        epochs=training.get("epochs_done"),
        minutes=(training.get("seconds") or 0) / 60,
    )
    for extra in tta:
        try:
            tta_report = json.loads((model / f"report-tta-{extra}" / "report.json").read_text())
            result[f"top1_tta_{extra}"] = (tta_report.get("single_label") or {}).get("top1_accuracy")
        except (OSError, ValueError):
            result[f"top1_tta_{extra}"] = None
    return result


def fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]], tta: list[str]) -> str:
    head = ["variant", "options", "top-1", "macro F1", "macro AUC", "binary acc.", "epochs", "train min"]
    head += [f"top-1 TTA {t}" for t in tta] + ["load before/after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['options']} | {r['error']} |")
            continue
        cells = [
            r["variant"],
            f"`{r['options']}`",
            fmt(r["top1"]),
            fmt(r["macro_f1"]),
            fmt(r["macro_auc"]),
            fmt(r["binary_accuracy"]),
            fmt(r["epochs"]),
            fmt(r["minutes"], 1),
        ]
        cells += [fmt(r.get(f"top1_tta_{t}")) for t in tta] + [
            " / ".join("–" if math.isnan(v) else fmt(v, 1) for v in r["load"])
        ]  # NaN: a kept run
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="tile set (steel-worker dataset)")
    p.add_argument("--out", type=Path, required=True, help="folder for the models, logs and table.md")
    p.add_argument("--base", default="", help="train options every variant gets (one quoted string)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OPTIONS",
        help="a variant: its name and its own train options (repeatable; 'name=' for the base alone)",
    )
    p.add_argument(
        "--tta",
        action="append",
        default=[],
        choices=("flips", "flips+rot90"),
        help="also evaluate each model with this test-time augmentation",
    )
    p.add_argument(
        "--keep", action="store_true", help="do not rerun a variant whose model and report are in OUT already"
    )
    args = p.parse_args(argv)
    if not args.variant:
        p.error("give at least one --variant NAME=OPTIONS")
    variants = []
    for text in args.variant:
        name, sep, options = text.partition("=")
        if not sep or not name.replace("-", "").replace("_", "").isalnum():
            p.error(f"--variant: expected NAME=OPTIONS with a plain name, received {text!r}")
        variants.append((name, shlex.split(options)))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"machine: {cpu_flags()}; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    loads: dict[str, tuple[float, float]] = {}
    for name, options in variants:
        before = os.getloadavg()[0]
        if args.keep and (args.out / name / "report" / "report.json").is_file():
            print(f"{name}: kept from an earlier run ({args.out / name})")
            loads[name] = (float("nan"), float("nan"))
            continue
        code = run_variant(name, options, args).wait()
        loads[name] = (before, os.getloadavg()[0])
        print(f"[{time.strftime('%H:%M:%S')}] done {name} (exit {code}); load average {loads[name][1]:.2f}")
    rows = [{**row(name, options, args.out, args.tta), "load": loads[name]} for name, options in variants]
    text = (
        f"{table(rows, args.tta)}\n\nbase options: `{args.base}`; machine: {cpu_flags()}; "
        "one run at a time; "
        f"wall time {(time.monotonic() - started) / 60:.1f} min; load average at the end "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    (args.out / "table.md").write_text(text)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2))
    print(text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
