"""The demo's pieces: ground truth cut like the worker cuts, the quality measurement on crafted cases
with known answers, the same measurement through the real broker, worker and database (an untrained
input-32 model whose thresholds are 0, so every class is detected on every tile), the summary and
live view texts, the rules/roll look-up, the worker's environment and log, the model cache, and
`steel-worker demo` end to end (slow).
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from streaming_harness import loaded_model, make_topics, running_worker, untrained_model, worker_settings

from worker import cli
from worker.camera.frames import SimulatedFrame
from worker.camera.plan import RollMark, SimulationPlan
from worker.core.errors import ConfigError, InfrastructureError
from worker.core.thresholds import ClassThresholds
from worker.demo.live import LiveView, summary_lines
from worker.demo.model import (
    CACHE_DIR_ENV,
    DEMO_KNOWN_LIMITS,
    DemoRecipe,
    demo_model_dir,
    prepare_demo_model,
)
from worker.demo.quality import GroundTruth, measure_quality, read_detected, tile_truth
from worker.demo.rules import demo_rules_file, roll_pitch
from worker.demo.run import DemoOptions, StreamRun, run_demo, stream_through_worker
from worker.demo.snapshot import AlertLine, ClassCount, StreamSnapshot, read_snapshot
from worker.demo.worker_process import WorkerHandle, log_tail, worker_environment
from worker.infra.broker import EmbeddedBroker
from worker.model.artefact import Classifier
from worker.storage.engine import create_engine

CLASSES = ("holes", "scratches", "rolling")
RULES = Path(__file__).resolve().parents[1] / "config" / "alert-rules.yaml"


# --- ground truth -----------------------------------------------------------------------------------


def _masks(height: int, width: int) -> dict[str, np.ndarray]:
    return {name: np.zeros((height, width), dtype=bool) for name in CLASSES}


def test_tile_truth_cuts_like_the_worker_and_counts_min_pixels() -> None:
    """A 256×1600 frame gives the worker's 7 tiles (origins 0, 224, …, 1344; neighbours overlap by
    32 px): a defect inside the overlap is on both tiles; 64 mask pixels make a class present, 63
    do not; classes are independent."""
    masks = _masks(256, 1600)
    masks["holes"][10:18, 230:238] = True  # 64 px at x 230..237: tiles 0 (0..255) and 1 (224..479)
    masks["scratches"][100:163, 700] = True  # 63 px in tile 3 (672..927) only: below the rule
    masks["rolling"][0:256, 1500:1510] = True  # tile 6 (1344..1599)
    labels = tile_truth(masks, tile_size=256)
    assert labels == (
        frozenset({"holes"}),
        frozenset({"holes"}),
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset({"rolling"}),
    )
    masks["scratches"][163, 700] = True  # the 64th pixel
    assert tile_truth(masks, tile_size=256)[3] == frozenset({"scratches"})


def test_tile_truth_pads_small_frames_with_nothing_and_honours_overlap() -> None:
    """A frame smaller than a tile is one padded tile (padding never holds a defect); a minimum
    overlap adds tiles exactly as `tile_windows` does for the worker."""
    masks = _masks(100, 200)
    masks["rolling"][:, :] = True
    assert tile_truth(masks, tile_size=256) == (frozenset({"rolling"}),)
    big = _masks(256, 512)
    assert len(tile_truth(big, tile_size=256)) == 2
    assert len(tile_truth(big, tile_size=256, min_overlap=64)) == 3


def test_tile_truth_refuses_masks_of_different_shapes() -> None:
    masks = _masks(256, 512)
    masks["holes"] = np.zeros((256, 256), dtype=bool)
    with pytest.raises(ConfigError, match="one shape"):
        tile_truth(masks, tile_size=256)


# --- the measurement on crafted cases -------------------------------------------------------------


def test_measure_quality_counts_a_crafted_case() -> None:
    """Two frames of 3 tiles, hand-made truth and detections, every count checked:
    f1: [holes] found (exactly); [scratches+rolling] only rolling found (not right); [] flagged (holes).
    f2: [] clean; [rolling] found as scratches (not right); [] clean.
    f3 was sent but is not in the ledger: listed, not scored. A detection on a tile outside the
    truth (index 7) is ignored."""
    truth = {
        "f1": (frozenset({"holes"}), frozenset({"scratches", "rolling"}), frozenset()),
        "f2": (frozenset(), frozenset({"rolling"}), frozenset()),
        "f3": (frozenset({"holes"}),),
    }
    detected = {
        ("f1", 0): {"holes"},
        ("f1", 1): {"rolling"},
        ("f1", 2): {"holes"},
        ("f2", 1): {"scratches"},
        ("f2", 7): {"holes"},
    }
    q = measure_quality(truth, {"f1", "f2", "other"}, detected, CLASSES)
    assert (q.frames, q.tiles) == (2, 6)
    assert (q.defective_tiles, q.defective_right, q.defective_exact) == (3, 1, 1)
    assert (q.clean_tiles, q.clean_flagged) == (3, 1)
    assert q.defective_right_share == pytest.approx(1 / 3)
    assert q.clean_flagged_share == pytest.approx(1 / 3)
    by_name = {c.name: (c.tiles, c.found, c.false_alarms) for c in q.classes}
    assert by_name == {"holes": (1, 1, 1), "scratches": (1, 0, 1), "rolling": (2, 1, 0)}
    assert q.unprocessed_frames == ("f3",)
    assert not q.meets_targets
    text = "\n".join(q.lines())
    assert "1/3 = 33.3 %" in text and "MISSED" in text and "NOT IN THE DATABASE: 1 frames" in text


def test_measure_quality_targets_are_inclusive_and_need_every_frame() -> None:
    """90 % right and 5 % flagged exactly meet the targets; a missing frame fails them."""
    truth = {f"d{i}": (frozenset({"holes"}),) for i in range(10)}
    truth |= {f"c{i}": (frozenset(),) for i in range(20)}
    detected: dict[tuple[str, int], set[str]] = {(f"d{i}", 0): {"holes"} for i in range(9)}
    detected[("c0", 0)] = {"scratches"}
    q = measure_quality(truth, set(truth), detected, CLASSES)
    assert (q.defective_right_share, q.clean_flagged_share) == (0.9, 0.05)
    assert q.meets_targets
    detected[("d0", 0)] = {"holes", "rolling"}  # an extra class: still found, no longer exact
    q = measure_quality(truth, set(truth), detected, CLASSES)
    assert (q.defective_right, q.defective_exact) == (9, 8)
    q = measure_quality(truth, set(truth) - {"c5"}, detected, CLASSES)
    assert not q.meets_targets and q.unprocessed_frames == ("c5",)


def test_ground_truth_refuses_frames_without_masks(tmp_path: Path) -> None:
    from worker.core.records import FrameMeta  # noqa: PLC0415

    meta = FrameMeta("S-f000000", "L1", "cam", "top", "S", datetime.now(UTC), 0.0, 1.0, 1.0, 0.0)
    frame = SimulatedFrame(meta, "image/png", np.zeros((256, 256), np.uint8), (), None)
    with pytest.raises(ConfigError, match="no ground truth"):
        GroundTruth(256).add(frame)


# --- through the real broker, worker and database ----------------------------------------------------


@pytest.fixture(scope="module")
def detect_everything(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    """The session's untrained artefact (input 32; tests/streaming_harness.py) with every threshold
    0, on disk and in memory: every class is detected on every tile. Same weights, same version;
    the Keras model is shared, not built again."""
    shared = loaded_model(untrained_model(tmp_path_factory))
    out = tmp_path_factory.mktemp("detect-everything")
    shutil.copytree(shared.model_dir, out, dirs_exist_ok=True)
    meta = json.loads((out / "model.json").read_text())
    meta["thresholds"] = dict.fromkeys(meta["thresholds"], 0.0)
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    return Classifier(
        model=shared.model,
        model_dir=out,
        catalogue=shared.catalogue,
        thresholds=ClassThresholds.from_mapping(shared.catalogue.names, meta["thresholds"], "model.json"),
        version=shared.version,
        input_size=shared.input_size,
        backbone=shared.backbone,
        meta=meta,
        batch_size=8,
    )


class _Recording(GroundTruth):
    """Ground truth that also keeps the frames, to check the labels against the placements."""

    def __init__(self) -> None:
        super().__init__(256)
        self.sent: list[SimulatedFrame] = []

    def add(self, frame: SimulatedFrame) -> None:
        super().add(frame)
        self.sent.append(frame)


class _ThreadHandle:
    def __init__(self, thread: threading.Thread, log_path: Path) -> None:
        self.thread = thread
        self.log_path = log_path

    def check_alive(self) -> None:
        if not self.thread.is_alive():
            raise InfrastructureError("the in-process worker stopped")


def test_stream_through_worker_measures_known_answers(
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    database_url: str,
    detect_everything: Classifier,
    tmp_path: Path,
) -> None:
    """Frames from the simulator through the real worker into PostgreSQL, with a model that finds
    every class on every tile: the measurement must say every defective tile was found with the
    right classes and every clean tile was flagged, and the snapshot must count 7 tiles per frame
    and one detection per tile and class. Each roll mark's centre tile is labelled with its class."""
    topics = make_topics(make_topic, partitions=1)
    settings = worker_settings(broker.bootstrap_servers, database_url, detect_everything.model_dir, topics)
    plan = SimulationPlan(
        topic=topics.frames,
        strips=2,
        strip_length_m=0.75,  # 3 frames of 0.256 m each
        fps=0,
        seed=11,
        defect_rate=1.5,
        roll_marks=(RollMark("rolling", 0.5),),
        partitions=1,
    )
    truth = _Recording()
    engine = create_engine(database_url)
    try:
        with running_worker(settings, detect_everything) as running:
            handle: WorkerHandle = _ThreadHandle(running.thread, tmp_path / "worker.log")
            run = StreamRun(
                plan=plan,
                bootstrap=broker.bootstrap_servers,
                engine=engine,
                worker=handle,
                truth=truth,
                expected_frames=6,
                idle_timeout_s=60,
            )
            out = io.StringIO()
            result = stream_through_worker(run, out, live=False)
        assert len(result.strip_ids) == 2 and "sent 6/6 frames" in out.getvalue()
        processed, detected = read_detected(engine, result.strip_ids)
        snapshot = read_snapshot(engine, result.strip_ids)
    finally:
        engine.dispose()

    labels = truth.frames
    assert set(labels) == processed and len(processed) == 6
    tiles = [t for frame in labels.values() for t in frame]
    defective = sum(1 for t in tiles if t)
    assert 0 < defective < 42
    for frame in truth.sent:  # the roll mark's centre is inside its tile: at least 64 mask pixels
        for d in frame.defects:
            if d.class_name == "rolling" and d.scale == 1.0:
                index = min(range(7), key=lambda i: abs(i * 224 + 128 - d.column))
                assert "rolling" in labels[frame.meta.frame_id][index]

    q = measure_quality(labels, processed, detected, CLASSES)
    assert (q.frames, q.tiles) == (6, 42)
    assert q.defective_right == q.defective_tiles == defective
    assert q.clean_flagged == q.clean_tiles == 42 - defective
    for c in q.classes:
        present = sum(1 for t in tiles if c.name in t)
        assert (c.tiles, c.found, c.false_alarms) == (present, present, 42 - present)
    assert (snapshot.frames, snapshot.tiles) == (6, 42)
    assert {c.name: c.detections for c in snapshot.classes} == dict.fromkeys(CLASSES, 42)
    assert snapshot.crops == 42 and snapshot.crop_bytes > 42 * 100  # every tile found: every crop kept
    assert all(c.cause and c.prevention for c in snapshot.classes)


