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
    AUTO,
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
    for runtime in (*RUNTIMES, AUTO):
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
    assert RUNTIMES == ("tensorflow", "openvino", "openvino-int8", "onnxruntime", "onnxruntime-int8")
    with pytest.raises(
        ConfigError,
        match="expected one of tensorflow, openvino, openvino-int8, onnxruntime, onnxruntime-int8, auto, "
        "received 'onnx'",
    ):
        load_runtime_classifier(artefact, "onnx")
    with pytest.raises(ConfigError, match=r"expected one of openvino, .*, received 'tensorflow'"):
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
    assert (
        "for openvino" in out and "no test split to compare on; largest score difference on 64 random" in out
    )
    difference = float(out.rsplit(": ", 1)[1])
    assert 0 <= difference < SCORE_TOLERANCE
    assert set(json.loads((artefact / "model.json").read_text())["exports"]) == set(EXPORTED)
    import cv2  # noqa: PLC0415

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), grey_image(256, 600, seed=7))
    documents = {}
    for runtime in ("tensorflow", *EXPORTED):
        argv = ["predict", "--model", str(artefact), "--runtime", runtime, "--json", str(image)]
        assert cli.main(argv) == 0
        documents[runtime] = json.loads(capsys.readouterr().out)
        assert documents[runtime]["runtime"] == runtime
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
    assert (line["runtime"], line["runtime_setting"], line["version"]) == (
        runtime,
        runtime,
        keras_model.version,
    )
    assert "runtime_skipped" not in line
    assert [(f, t, c) for f, t, c, _, _ in detection_rows(database_url)] == sorted(expected)


# ---------------------------------------------------------------------------------------------
# INT8: calibrated on the validation split, measured against Keras on the test split, enforced
# ---------------------------------------------------------------------------------------------

INT8 = ("openvino-int8", "onnxruntime-int8")
TILE_SIDE = 32


def _labelled_tiles(root: Path, n: int) -> Path:
    """A tile set of `n` real-looking grey tiles with every label combination of the catalogue."""
    from worker.core.catalogue import load_catalogue  # noqa: PLC0415
    from worker.core.tileset import TileSetWriter  # noqa: PLC0415

    names = load_catalogue().names
    with TileSetWriter(root, load_catalogue()) as writer:
        for i in range(n):
            positives = [name for k, name in enumerate(names) if (i >> k) & 1]
            writer.add(grey_image(TILE_SIDE, TILE_SIDE, seed=900 + i), f"f{i:03d}.png", 0, 0, positives)
    return root


def _with_split(model: Path, data: Path) -> None:
    from worker.core.tileset import read_tileset  # noqa: PLC0415
    from worker.model.split import Split, save_split  # noqa: PLC0415

    tiles = read_tileset(data).tiles
    train = tuple(t for i, t in enumerate(tiles) if i % 5 > 1)
    save_split(Split(str(data.resolve()), 0, train=train, validation=tiles[1::5], test=tiles[::5]), model)


def _set_thresholds(model: Path, value: float) -> None:
    meta = json.loads((model / "model.json").read_text())
    meta["thresholds"] = dict.fromkeys(meta["thresholds"], value)
    (model / "model.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def int8_master(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The artefact with a split of 40 tiles (validation and test 8 each) and thresholds at 0 (every
    tile is a detection for both models, so the agreement is inside the limits whatever INT8 does
    to the scores), exported to OpenVINO INT8 by `export_model` and to ONNX Runtime INT8 by the
    CLI (its output kept). Read-only: tests copy it."""
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    root = tmp_path_factory.mktemp("int8")
    data = _labelled_tiles(root / "tiles", 40)
    model = root / "model"
    shutil.copytree(model_dir, model)
    _with_split(model, data)
    _set_thresholds(model, 0.0)
    export_model(model, "openvino-int8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["export", "--model", str(model), "--runtime", "onnxruntime", "--int8"])
    return {"model": model, "data": data, "cli_code": code, "cli_out": out.getvalue()}


@pytest.fixture
def int8_exported(int8_master: dict[str, Any], tmp_path: Path) -> Path:
    copy = tmp_path / "int8"
    shutil.copytree(int8_master["model"], copy)
    return copy


def _rewrite_report(model: Path, runtime: str, change: Any) -> None:
    """Change `runtime`'s agreement.json and record its new hash, as if export had measured that."""
    from worker.model.artefact import sha256_file  # noqa: PLC0415

    name = f"{EXPORTS[runtime].folder}/agreement.json"
    report = json.loads((model / name).read_text())
    change(report)
    (model / name).write_text(json.dumps(report))
    meta = json.loads((model / "model.json").read_text())
    meta["exports"][runtime]["files"][name] = sha256_file(model / name)
    (model / "model.json").write_text(json.dumps(meta))


