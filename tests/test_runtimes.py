"""Inference runtimes: the OpenVINO and ONNX Runtime exports of a real artefact, their checks at
load, the CLI, the worker.

The artefact is the worker tests' untrained ResNet50 (input 32), copied per test so exports and
tampering stay local. Both runtimes are in the test extras; these tests need them installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from frames import grey_image, inbound
from streaming_harness import (
    detection_rows,
    frame_messages,
    ledger,
    make_topics,
    publish,
    running_worker,
    wait_until,
    worker_settings,
)

from worker import cli
from worker.core.errors import ConfigError, ModelError
from worker.inference import Inferencer
from worker.model.runtimes import (
    EXPORTS,
    RUNTIMES,
    OnnxRuntimeClassifier,
    OpenVinoClassifier,
    export_model,
    load_runtime_classifier,
)
from worker.streaming import decode as d
from worker.streaming.settings import load_settings

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

OPENVINO_DIR = EXPORTS["openvino"].folder
EXPORTED = ("openvino", "onnxruntime")
KINDS = {"openvino": OpenVinoClassifier, "onnxruntime": OnnxRuntimeClassifier}

#: fp32 against fp32 (OpenVINO is held to f32 at load): only the order of the sums differs.
SCORE_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def master(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artefact exported for both runtimes once per module (read-only: tests copy it)."""
    copy = tmp_path_factory.mktemp("runtimes") / "model"
    shutil.copytree(model_dir, copy)
    for runtime in EXPORTED:
        export_model(copy, runtime)
    return copy


@pytest.fixture
def artefact(model_dir: Path, tmp_path: Path) -> Path:
    """The artefact without exports, a copy of its own."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


@pytest.fixture
def exported(master: Path, tmp_path: Path) -> Path:
    """The artefact with both exports, a copy of its own."""
    copy = tmp_path / "exported"
    shutil.copytree(master, copy)
    return copy


def _tiles(n: int = 12, size: int = 256) -> np.ndarray:
    return np.stack([grey_image(size, size, seed=500 + i) for i in range(n)])


@pytest.mark.parametrize("runtime", EXPORTED)
def test_the_export_scores_like_keras_and_is_recorded_with_its_hashes(master: Path, runtime: str) -> None:
    artefact = master  # exported by the fixture, read here
    meta = json.loads((artefact / "model.json").read_text())
    record = meta["exports"][runtime]
    assert sorted(record["files"]) == sorted(EXPORTS[runtime].paths)
    assert {"openvino": ["openvino/model.bin", "openvino/model.xml"], "onnxruntime": ["onnx/model.onnx"]}[
        runtime
    ] == sorted(record["files"])
    assert record["weights_version"] == meta["version"] and record["precision"] == "fp32"
    assert not list(artefact.glob(".*.partial-*"))  # the work folder was renamed into place
    keras_model = load_runtime_classifier(artefact, "tensorflow")
    exported_model = load_runtime_classifier(artefact, runtime, batch_size=5)
    assert isinstance(exported_model, KINDS[runtime])
    assert (exported_model.version, exported_model.catalogue, exported_model.input_size) == (
        keras_model.version,
        keras_model.catalogue,
        keras_model.input_size,
    )
    tiles = _tiles()
    ours, theirs = exported_model.predict(tiles), keras_model.predict(tiles)  # 5 + 5 + 2 tiles
    assert ours.shape == theirs.shape == (12, len(keras_model.catalogue)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=SCORE_TOLERANCE)
    assert exported_model.predict(tiles[:0]).shape == (0, len(keras_model.catalogue))


def test_exporting_again_replaces_the_export(exported: Path) -> None:
    (exported / OPENVINO_DIR / "stale.txt").write_text("from an earlier export")
    export_model(exported, "openvino")
    assert sorted(p.name for p in (exported / OPENVINO_DIR).iterdir()) == ["model.bin", "model.xml"]
    load_runtime_classifier(exported, "openvino")


def test_a_model_without_an_export_says_what_to_run(artefact: Path) -> None:
    with pytest.raises(ModelError, match=r"steel-worker export --model .* --runtime openvino"):
        load_runtime_classifier(artefact, "openvino")


@pytest.mark.parametrize("runtime", EXPORTED)
def test_an_export_written_but_not_recorded_is_not_loaded(artefact: Path, master: Path, runtime: str) -> None:
    """A crash between writing the export and recording it in model.json leaves an unrecorded folder."""
    folder = EXPORTS[runtime].folder
    shutil.copytree(master / folder, artefact / folder)
    with pytest.raises(ModelError, match=f"no {runtime} export recorded"):
        load_runtime_classifier(artefact, runtime)


@pytest.mark.parametrize("name", ["openvino/model.bin", "openvino/model.xml", "onnx/model.onnx"])
def test_a_changed_export_file_is_refused(exported: Path, name: str) -> None:
    runtime = "onnxruntime" if name.startswith("onnx/") else "openvino"
    artefact = exported
    path = artefact / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{name}: sha256 .* does not match"):
        load_runtime_classifier(artefact, runtime)


def test_a_missing_export_file_is_named(exported: Path) -> None:
    (exported / OPENVINO_DIR / "model.bin").unlink()
    with pytest.raises(ModelError, match=r"model\.bin is missing"):
        load_runtime_classifier(exported, "openvino")


def test_an_export_of_other_weights_is_refused(exported: Path) -> None:
    meta_path = exported / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["exports"]["openvino"]["weights_version"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"exported from weights 000000000000.*export again"):
        load_runtime_classifier(exported, "openvino")


@pytest.mark.parametrize("files", [None, "x", {"openvino/model.xml": "a"}, {"../model.xml": "a", "b": "c"}])
def test_a_malformed_export_record_is_refused(exported: Path, files: Any) -> None:
    meta_path = exported / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["exports"]["openvino"]["files"] = files
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError):
        load_runtime_classifier(exported, "openvino")


def test_every_runtime_is_a_choice_of_the_setting_and_the_commands() -> None:
    """The CLI and the settings spell the choices out (their `--help` imports no runtime code)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db", "MODEL_PATH": "/m"}
    for runtime in RUNTIMES:
        assert load_settings({**env, "MODEL_RUNTIME": runtime}, {}).model_runtime == runtime
        args = cli.build_parser().parse_args(["predict", "--model", "m", "--runtime", runtime, "x.png"])
        assert args.runtime == runtime
    for runtime in EXPORTS:
        assert (
            cli.build_parser().parse_args(["export", "--model", "m", "--runtime", runtime]).runtime == runtime
        )
    with pytest.raises(ConfigError, match="MODEL_RUNTIME"):
        load_settings({**env, "MODEL_RUNTIME": "onnx"}, {})


