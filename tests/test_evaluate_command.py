"""`steel-worker evaluate`: exact numbers from a crafted scores file, the report files, every bad input.

The CLI runs through `worker.cli.main` with only the evaluate command registered, so these tests
depend on nothing but the evaluation package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker import cli
from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.tileset import TileSetWriter, read_tile, read_tileset
from worker.evaluation.command import read_scores_csv, write_scores_csv
from worker.evaluation.report import evaluate_scores
from worker.model.artefact import create_untrained_artefact, load_classifier
from worker.model.split import Split, load_split, save_split

# The six images of tests/test_metrics.py, with extra columns and the score columns out of order.
CRAFTED = """\
tile,score_scratches,label_holes,score_holes,label_scratches,note
a.png,0.1,1,0.9,0,x
b.png,0.8,1,0.4,1,
c.png,0.2,0,0.3,0,
d.png,0.55,0,0.6,1,y
e.png,0.45,1,0.7,0,
f.png,0.05,0,0.1,0,
"""
FIGURES = ("roc.png", "confusion_matrices.png", "threshold_sweep.png")


@pytest.fixture(autouse=True)
def _only_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("worker.evaluation.command",))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _evaluate(*argv: str) -> int:
    return cli.main(["evaluate", *argv])


def test_crafted_scores_give_exact_report(tmp_path: Path) -> None:
    """holes at 0.4: tp 3 (.9 .4 .7), fp 1 (.6), tn 2, fn 0 → P 3/4, R 1, F1 6/7, acc 5/6, AUC 8/9;
    scratches at the default 0.5: perfect; binary accuracy (1+1+1+.5+1+1)/6 = 11/12."""
    scores = _write(tmp_path / "scores.csv", CRAFTED)
    out = tmp_path / "report"
    assert _evaluate("--scores", str(scores), "--thresholds", "holes=0.4", "--out", str(out)) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 6
    assert str(scores) in report["source"]
    assert list(report["classes"]) == ["holes", "scratches"]
    holes, scratches = report["classes"]["holes"], report["classes"]["scratches"]
    assert {k: holes[k] for k in ("tp", "tn", "fp", "fn", "threshold")} == {
        "tp": 3,
        "tn": 2,
        "fp": 1,
        "fn": 0,
        "threshold": 0.4,
    }
    assert holes["precision"] == pytest.approx(3 / 4)
    assert holes["recall"] == 1.0
    assert holes["f1"] == pytest.approx(6 / 7)
    assert holes["accuracy"] == pytest.approx(5 / 6)
    assert holes["auc"] == pytest.approx(8 / 9)
    assert scratches == {
        "tp": 2,
        "tn": 4,
        "fp": 0,
        "fn": 0,
        "recall": 1.0,
        "precision": 1.0,
        "accuracy": 1.0,
        "f1": 1.0,
        "auc": 1.0,
        "threshold": 0.5,
    }
    assert report["binary_accuracy"] == pytest.approx(11 / 12)
    # holes at the fixed 0.2: .9 .4 .3 .6 .7 positive → tp 3, fp 2, tn 1, fn 0
    at_02 = report["fixed_thresholds"]["0.2"]["classes"]["holes"]
    assert (at_02["tp"], at_02["fp"], at_02["tn"], at_02["fn"]) == (3, 2, 1, 0)

    for name in FIGURES:
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200, name
        assert report["figures"][Path(name).stem] == name
    assert "training_curves" not in report["figures"]  # no model, no history
    markdown = (out / "report.md").read_text()
    assert "| holes | 3 | 0.40 | 3 | 1 | 2 | 0 | 0.7500 | 1.0000 | 0.8571 | 0.8333 | 0.8889 |" in markdown
    assert "0.9167" in markdown  # binary accuracy
    for name in FIGURES:
        assert f"]({name})" in markdown
    sweep_rows = (out / "sweep.csv").read_text().splitlines()
    assert sweep_rows[0] == "threshold,class,tp,fp,tn,fn,precision,recall,f1,errors"
    assert len(sweep_rows) == 1 + 21 * 2


def test_default_threshold_is_half(tmp_path: Path) -> None:
    """Without --thresholds every class is judged at 0.5: holes tp 2, fn 1, fp 1; binary accuracy 5/6."""
    scores = _write(tmp_path / "scores.csv", CRAFTED)
    assert _evaluate("--scores", str(scores), "--out", str(tmp_path / "r")) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    holes = report["classes"]["holes"]
    assert (holes["tp"], holes["fn"], holes["fp"], holes["threshold"]) == (2, 1, 1, 0.5)
    assert report["binary_accuracy"] == pytest.approx(5 / 6)


def test_class_without_both_label_values_reports_undefined_auc(tmp_path: Path) -> None:
    """A class never present in the file: AUC null in JSON, 'undefined' in the markdown, no crash."""
    scores = _write(tmp_path / "s.csv", "label_holes,score_holes\n0,0.2\n0,0.7\n0,0.1\n")
    assert _evaluate("--scores", str(scores), "--out", str(tmp_path / "r")) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["classes"]["holes"]["auc"] is None
    assert report["classes"]["holes"]["fp"] == 1
    assert "undefined" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty, expected a header"),
        ("label_holes,score_holes\n", "no rows after the header"),
        ("tile,a,b\nx.png,1,0.5\n", "expected columns label_<class> and score_<class>"),
        ("label_holes,score_holes,label_rolling\n1,0.5,0\n", r"missing columns \['score_rolling'\]"),
        ("label_holes,score_holes,score_rolling\n1,0.5,0.1\n", r"missing columns \['label_rolling'\]"),
        ("label_holes,score_holes\n1,0.5\n2,0.5\n", r":3: label_holes must be 0 or 1, received '2'"),
        ("label_holes,score_holes\nyes,0.5\n", r":2: label_holes must be 0 or 1, received 'yes'"),
        ("label_holes,score_holes\n1,1.5\n", r":2: score_holes must be a number in \[0, 1\], received '1.5'"),
        ("label_holes,score_holes\n1,-0.1\n", r"score_holes must be a number in \[0, 1\], received '-0.1'"),
        ("label_holes,score_holes\n1,nan\n", r"score_holes must be a number in \[0, 1\], received 'nan'"),
        ("label_holes,score_holes\n1,high\n", r"score_holes must be a number in \[0, 1\], received 'high'"),
        ("label_holes,score_holes\n1,0.5,7\n", ":2: expected 2 columns, received 3"),
        ("label_holes,score_holes,label_holes\n1,0.5,1\n", r"duplicate columns \['label_holes'\]"),
    ],
)
def test_bad_scores_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Each malformed file exits with status 2 and a message naming the file, line and column."""
    scores = _write(tmp_path / "bad.csv", content)
    assert _evaluate("--scores", str(scores), "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "steel-worker evaluate: error: scores file" in err and str(scores) in err
    assert re.search(message, err), err
    assert not (tmp_path / "r" / "report.json").exists()


def test_missing_scores_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _evaluate("--scores", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r")) == 2
    assert "nope.csv: not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ("rolling=0.3", "unknown class 'rolling'; expected one of ['holes', 'scratches']"),
        ("holes=1.5", "holes: expected a number in [0, 1], received '1.5'"),
        ("holes=low", "holes: expected a number in [0, 1], received 'low'"),
        ("holes:0.3", "expected NAME=VALUE items separated by commas, received 'holes:0.3'"),
        ("holes=0.3,holes=0.4", "class 'holes' is given twice"),
    ],
)
def test_bad_thresholds_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], thresholds: str, message: str
) -> None:
    scores = _write(tmp_path / "scores.csv", CRAFTED)
    assert _evaluate("--scores", str(scores), "--thresholds", thresholds, "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert f"--thresholds: {message}" in err


def test_data_is_refused_with_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = _write(tmp_path / "scores.csv", CRAFTED)
    assert _evaluate("--scores", str(scores), "--data", str(tmp_path), "--out", str(tmp_path / "r")) == 2
    assert "--data: only with --model" in capsys.readouterr().err


def test_scores_and_model_are_exclusive(tmp_path: Path) -> None:
    """argparse refuses both sources at once (usage error, exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        _evaluate("--scores", "a.csv", "--model", "m", "--out", str(tmp_path))
    assert exc.value.code == 2


def test_scores_csv_round_trip_is_exact(tmp_path: Path) -> None:
    """write_scores_csv then read_scores_csv returns the same float32 scores bit for bit, so
    `evaluate --scores REPORT/scores.csv` re-judges a model's run without drift."""
    rng = np.random.default_rng(3)
    scores = rng.random((20, 3)).astype(np.float32)
    labels = (rng.random((20, 3)) < 0.3).astype(np.uint8)
    tiles = tuple(f"tiles/t{i}.png" for i in range(20))
    write_scores_csv(tmp_path / "scores.csv", tiles, ("a", "b", "c"), labels, scores)
    table = read_scores_csv(tmp_path / "scores.csv")
    assert table.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(table.labels, labels)
    np.testing.assert_array_equal(table.scores, scores.astype(float))


def test_history_adds_training_curves(tmp_path: Path) -> None:
    """A Keras CSVLogger history gives training_curves.png and its link; extra keys reach report.json."""
    history = _write(
        tmp_path / "history.csv",
        "epoch,auc,learning_rate,loss,val_auc,val_loss\n"
        "0,0.61,0.001,0.9,0.58,1.0\n1,0.70,0.001,0.6,0.66,0.8\n2,0.78,0.00075,0.4,0.71,0.7\n",
    )
    table = read_scores_csv(_write(tmp_path / "scores.csv", CRAFTED))
    report = evaluate_scores(
        table.labels,
        table.scores,
        table.class_names,
        0.5,
        tmp_path / "r",
        history_csv=history,
        extra={"model_version": "abc123"},
    )
    assert report["figures"]["training_curves"] == "training_curves.png"
    assert cv2.imread(str(tmp_path / "r" / "training_curves.png")) is not None
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["model_version"] == "abc123"
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "](training_curves.png)" in markdown and "abc123" in markdown
    with pytest.raises(ValueError, match="would replace"):
        evaluate_scores(
            table.labels, table.scores, table.class_names, 0.5, tmp_path / "r2", extra={"classes": {}}
        )


# --- --model: a real (randomly initialised) artefact on a real tile set --------------------------

MODEL_INPUT = 32  # the smallest ResNet input keeps the forward passes to seconds on a CPU


def _tileset(root: Path, class_names: tuple[str, ...], n: int, seed: int) -> Path:
    """A tile set of `n` noise tiles (32×32) with every label combination represented."""
    rng = np.random.default_rng(seed)
    with TileSetWriter(root, Catalogue.from_names(list(class_names))) as writer:
        for i in range(n):
            positives = [name for k, name in enumerate(class_names) if (i >> k) & 1]
            tile = rng.integers(0, 256, (MODEL_INPUT, MODEL_INPUT), dtype=np.uint8)
            writer.add(tile, f"frame{i:03d}.png", 0, 0, positives)
    return root


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised artefact, a split of a 40-tile set (test = every fifth tile), a
    history.csv, and one `evaluate --model` run on the persisted test split."""
    root = tmp_path_factory.mktemp("model_eval")
    catalogue = load_catalogue()
    data = _tileset(root / "tiles", catalogue.names, 40, seed=1)
    model = root / "model"
    create_untrained_artefact(model, catalogue, input_size=MODEL_INPUT, thresholds=np.array([0.3, 0.5, 0.7]))
    tiles = read_tileset(data).tiles
    train = tuple(t for i, t in enumerate(tiles) if i % 5 > 1)
    save_split(Split(str(data.resolve()), 0, train=train, validation=tiles[1::5], test=tiles[::5]), model)
    _write(model / "history.csv", "epoch,loss,val_loss,auc,val_auc\n0,0.9,1.0,0.5,0.5\n1,0.7,0.9,0.6,0.55\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "COMMAND_MODULES", ("worker.evaluation.command",))
        assert (
            cli.main(["evaluate", "--model", str(model), "--out", str(root / "report"), "--batch-size", "7"])
            == 0
        )
    return {"root": root, "data": data, "model": model, "report": root / "report"}


def test_model_mode_scores_the_test_split_with_the_model(model_run: dict[str, Path]) -> None:
    """scores.csv holds exactly the split's test tiles, their labels, and the model's own predictions
    for them; report.json carries the model version, the stored thresholds and the test-set size."""
    split = load_split(model_run["model"])
    report = json.loads((model_run["report"] / "report.json").read_text())
    classifier = load_classifier(model_run["model"])
    assert report["model_version"] == classifier.version
    assert report["split"] == "test"
    assert report["n_images"] == len(split.test) == 8
    assert [report["classes"][n]["threshold"] for n in classifier.catalogue.names] == [0.3, 0.5, 0.7]

    rows = (model_run["report"] / "scores.csv").read_text().splitlines()
    assert rows[0] == (
        "tile,label_holes,label_scratches,label_rolling,score_holes,score_scratches,score_rolling"
    )
    assert [r.split(",")[0] for r in rows[1:]] == list(split.test)
    table = read_scores_csv(model_run["report"] / "scores.csv")
    tileset = read_tileset(model_run["data"])
    expected_labels = tileset.labels[[tileset.tiles.index(t) for t in split.test]]
    np.testing.assert_array_equal(table.labels, expected_labels)
    tiles = np.stack([read_tile(model_run["data"] / t) for t in split.test])
    # atol: the command ran batches of 7, this call one batch of 8 (float sums in another order)
    np.testing.assert_allclose(table.scores, classifier.predict(tiles), rtol=0, atol=1e-5)
    counts = report["classes"]["holes"]
    assert counts["tp"] + counts["fn"] == int(expected_labels[:, 0].sum())


def test_model_mode_report_has_training_curves_and_rejudges_identically(
    model_run: dict[str, Path], tmp_path: Path
) -> None:
    """The model's history.csv becomes training_curves.png; `evaluate --scores` on the written
    scores.csv at the model's thresholds reproduces the per-class numbers exactly."""
    report = json.loads((model_run["report"] / "report.json").read_text())
    assert report["figures"]["training_curves"] == "training_curves.png"
    assert cv2.imread(str(model_run["report"] / "training_curves.png")) is not None
    args = [
        "--scores",
        str(model_run["report"] / "scores.csv"),
        "--thresholds",
        "holes=0.3,scratches=0.5,rolling=0.7",
        "--out",
        str(tmp_path / "again"),
    ]
    assert _evaluate(*args) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["classes"] == report["classes"]
    assert again["binary_accuracy"] == report["binary_accuracy"]


def test_model_mode_with_data_uses_every_tile(model_run: dict[str, Path], tmp_path: Path) -> None:
    """--data evaluates all tiles of that tile set (here 6 tiles); --thresholds replaces the named
    class's stored threshold and keeps the others."""
    data = _tileset(tmp_path / "other", ("holes", "scratches", "rolling"), 6, seed=2)
    out = tmp_path / "r"
    args = ["--model", str(model_run["model"]), "--data", str(data), "--thresholds", "rolling=0.9"]
    assert _evaluate(*args, "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 6 and report["split"] == "all tiles"
    assert report["positives"] == {"holes": 3, "scratches": 2, "rolling": 2}
    assert [report["classes"][n]["threshold"] for n in ("holes", "scratches", "rolling")] == [0.3, 0.5, 0.9]


def test_model_mode_refuses_tileset_without_the_models_classes(
    model_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tileset(tmp_path / "two", ("holes", "scratches"), 4, seed=3)
    out = tmp_path / "r"
    assert _evaluate("--model", str(model_run["model"]), "--data", str(data), "--out", str(out)) == 2
    assert "has no labels for the model's classes ['rolling']" in capsys.readouterr().err


def test_model_mode_refuses_missing_model_or_split(
    model_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _evaluate("--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")) == 2
    assert "model directory" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.json", "model.weights.h5"):
        (bare / name).write_bytes((model_run["model"] / name).read_bytes())
    assert _evaluate("--model", str(bare), "--out", str(tmp_path / "r")) == 2
    assert "split.json does not exist" in capsys.readouterr().err


def test_a_set_with_one_class_per_tile_also_gets_top1_and_the_class_confusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """a, b are holes, c, d scratches; the higher score says holes, scratches, scratches, scratches."""
    scores = _write(
        tmp_path / "single.csv",
        "tile,label_holes,score_holes,label_scratches,score_scratches\n"
        "a.png,1,0.9,0,0.2\nb.png,1,0.3,0,0.6\nc.png,0,0.1,1,0.8\nd.png,0,0.4,1,0.5\n",
    )
    out = tmp_path / "report"
    assert _evaluate("--scores", str(scores), "--out", str(out)) == 0
    assert "one class per tile: top-1 accuracy 0.7500" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["single_label"]["confusion"]["rows_actual_columns_predicted"] == [[1, 1], [0, 2]]
    assert (out / "class_confusion.png").is_file() and (out / "class_confusion.json").is_file()
    assert (
        _evaluate("--scores", str(_write(tmp_path / "multi.csv", CRAFTED)), "--out", str(tmp_path / "m")) == 0
    )
    assert "one class per tile" not in capsys.readouterr().out  # CRAFTED has tiles with two and none


def test_tta_is_refused_with_a_scores_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = _write(tmp_path / "scores.csv", CRAFTED)
    assert _evaluate("--scores", str(scores), "--out", str(tmp_path / "r"), "--tta", "flips") == 2
    assert "--tta: only with --model" in capsys.readouterr().err