def test_read_snapshot_lists_every_class_and_only_the_given_strips(engine: sa.Engine) -> None:
    """Classes without detections are listed with 0; another strip's frames are not counted."""
    snapshot = read_snapshot(engine, ["no-such-strip"])
    assert (snapshot.frames, snapshot.tiles, snapshot.alerts, snapshot.crops) == (0, 0, (), 0)
    assert [c.name for c in snapshot.classes] == list(CLASSES)
    assert all(c.detections == 0 for c in snapshot.classes)


# --- texts --------------------------------------------------------------------------------------------


def _snapshot() -> StreamSnapshot:
    alert = AlertLine(
        alert_id=4,
        rule="roll-marks",
        kind="periodic",
        severity="high",
        class_name="rolling",
        strip_id="S-1",
        roll="F7 top work roll",
        pitch_m=2.01,
        position_start_m=1.2,
        position_end_m=13.3,
        detection_count=7,
        cause="wear of the rollers",
        prevention="regular change of rolls according to wear behaviour",
    )
    classes = (
        ClassCount("holes", 5, "inclusions", "limit the scatter"),
        ClassCount(
            "rolling", 9, "wear of the rollers", "regular change of rolls according to wear behaviour"
        ),
    )
    return StreamSnapshot(
        frames=20, tiles=140, classes=classes, alerts=(alert,), crops=12, crop_bytes=240_000
    )