def test_an_unknown_runtime_is_refused_with_the_choices(artefact: Path) -> None:
    assert RUNTIMES == ("tensorflow", "openvino", "onnxruntime")
    with pytest.raises(
        ConfigError, match="expected one of tensorflow, openvino, onnxruntime, received 'onnx'"
    ):
        load_runtime_classifier(artefact, "onnx")
    with pytest.raises(ConfigError, match="expected one of openvino, onnxruntime, received 'tensorflow'"):
        export_model(artefact, "tensorflow")


def test_without_openvino_installed_the_runtime_names_the_extra(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ConfigError, match=r"pip install 'steel-worker\[openvino\]'"):
        load_runtime_classifier(exported, "openvino")
    with pytest.raises(ConfigError, match="openvino package is not installed"):
        export_model(exported, "openvino")
    with pytest.raises(ConfigError, match=r"tf2onnx package is not installed.*steel-worker\[onnx\]"):
        export_model(exported, "onnxruntime")


def test_export_and_predict_through_the_cli(
    artefact: Path, master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the CLI exports for OpenVINO (seconds); the ONNX export (tf2onnx, ~15 s) runs in `master`
    shutil.copytree(master / "onnx", artefact / "onnx")
    meta = json.loads((artefact / "model.json").read_text())
    meta["exports"] = {
        "onnxruntime": json.loads((master / "model.json").read_text())["exports"]["onnxruntime"]
    }
    (artefact / "model.json").write_text(json.dumps(meta))
    assert cli.main(["export", "--model", str(artefact), "--runtime", "openvino"]) == 0
    out = capsys.readouterr().out
    assert "for openvino" in out and "largest score difference from Keras on 64 random tiles" in out
    difference = float(out.rsplit(": ", 1)[1])
    assert 0 <= difference < SCORE_TOLERANCE
    assert set(json.loads((artefact / "model.json").read_text())["exports"]) == set(EXPORTED)
    import cv2  # noqa: PLC0415

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), grey_image(256, 600, seed=7))
    documents = {}
    for runtime in RUNTIMES:
        argv = ["predict", "--model", str(artefact), "--runtime", runtime, "--json", str(image)]
        assert cli.main(argv) == 0
        documents[runtime] = json.loads(capsys.readouterr().out)
    keras_tiles = documents["tensorflow"]["tiles"]
    for runtime in EXPORTED:
        exported_tiles = documents[runtime]["tiles"]
        assert [(t["x"], t["y"]) for t in keras_tiles] == [(t["x"], t["y"]) for t in exported_tiles]
        for ours, theirs in zip(exported_tiles, keras_tiles, strict=True):
            for name, score in theirs["probabilities"].items():
                assert abs(ours["probabilities"][name] - score) < SCORE_TOLERANCE


def test_export_of_a_missing_model_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--model", str(tmp_path / "none"), "--runtime", "openvino"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", EXPORTED)
def test_the_worker_runs_on_the_export(
    broker, make_topic, database_url: str, exported: Path, runtime: str
) -> None:
    """MODEL_RUNTIME=openvino|onnxruntime: the service loads the export itself and stores what it
    predicts."""
    topics = make_topics(make_topic, partitions=1)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, exported, topics, model_runtime=runtime
    )
    assert settings.model_runtime == runtime
    messages = frame_messages(6, size=(256, 600))
    exported_model = load_runtime_classifier(exported, runtime)
    keras_model = load_runtime_classifier(exported, "tensorflow")
    expected = []
    limits = d.DecodeLimits(max_frame_bytes=300_000, max_frame_pixels=2_000_000)
    for frame_id, (_, value, headers) in messages.items():
        frame = d.decode_message(inbound(value, headers), limits)
        assert not isinstance(frame, d.Rejected)
        predicted = Inferencer(exported_model).predict(frame.image)
        keras_scores = Inferencer(keras_model).forward(predicted.tiles.pixels)
        np.testing.assert_allclose(predicted.scores, keras_scores, atol=SCORE_TOLERANCE)
        for tile, class_index in zip(*np.nonzero(predicted.decisions), strict=True):
            expected.append((frame_id, int(tile), exported_model.catalogue.names[class_index]))
    with (
        structlog.testing.capture_logs() as logs,
        running_worker(settings, None),  # type: ignore[arg-type]  (None: the service loads MODEL_PATH)
    ):
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == 6, 60, "6 ledger rows")
    (line,) = [e for e in logs if e["event"] == "worker.model"]
    assert (line["runtime"], line["version"]) == (runtime, keras_model.version)
    assert [(f, t, c) for f, t, c, _, _ in detection_rows(database_url)] == sorted(expected)
