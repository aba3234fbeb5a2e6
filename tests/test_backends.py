"""The classifier is backend-agnostic Keras 3: under KERAS_BACKEND=jax the model builds, runs, trains
one step with the focal loss fed by the tile feeder, and loads weights saved under TensorFlow with
the same predictions. Skips (saying why) where JAX is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from model_tiles import write_shape_tileset

import worker
from worker.core.catalogue import load_catalogue
from worker.model.artefact import create_untrained_artefact, load_classifier

pytestmark = [
    pytest.mark.slow,  # a second Keras process compiling ResNet50 under JAX: about 1.5 min of CPU
    pytest.mark.skipif(
        importlib.util.find_spec("jax") is None,
        reason="JAX is not installed (pip install jax) — the JAX backend check needs it",
    ),
]

JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from worker.model.artefact import load_classifier
    from worker.model.feeding import TileFeeder
    from worker.model.losses import make_loss
    from worker.model.network import build_classifier
    from worker.core.tileset import read_tileset

    model_dir, tiles_file, tileset_dir = sys.argv[1:4]
    result = {"backend": keras.backend.backend()}
    model = build_classifier(3, 32)
    x = np.random.default_rng(0).normal(0, 50, (2, 32, 32, 3)).astype("float32")
    result["forward_shape"] = list(np.asarray(model(x, training=False)).shape)
    model.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9), loss=make_loss("focal"))
    feeder = TileFeeder(read_tileset(tileset_dir), 32, batch_size=4, shuffle=True, steps=1)
    history = model.fit(feeder, epochs=1, verbose=0)
    result["train_loss"] = float(history.history["loss"][0])
    classifier = load_classifier(model_dir)
    result["predictions"] = classifier.predict(np.load(tiles_file)).tolist()
    print("RESULT " + json.dumps(result))
    """
)


def test_jax_backend_builds_trains_and_loads_tensorflow_weights(tmp_path: Path) -> None:
    """Saved under this process's backend (TensorFlow by default), loaded under JAX: same scores."""
    create_untrained_artefact(tmp_path / "model", load_catalogue(), input_size=32, seed=4)
    tiles = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    np.save(tmp_path / "tiles.npy", tiles)
    expected = load_classifier(tmp_path / "model").predict(tiles)
    write_shape_tileset(tmp_path / "tileset", per_class=2, clean=2, pairs=0, size=32)

    root = str(Path(worker.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "model"), str(tmp_path / "tiles.npy"),
         str(tmp_path / "tileset")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["backend"] == "jax"
    assert result["forward_shape"] == [2, 3]
    assert np.isfinite(result["train_loss"]) and result["train_loss"] > 0
    np.testing.assert_allclose(np.array(result["predictions"]), expected, atol=1e-4)