def test_summary_lines_show_counts_causes_preventions_and_the_roll() -> None:
    text = "\n".join(summary_lines(_snapshot(), strips=1, seconds=10.0))
    assert "1 strips, 20 frames, 140 tiles in 10 s (2.0 frames/s), 14 detections, 1 alerts" in text
    assert "wear of the rollers" in text and "→ regular change of rolls" in text
    assert "roll-marks" in text and "F7 top work roll (pitch 2.01 m)" in text and "1.2- 13.3" in text
    assert "evidence: 12 crops, 0.2 MB (20.0 kB per crop, 12.0 MB per 1000 frames)" in text
    empty = "\n".join(summary_lines(StreamSnapshot(0, 0, (), ()), strips=1, seconds=1.0))
    assert "evidence: no crops stored" in empty


def test_live_view_plain_lines_and_terminal_redraw() -> None:
    """Without a terminal: one plain line per interval (and the final one); on a terminal the block
    is redrawn in place (cursor moved up over the previous block)."""
    plain = io.StringIO()
    view = LiveView(plain, live=False, every_s=3600)
    view.update(_snapshot(), 10, 30)
    view.update(_snapshot(), 11, 30)  # within the interval: nothing
    view.update(_snapshot(), 30, 30, final=True)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "sent 30/30 frames" in lines[1] and "holes 5, rolling 9" in lines[1]
    tty = io.StringIO()
    view = LiveView(tty, live=True)
    view.update(_snapshot(), 10, 30)
    view.update(_snapshot(), 12, 30)
    assert tty.getvalue().count("\x1b[4F") == 1  # 4 lines: head, 2 classes, alerts
    assert "cause: wear of the rollers" in tty.getvalue() and "latest: roll-marks" in tty.getvalue()