def _disagreeing(report: dict[str, Any]) -> None:
    report["classes"]["scratches"]["flip_share"] = 0.125
    report["classes"]["scratches"]["f1_export"] = report["classes"]["scratches"]["f1_reference"] - 0.2


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
@pytest.mark.parametrize("runtime", INT8)
def test_an_int8_export_is_calibrated_measured_and_recorded(
    int8_master: dict[str, Any], runtime: str
) -> None:
    from worker.model.quantize import part_inputs  # noqa: PLC0415

    model = int8_master["model"]
    meta = json.loads((model / "model.json").read_text())
    record = meta["exports"][runtime]
    folder = EXPORTS[runtime].folder
    assert record["precision"] == "int8" and record["weights_version"] == meta["version"]
    assert sorted(record["files"]) == sorted((*EXPORTS[runtime].paths, f"{folder}/agreement.json"))
    assert record["calibration"] == {
        "tile_set": str(int8_master["data"].resolve()),
        "part": "validation",
        "tiles": 8,
    }
    assert sorted(p.name for p in (model / folder).iterdir()) == sorted(
        [*EXPORTS[runtime].files, "agreement.json"]
    )  # neither the fp32 intermediate nor ONNX's prepared model is left
    int8_model = load_runtime_classifier(model, runtime, batch_size=3)
    assert int8_model.runtime == runtime and isinstance(int8_model, KINDS[runtime.removesuffix("-int8")])
    keras_model = load_runtime_classifier(model, "tensorflow")
    judged = part_inputs(model, keras_model.catalogue.names, keras_model.input_size, "test")
    int8_scores, keras_scores = judged.scores(int8_model, keras_model)
    assert np.array_equal(int8_scores, int8_model.predict_inputs(judged.inputs()))  # batches = all at once
    chunks = list(judged.batches(3))
    assert [len(c) for c in chunks] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), judged.inputs())
    difference = np.abs(int8_scores - keras_scores)
    report = json.loads((model / folder / "agreement.json").read_text())
    assert report["tiles"] == 8 and report["source"]["part"] == "test"
    assert report["max_abs_difference"] == pytest.approx(float(difference.max()), abs=1e-6)
    assert record["agreement"]["max_abs_difference"] == report["max_abs_difference"]
    for k, name in enumerate(keras_model.catalogue.names):
        figures = report["classes"][name]
        assert figures["mean_abs_difference"] == pytest.approx(float(difference[:, k].mean()), abs=1e-6)
        assert figures["flips"] == 0 and figures["f1_export"] == figures["f1_reference"]  # thresholds 0
    assert 0 < report["max_abs_difference"] < 0.5  # quantised: near Keras, not equal


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_the_cli_prints_the_agreement_per_class(int8_master: dict[str, Any]) -> None:
    out = int8_master["cli_out"]
    assert int8_master["cli_code"] == 0
    assert "for onnxruntime-int8" in out and "int8" in out
    assert "agreement with Keras on 8 tiles (test of" in out and "0 tiles with a decision flipped" in out
    assert "F1 Keras" in out and "scratches" in out
    assert "inside the agreement limits: MODEL_RUNTIME=onnxruntime-int8 will load it" in out


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
@pytest.mark.parametrize("runtime", INT8)
def test_an_int8_export_outside_the_limits_is_refused_at_load(int8_exported: Path, runtime: str) -> None:
    from worker.model.agreement import AgreementLimits  # noqa: PLC0415

    _rewrite_report(int8_exported, runtime, _disagreeing)
    with pytest.raises(
        ModelError,
        match=r"beyond the limits — scratches: F1 .* \(drop 0\.2000 > 0\.01\); "
        r"scratches: decisions flipped on 12\.50% of 8 tiles",
    ):
        load_runtime_classifier(int8_exported, runtime)
    loose = AgreementLimits(max_f1_drop=0.25, max_flip_share=0.2)
    assert load_runtime_classifier(int8_exported, runtime, limits=loose).runtime == runtime


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_the_cli_exits_1_when_the_int8_export_is_outside_the_limits(
    int8_exported: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export is written and recorded (a person may loosen the limits), but the command says
    that the worker will refuse it."""
    from worker.model import runtimes  # noqa: PLC0415

    measure = runtimes.measure_agreement

    def disagreeing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = measure(*args, **kwargs)
        _disagreeing(report)
        return report

    monkeypatch.setattr(runtimes, "measure_agreement", disagreeing)
    assert cli.main(["export", "--model", str(int8_exported), "--runtime", "openvino-int8"]) == 1
    captured = capsys.readouterr()
    assert "refused at load" in captured.err and "beyond the limits" in captured.err
    assert "agreement with Keras on 8 tiles" in captured.out


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_an_int8_export_is_refused_after_the_thresholds_change(int8_exported: Path) -> None:
    _set_thresholds(int8_exported, 0.5)  # the weights, and so the export's record, stay valid
    with pytest.raises(
        ModelError, match=r"other thresholds than the model's .* run `steel-worker export` again"
    ):
        load_runtime_classifier(int8_exported, "openvino-int8")


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_an_int8_export_without_its_agreement_is_refused(int8_exported: Path) -> None:
    meta = json.loads((int8_exported / "model.json").read_text())
    del meta["exports"]["openvino-int8"]["files"]["openvino-int8/agreement.json"]
    (int8_exported / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="INT8 export without its agreement report"):
        load_runtime_classifier(int8_exported, "openvino-int8")


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_a_changed_agreement_report_is_refused(int8_exported: Path) -> None:
    path = int8_exported / "onnx-int8" / "agreement.json"
    report = json.loads(path.read_text())
    report["classes"]["holes"]["flips"] = 0  # even an edit that changes nothing that is checked
    path.write_text(json.dumps(report, indent=1))
    with pytest.raises(ModelError, match=r"agreement\.json: sha256 .* does not match"):
        load_runtime_classifier(int8_exported, "onnxruntime-int8")


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_an_int8_export_needs_a_test_split_or_a_tile_set(
    artefact: Path, int8_master: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused in seconds, before any conversion; with --calibration and --agreement it is made."""
    from worker.core.errors import DatasetError  # noqa: PLC0415

    with pytest.raises(DatasetError, match=r"has no split.json .* pass --agreement TILESET"):
        export_model(artefact, "openvino-int8")
    assert not list(artefact.glob(".*partial*")) and not (artefact / "openvino-int8").exists()
    assert cli.main(["export", "--model", str(artefact), "--runtime", "openvino", "--calibration", "x"]) == 2
    assert "--calibration: only with --int8" in capsys.readouterr().err
    data = int8_master["data"]
    record = export_model(artefact, "openvino-int8", calibration_data=data, agreement_data=data)
    assert record["calibration"] == {"tile_set": str(data), "part": "all tiles", "tiles": 40}
    assert record["agreement"]["tiles"] == 40


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_auto_takes_the_first_runtime_that_loads_and_says_why_it_passed_the_others(
    int8_exported: Path, artefact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.model import runtimes  # noqa: PLC0415

    assert runtimes.AUTO_ORDER == (
        "openvino-int8",
        "onnxruntime-int8",
        "openvino",
        "onnxruntime",
        "tensorflow",
    )
    chosen = load_runtime_classifier(int8_exported, AUTO)
    assert (chosen.runtime, chosen.auto_skipped) == ("openvino-int8", {})

    _rewrite_report(int8_exported, "openvino-int8", _disagreeing)
    chosen = load_runtime_classifier(int8_exported, AUTO)
    assert chosen.runtime == "onnxruntime-int8" and isinstance(chosen, OnnxRuntimeClassifier)
    assert list(chosen.auto_skipped or {}) == ["openvino-int8"]
    assert "beyond the limits" in (chosen.auto_skipped or {})["openvino-int8"]

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    chosen = load_runtime_classifier(int8_exported, AUTO)
    skipped = chosen.auto_skipped or {}
    assert chosen.runtime == "tensorflow" and list(skipped) == list(runtimes.AUTO_ORDER[:-1])
    assert "pip install 'steel-worker[onnx]'" in skipped["onnxruntime-int8"]
    assert "no openvino export recorded" in skipped["openvino"]

    monkeypatch.setattr(runtimes, "gpu_present", lambda: True)  # on a GPU: Keras, nothing tried
    chosen = load_runtime_classifier(int8_exported, AUTO)
    assert (chosen.runtime, chosen.auto_skipped) == ("tensorflow", {})


def test_auto_on_a_model_without_exports_is_keras(artefact: Path) -> None:
    chosen = load_runtime_classifier(artefact, AUTO)
    assert chosen.runtime == "tensorflow" and len(chosen.auto_skipped or {}) == 4


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_a_damaged_model_is_not_hidden_by_auto(int8_exported: Path) -> None:
    """auto passes over exports, never the weights: damaged weights stop the start."""
    weights = int8_exported / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-10])
    _rewrite_report(int8_exported, "openvino-int8", _disagreeing)
    meta = json.loads((int8_exported / "model.json").read_text())
    del meta["exports"]["onnxruntime-int8"]
    (int8_exported / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"sha256 .* does not match the version"):
        load_runtime_classifier(int8_exported, AUTO)


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("MODEL_AGREEMENT_MAX_F1_DROP", "0.02", "model_agreement_max_f1_drop", 0.02),
        ("MODEL_AGREEMENT_MAX_FLIPS", "0", "model_agreement_max_flips", 0.0),
    ],
)
def test_the_agreement_limits_are_settings(variable: str, value: str, field: str, expected: float) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db", "MODEL_PATH": "/m"}
    defaults = load_settings(env, {})
    assert (defaults.model_agreement_max_f1_drop, defaults.model_agreement_max_flips) == (0.01, 0.005)
    assert getattr(load_settings({**env, variable: value}, {}), field) == expected
    for bad in ("-0.1", "1.5", "nan", "x"):
        with pytest.raises(ConfigError, match=variable):
            load_settings({**env, variable: bad}, {})


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
def test_the_worker_on_auto_runs_the_int8_export_and_says_so(
    broker, make_topic, database_url: str, int8_exported: Path
) -> None:
    topics = make_topics(make_topic, partitions=1)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, int8_exported, topics, model_runtime=AUTO
    )
    messages = frame_messages(3, size=(256, 600))
    with (
        structlog.testing.capture_logs() as logs,
        running_worker(settings, None),  # type: ignore[arg-type]  (None: the service loads MODEL_PATH)
    ):
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == 3, 60, "3 ledger rows")
    (line,) = [e for e in logs if e["event"] == "worker.model"]
    assert (line["runtime"], line["runtime_setting"], line["runtime_skipped"]) == ("openvino-int8", AUTO, {})
    assert len(detection_rows(database_url)) == 3 * 3 * 3  # thresholds 0: every tile has every class


