"""Inference runtimes: the OpenVINO export of a real artefact, its checks at load, the CLI, the worker.

The artefact is the worker tests' untrained ResNet50 (input 32), copied per test so exports and
tampering stay local. OpenVINO is in the test extras; these tests need it installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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
    OPENVINO_DIR,
    RUNTIMES,
    OpenVinoClassifier,
    export_openvino,
    load_runtime_classifier,
)
from worker.streaming import decode as d

pytest.importorskip("openvino", reason="the openvino extra is not installed")

#: fp32 against fp32 (OpenVINO is held to f32 at load): only the order of the sums differs.
SCORE_TOLERANCE = 2e-3


@pytest.fixture
def artefact(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


@pytest.fixture
def exported(artefact: Path) -> Path:
    export_openvino(artefact)
    return artefact


def _tiles(n: int = 12, size: int = 256) -> np.ndarray:
    return np.stack([grey_image(size, size, seed=500 + i) for i in range(n)])


def test_the_export_scores_like_keras_and_is_recorded_with_its_hashes(artefact: Path) -> None:
    record = export_openvino(artefact)
    meta = json.loads((artefact / "model.json").read_text())
    assert meta["exports"]["openvino"] == record
    assert sorted(record["files"]) == [f"{OPENVINO_DIR}/model.bin", f"{OPENVINO_DIR}/model.xml"]
    assert record["weights_version"] == meta["version"] and record["precision"] == "fp32"
    assert not list(artefact.glob(".openvino.partial-*"))  # the work folder was renamed into place
    keras_model = load_runtime_classifier(artefact, "tensorflow")
    openvino_model = load_runtime_classifier(artefact, "openvino", batch_size=5)
    assert isinstance(openvino_model, OpenVinoClassifier)
    assert (openvino_model.version, openvino_model.catalogue, openvino_model.input_size) == (
        keras_model.version,
        keras_model.catalogue,
        keras_model.input_size,
    )
    tiles = _tiles()
    ours, theirs = openvino_model.predict(tiles), keras_model.predict(tiles)  # 5 + 5 + 2 tiles
    assert ours.shape == theirs.shape == (12, len(keras_model.catalogue)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=SCORE_TOLERANCE)
    assert openvino_model.predict(tiles[:0]).shape == (0, len(keras_model.catalogue))


def test_exporting_again_replaces_the_export(exported: Path) -> None:
    (exported / OPENVINO_DIR / "stale.txt").write_text("from an earlier export")
    export_openvino(exported)
    assert sorted(p.name for p in (exported / OPENVINO_DIR).iterdir()) == ["model.bin", "model.xml"]
    load_runtime_classifier(exported, "openvino")


def test_a_model_without_an_export_says_what_to_run(artefact: Path) -> None:
    with pytest.raises(ModelError, match=r"steel-worker export --model .* --runtime openvino"):
        load_runtime_classifier(artefact, "openvino")


def test_an_export_written_but_not_recorded_is_not_loaded(artefact: Path) -> None:
    """A crash between writing the IR and recording it in model.json leaves an unrecorded folder."""
    shutil.copytree(_export_of(artefact), artefact / OPENVINO_DIR)
    with pytest.raises(ModelError, match="no OpenVINO export recorded"):
        load_runtime_classifier(artefact, "openvino")


def _export_of(artefact: Path) -> Path:
    other = artefact.parent / "other"
    shutil.copytree(artefact, other)
    export_openvino(other)
    return other / OPENVINO_DIR


@pytest.mark.parametrize("name", ["model.bin", "model.xml"])
def test_a_changed_export_file_is_refused(exported: Path, name: str) -> None:
    path = exported / OPENVINO_DIR / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{name}: sha256 .* does not match"):
        load_runtime_classifier(exported, "openvino")


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


def test_an_unknown_runtime_is_refused_with_the_choices(artefact: Path) -> None:
    assert RUNTIMES == ("tensorflow", "openvino")
    with pytest.raises(ConfigError, match="expected one of tensorflow, openvino, received 'onnx'"):
        load_runtime_classifier(artefact, "onnx")


def test_without_openvino_installed_the_runtime_names_the_extra(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'steel-worker\[openvino\]'"):
        load_runtime_classifier(exported, "openvino")
    with pytest.raises(ConfigError, match="openvino package is not installed"):
        export_openvino(exported)


def test_export_and_predict_through_the_cli(
    artefact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["export", "--model", str(artefact), "--runtime", "openvino"]) == 0
    out = capsys.readouterr().out
    assert "for openvino" in out and "largest score difference from Keras on 64 random tiles" in out
    difference = float(out.rsplit(": ", 1)[1])
    assert 0 <= difference < SCORE_TOLERANCE
    import cv2  # noqa: PLC0415

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), grey_image(256, 600, seed=7))
    documents = {}
    for runtime in RUNTIMES:
        argv = ["predict", "--model", str(artefact), "--runtime", runtime, "--json", str(image)]
        assert cli.main(argv) == 0
        documents[runtime] = json.loads(capsys.readouterr().out)
    keras_tiles, openvino_tiles = documents["tensorflow"]["tiles"], documents["openvino"]["tiles"]
    assert [(t["x"], t["y"]) for t in keras_tiles] == [(t["x"], t["y"]) for t in openvino_tiles]
    for ours, theirs in zip(openvino_tiles, keras_tiles, strict=True):
        for name, score in theirs["probabilities"].items():
            assert abs(ours["probabilities"][name] - score) < SCORE_TOLERANCE


def test_export_of_a_missing_model_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--model", str(tmp_path / "none"), "--runtime", "openvino"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_worker_runs_on_the_openvino_export(
    broker, make_topic, database_url: str, exported: Path
) -> None:
    """MODEL_RUNTIME=openvino: the service loads the export itself and stores what it predicts."""
    topics = make_topics(make_topic, partitions=1)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, exported, topics, model_runtime="openvino"
    )
    assert settings.model_runtime == "openvino"
    messages = frame_messages(6, size=(256, 600))
    openvino_model = load_runtime_classifier(exported, "openvino")
    keras_model = load_runtime_classifier(exported, "tensorflow")
    expected = []
    limits = d.DecodeLimits(max_frame_bytes=300_000, max_frame_pixels=2_000_000)
    for frame_id, (_, value, headers) in messages.items():
        frame = d.decode_message(inbound(value, headers), limits)
        assert not isinstance(frame, d.Rejected)
        predicted = Inferencer(openvino_model).predict(frame.image)
        keras_scores = Inferencer(keras_model).forward(predicted.tiles.pixels)
        np.testing.assert_allclose(predicted.scores, keras_scores, atol=SCORE_TOLERANCE)
        for tile, class_index in zip(*np.nonzero(predicted.decisions), strict=True):
            expected.append((frame_id, int(tile), openvino_model.catalogue.names[class_index]))
    with running_worker(settings, None):  # type: ignore[arg-type]  (None: the service loads MODEL_PATH)
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == 6, 60, "6 ledger rows")
    assert [(f, t, c) for f, t, c, _, _ in detection_rows(database_url)] == sorted(expected)