def test_live_view_rates_over_the_window() -> None:
    view = LiveView(io.StringIO(), live=False, window_s=4.0)
    assert view.rates(100.0, 0, 0) == (0.0, 0.0)
    assert view.rates(102.0, 10, 70) == (5.0, 35.0)
    view.rates(106.0, 30, 210)
    assert view.rates(110.0, 50, 350) == pytest.approx((5.0, 35.0))  # the oldest samples dropped


# --- rules, environment, options -------------------------------------------------------------------------


def test_roll_pitch_reads_the_rules_file_and_names_the_rolls() -> None:
    assert roll_pitch(RULES, "F7 top work roll") == pytest.approx(math.pi * 0.64)
    with pytest.raises(ConfigError, match="F7 top work roll"):
        roll_pitch(RULES, "no such roll")


def test_demo_rules_file_order_and_refusal_when_rules_are_off(tmp_path: Path) -> None:
    assert demo_rules_file(tmp_path / "r.yaml", {"ALERT_RULES": "x.yaml"}) == (tmp_path / "r.yaml").resolve()
    assert demo_rules_file(None, {"ALERT_RULES": str(tmp_path / "x.yaml")}) == (tmp_path / "x.yaml").resolve()
    assert demo_rules_file(None, {}).resolve() == RULES  # the shipped default (worker/config links it)
    assert demo_rules_file(None, {"ALERT_RULES": " "}).resolve() == RULES
    with pytest.raises(ConfigError, match="ALERT_RULES=none"):
        demo_rules_file(None, {"ALERT_RULES": "none"})
    with pytest.raises(ConfigError, match="ALERT_RULES=None"):  # the worker's parser: any case
        demo_rules_file(None, {"ALERT_RULES": " None "})