@pytest.mark.slow  # the INT8 exports (NNCF, ONNX Runtime) take about a minute to make (`make test-slow`)
@pytest.mark.slow  # two exports (20 s); the demo's own end-to-end test checks its runtime line too
def test_the_demo_exports_for_auto_and_says_what_the_worker_runs(
    int8_master: dict[str, Any], tmp_path: Path
) -> None:
    """worker.demo.model.export_for_auto on a model whose split is at hand, then the demo's line."""
    from worker.demo.model import export_for_auto  # noqa: PLC0415
    from worker.demo.run import runtime_line  # noqa: PLC0415

    model = tmp_path / "demo-model"
    shutil.copytree(int8_master["model"], model)
    meta = json.loads((model / "model.json").read_text())
    meta.pop("exports")
    (model / "model.json").write_text(json.dumps(meta))
    assert runtime_line(model, AUTO).startswith(
        "the worker runs the model on tensorflow (MODEL_RUNTIME=auto; passed over: openvino-int8, "
        "onnxruntime-int8, openvino, onnxruntime"
    )
    said: list[str] = []
    export_for_auto(model, said.append)
    assert [line.split(" export", 1)[0] for line in said] == ["openvino-int8", "openvino"]
    assert "against Keras on the 8 test tiles" in said[0] and "flipped on 0.0% of tiles" in said[0]
    assert runtime_line(model, AUTO) == "the worker runs the model on openvino-int8 (MODEL_RUNTIME=auto)"
    assert runtime_line(model, "onnxruntime") == "the worker runs the model on onnxruntime (MODEL_RUNTIME)"