def test_worker_environment_keeps_the_users_settings_and_fills_the_demos() -> None:
    env = worker_environment(
        {"BATCH_MAX_WAIT_MS": "50", "PATH": "/bin", "DATABASE_URL": "old"},
        "127.0.0.1:9",
        "postgresql://db",
        Path("/m"),
        RULES,
    )
    assert env["BATCH_MAX_WAIT_MS"] == "50" and env["PATH"] == "/bin"
    assert env["DATABASE_URL"] == "postgresql://db" and env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9"
    assert env["MODEL_PATH"] == "/m" and env["ALERT_RULES"] == str(RULES) and env["METRICS_PORT"] == "0"


def test_log_tail_gives_the_last_lines_or_says_there_is_no_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"line {i}\n" for i in range(20)))
    assert log_tail(log, 3) == "line 17\nline 18\nline 19"
    assert log_tail(tmp_path / "missing.log") == "(no log)"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("strips", 0, "--strips"),
        ("strip_length_m", 0.0, "--strip-length-m"),
        ("defect_rate", -1.0, "--defect-rate"),
        ("console_port", -1, "--console-port"),
        ("console_port", 70000, "--console-port"),
    ],
)
def test_demo_options_refuse_bad_values(field: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DemoOptions(**{field: value})


def test_demo_command_help_and_bad_roll_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--help teaches; an unknown roll is refused (status 2) before any service starts or any
    folder is made."""
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "quality" in capsys.readouterr().out
    assert cli.main(["demo", "--roll", "no such roll", "--out", str(tmp_path / "out")]) == 2
    assert "not a roll of" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the model cache -------------------------------------------------------------------------------------


def test_recipe_digest_is_stable_and_follows_every_field() -> None:
    assert DemoRecipe().digest() == DemoRecipe().digest()
    assert len(DemoRecipe().digest()) == 12
    assert DemoRecipe(epochs=3).digest() != DemoRecipe().digest()
    assert DemoRecipe(input_size=96).digest() != DemoRecipe().digest()
    assert DemoRecipe(oversample=not DemoRecipe().oversample).digest() != DemoRecipe().digest()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    yield tmp_path / "cache"


def test_prepare_demo_model_reuses_the_cached_artefact(
    cache_dir: Path, detect_everything: Classifier
) -> None:
    """A finished artefact in the recipe's cache folder is used as it is (nothing is trained)."""
    recipe = DemoRecipe()
    target = demo_model_dir(recipe)
    assert target == cache_dir / f"demo-model-{recipe.digest()}"
    target.parent.mkdir(parents=True)
    shutil.copytree(detect_everything.model_dir, target)
    prepared = prepare_demo_model(recipe)
    assert (prepared.path, prepared.built, prepared.version) == (target, False, detect_everything.version)


@pytest.mark.slow
def test_prepare_demo_model_builds_a_tiny_recipe_once(cache_dir: Path) -> None:
    """A tiny recipe is built into its cache folder (no partial folder left, no checkpoints kept,
    tiles removed) and reused by the next call."""
    recipe = DemoRecipe(frames=10, input_size=32, steps_per_epoch=2, epochs=1, batch_size=8)
    messages: list[str] = []
    prepared = prepare_demo_model(recipe, progress=False, log=messages.append)
    assert prepared.built and (prepared.path / "model.json").is_file()
    assert sorted(p.name for p in cache_dir.iterdir()) == [prepared.path.name]
    assert not (prepared.path / "checkpoints").exists() and not (prepared.path / "tiles").exists()
    meta = json.loads((prepared.path / "model.json").read_text())
    assert meta["input_size"] == 32 and meta["training"]["optimizer"] == recipe.optimizer
    assert meta["training"]["oversample"] is recipe.oversample  # the recipe reaches the training
    card = (prepared.path / "MODEL_CARD.md").read_text()
    assert f"- {DEMO_KNOWN_LIMITS}" in card  # the card warns that the demo model is synthetic-only
    again = prepare_demo_model(recipe, progress=False, log=messages.append)
    assert not again.built and again.version == prepared.version


# --- the command end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_demo_end_to_end_with_a_given_model(
    broker: EmbeddedBroker,
    postgres_server_url: str,
    detect_everything: Classifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run_demo` with the real worker subprocess: every frame written, the summary and the defect
    map produced, and the known answers of a model that finds everything (targets missed)."""
    from worker.infra.postgres import fresh_database  # noqa: PLC0415

    with fresh_database(postgres_server_url) as url:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("FRAMES_TOPIC", f"demo-frames-{tmp_path.name}")
        monkeypatch.setenv("CONSUMER_GROUP", f"demo-{tmp_path.name}")
        out = io.StringIO()
        options = DemoOptions(
            strips=2,  # the second strip is the roll-marked one: defects to find (the first is clean)
            strip_length_m=2.5,
            fps=0,
            model_dir=detect_everything.model_dir,
            out_dir=tmp_path / "out",
        )
        result = run_demo(options, out)
    text = out.getvalue()
    q = result.quality
    assert result.worker_exit_code == 0 and q.frames == 20 and q.tiles == 140 and not q.unprocessed_frames
    assert q.defective_right == q.defective_tiles and q.clean_flagged == q.clean_tiles > 0
    assert q.defective_exact < q.defective_tiles  # every class on every tile: extras on most of them
    assert not q.meets_targets
    assert result.defect_map.is_file() and result.defect_map.stat().st_size > 10_000
    assert "== summary" in text and "defect map of strip" in text and "clean tiles flagged" in text
    assert "latency from capture" in text and "capture → rows committed:" in text
    # the demo's worker runs MODEL_RUNTIME=auto: on this model without exports, Keras
    assert "the worker runs the model on tensorflow (MODEL_RUNTIME=auto; passed over: openvino-int8" in text


# --- scripts/synthetic_stream_check.py -------------------------------------------------------------


def _stream_check(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parents[1] / "scripts" / "synthetic_stream_check.py"
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_stream_check_scores_a_model_with_the_demos_measure(detect_everything: Classifier) -> None:
    """A model that detects every class everywhere finds every defective tile and flags every clean
    one; --scale adds a second block of the same measure."""
    done = _stream_check("--model", str(detect_everything.model_dir), "--frames", "4", "--scale", "2")
    assert done.returncode == 0, done.stderr
    assert "4 frames, 28 tiles" in done.stdout
    right = re.findall(r"found with the right class: (\d+)/(\d+)", done.stdout)
    flagged = re.findall(r"clean tiles flagged: +(\d+)/(\d+)", done.stdout)
    assert len(right) == len(flagged) == 2  # thresholds ×1 and ×2 (0 either way)
    assert all(a == b and int(b) > 0 for a, b in right) and all(a == b for a, b in flagged)


def test_stream_check_names_a_model_directory_that_is_not_one(tmp_path: Path) -> None:
    done = _stream_check("--model", str(tmp_path / "nothing"), "--frames", "1")
    assert done.returncode == 2 and "error:" in done.stderr and "nothing" in done.stderr


def test_the_demo_tells_a_plants_story_most_strips_clean_one_marked_by_a_roll_one_by_a_guide() -> None:
    """Five strips by default: clean, roll mark, clean, guide scratches, clean — few stray defects."""
    from worker.demo.run import demo_scenarios  # noqa: PLC0415

    options = DemoOptions()
    scenarios = demo_scenarios(options, pitch=2.011)
    assert options.strips == 5 and len(scenarios) == 5
    assert [s.name for s in scenarios] == [
        "clean",
        "roll mark: F7 top work roll",
        "clean",
        "scratches from a guide",
        "clean",
    ]
    assert all(s.defect_rate == options.defect_rate <= 0.1 for s in scenarios)
    (mark,) = scenarios[1].roll_marks
    assert (mark.class_name, mark.pitch_m) == ("rolling", 2.011)
    (guide,) = scenarios[3].clusters
    assert (
        guide.class_name == "scratches" and guide.count >= 6 and guide.span_m <= 3.0
    )  # the density rule's window
    assert not any(s.roll_marks or s.clusters for s in scenarios if s.name == "clean")