def test_the_demo_without_openvino_says_so(artefact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util  # noqa: PLC0415

    from worker.demo.model import export_for_auto  # noqa: PLC0415

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    said: list[str] = []
    export_for_auto(artefact, said.append)
    assert said == [
        "OpenVINO is not installed (pip install 'steel-worker[openvino]'): the worker runs the model on Keras"
    ]
    assert not (artefact / "openvino").exists()


@pytest.mark.slow  # an export (8 s)
def test_the_demo_model_without_a_split_is_not_exported_in_int8(artefact: Path) -> None:
    from worker.demo.model import export_for_auto  # noqa: PLC0415

    said: list[str] = []
    export_for_auto(artefact, said.append)
    assert said[0].startswith("openvino-int8 export not made:") and "no split.json" in said[0]
    assert said[1].startswith("openvino export in") and said[1].endswith(
        "no test split to compare it with Keras on"
    )


def test_onnx_runtime_sessions_get_the_chosen_providers(exported: Path) -> None:
    """ONNX_PROVIDERS reaches the session; a GPU provider that is not offered is refused."""
    import onnxruntime  # noqa: PLC0415

    from worker.model.acceleration import Acceleration  # noqa: PLC0415

    cpu_only = Acceleration(onnx_providers="cpu")
    session = load_runtime_classifier(exported, "onnxruntime", acceleration=cpu_only).model
    assert session.get_providers() == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ConfigError, match="CUDAExecutionProvider not offered"):
            load_runtime_classifier(exported, "onnxruntime", acceleration=Acceleration(onnx_providers="cuda"))
