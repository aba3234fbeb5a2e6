"""The demo model: the project's ResNet50 classifier, trained from scratch on synthetic tiles, once.

A `DemoRecipe` names everything that shapes the model (the synthetic tile set and the training
settings); its digest names the cache folder, `~/.cache/steel-worker/demo-model-<digest>` (root
from `$STEEL_WORKER_CACHE_DIR`), outside the repository. `prepare_demo_model` returns the cached
artefact when one is there, else builds it:

1. tiles: `recipe.frames` synthetic 256×1600 frames (`worker.datasets.synthetic`), cut into 256×256
   tiles labelled from the generator's masks (at least 64 mask pixels, as everywhere), each tile
   stored already shrunk to the network input (INTER_AREA, exactly what the pre-processing does);
2. training with `worker.model.training.train` (fast from-scratch settings: 64-px input, defective
   tiles over-sampled, binary cross-entropy, Adam with a warm-up and a cosine decay over a fixed
   number of steps, BatchNorm momentum 0.9, TensorFlow's oneDNN kernels; docs/demo-model.md has
   the measurements);
3. thresholds chosen on the validation split by `train` (maximum F2), artefact written,
   checkpoints removed;
4. where the openvino extra is installed, the OpenVINO exports, fp32 and INT8 (calibrated on the
   validation split, measured against Keras on the test split while the tiles are still at hand),
   so that the demo's worker (MODEL_RUNTIME=auto) runs the fastest one inside the agreement limits.

Everything is built in a `<dir>.partial-<pid>` folder and renamed into place at the end, so an
interrupted preparation never leaves a folder that looks like a finished model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import ConfigError, ModelError

#: Root of the caches (demo model, embedded PostgreSQL): this variable, else DEFAULT_CACHE_ROOT.
CACHE_DIR_ENV = "STEEL_WORKER_CACHE_DIR"
DEFAULT_CACHE_ROOT = Path("~/.cache/steel-worker")
#: Bump when the preparation changes in a way the recipe's fields do not show.
RECIPE_FORMAT = 1
#: TensorFlow's oneDNN kernels: on by default only on CPUs with AVX-512 VNNI/BF16 or AMX. On the
#: 2-core development machine they made a 64-px ResNet50 training step (batch 32) 3.2× faster:
#: 0.71 instead of 2.30 s (docs/demo-model.md). Read once, when TensorFlow loads.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
#: Written into the demo model's card (docs/classifier.md, "Severstal frames, judged by the demo model").
DEMO_KNOWN_LIMITS = (
    "trained on the project's synthetic strips only; at chance on real Severstal frames (frame AUC"
    " 0.53–0.63, docs/classifier.md): for the demo and the worker's plumbing, not for real steel"
)


@dataclass(frozen=True)
class DemoRecipe:
    """What the demo model is made of. Changing any field gives a new digest, so a new model."""

    frames: int = 500  # synthetic 256×1600 frames → 7 tiles each
    defect_rate: float = 3.0  # mean defects per frame (the stream's default is 1.1)
    seed: int = 1
    input_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 30
    batch_size: int = 32
    steps_per_epoch: int = 150
    epochs: int = 2
    validation_steps: int | None = 20  # batches of the per-epoch validation (thresholds use all)
    batchnorm_momentum: float = 0.9
    oversample: bool = True  # repeat defective tiles so each class nears the clean tiles' count
    loss: str = "bce"
    focal_alpha: float | None = 0.25  # used when loss is "focal"
    threshold_objective: str = "f2"

    def __post_init__(self) -> None:
        if self.frames < 10:
            raise ConfigError(f"demo recipe: frames must be >= 10, received {self.frames}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ConfigError(
                f"demo recipe: epochs and steps_per_epoch must be >= 1, received {self.epochs},"
                f" {self.steps_per_epoch}"
            )

    def digest(self) -> str:
        """12 hex digits of the sha256 of the recipe (with RECIPE_FORMAT), stable across runs."""
        text = json.dumps({"format": RECIPE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @property
    def training_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class PreparedModel:
    """A demo model ready to load: where it is, its version, and whether this call built it."""

    path: Path
    version: str
    built: bool
    seconds: float
    metrics: dict[str, Any]


def cache_root() -> Path:
    """`$STEEL_WORKER_CACHE_DIR`, else ~/.cache/steel-worker (expanded, absolute)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_ROOT).expanduser().resolve()


def demo_model_dir(recipe: DemoRecipe, root: Path | None = None) -> Path:
    """The cache folder of `recipe`'s model: `<root>/demo-model-<digest>`."""
    return (root if root is not None else cache_root()) / f"demo-model-{recipe.digest()}"


def _cached(path: Path) -> PreparedModel | None:
    from worker.model.artefact import read_model_meta  # noqa: PLC0415

    if not (path / "model.json").is_file():
        return None
    meta = read_model_meta(path)
    return PreparedModel(path, str(meta["version"]), False, 0.0, dict(meta.get("metrics") or {}))


def prepare_demo_model(
    recipe: DemoRecipe | None = None,
    root: Path | None = None,
    *,
    progress: bool = True,
    log: Any = print,
) -> PreparedModel:
    """The demo model of `recipe` (default recipe): from the cache, or built into it now.

    `log` receives one-line progress messages. ModelError when training produced no artefact.
    """
    recipe = recipe or DemoRecipe()
    final = demo_model_dir(recipe, root)
    cached = _cached(final)
    if cached is not None:
        return cached
    if "tensorflow" not in sys.modules:  # too late once TensorFlow is loaded; the user's choice wins
        os.environ.setdefault(ONEDNN_ENV, "1")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    try:
        catalogue = load_catalogue()
        tiles = work / "tiles"
        log(
            f"preparing the demo model (first run only): {recipe.frames} synthetic frames → tiles, then "
            f"ResNet50 from scratch at {recipe.input_size}×{recipe.input_size}, {recipe.training_steps} "
            f"steps; cached in {final}"
        )
        summary = write_demo_tiles(recipe, catalogue, tiles, progress=progress)
        seconds = time.monotonic() - started
        log(f"tile set: {summary.tiles} tiles ({_class_text(summary.class_counts)}) in {seconds:.0f} s")
        result = _train(recipe, tiles, work / "model", progress=progress)
        model = work / "model"
        shutil.rmtree(model / "checkpoints", ignore_errors=True)  # hundreds of MB of optimizer state
        export_for_auto(model, log)
        shutil.rmtree(tiles, ignore_errors=True)
        if final.exists():  # prepared meanwhile by another run: keep that one
            shutil.rmtree(work, ignore_errors=True)
            done = _cached(final)
            if done is None:
                raise ModelError(f"{final} exists but holds no model.json; remove it and run again")
            return done
        model.replace(final)
        shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    log(f"demo model ready in {seconds / 60:.1f} min (version {result.version[:12]})")
    return PreparedModel(final, result.version, True, seconds, result.metrics)


#: The exports the demo makes, in the order `auto` prefers them (worker.model.runtimes.AUTO_ORDER).
DEMO_EXPORTS = ("openvino-int8", "openvino")


def export_for_auto(model: Path, log: Any) -> None:
    """The OpenVINO exports of a freshly trained model whose split's tiles are still at hand, when
    the openvino extra is installed. One line each: its time and agreement with Keras, or why it
    was not made; the demo goes on either way (on Keras at worst)."""
    import contextlib  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415
    import io  # noqa: PLC0415

    from worker.core.errors import DatasetError  # noqa: PLC0415
    from worker.model.runtimes import export_model  # noqa: PLC0415

    if importlib.util.find_spec("openvino") is None:
        log(
            "OpenVINO is not installed (pip install 'steel-worker[openvino]'): the worker runs the model"
            " on Keras"
        )
        return
    for runtime in DEMO_EXPORTS:
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: the line below says it
                record = export_model(model, runtime)
        except (ConfigError, ModelError, DatasetError) as exc:
            log(f"{runtime} export not made: {exc}")
            continue
        agreement = record.get("agreement")
        compared = (
            f"against Keras on the {agreement['tiles']} test tiles: largest |score difference|"
            f" {agreement['max_abs_difference']:.3f}, decisions flipped on {agreement['max_flip_share']:.1%}"
            " of tiles for the worst class"
            if agreement
            else "no test split to compare it with Keras on"
        )
        log(f"{runtime} export in {time.monotonic() - started:.0f} s; {compared}")


def _class_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def write_demo_tiles(
    recipe: DemoRecipe, catalogue: Catalogue, out_dir: Path, *, progress: bool = True
) -> Any:
    """The recipe's synthetic tile set in `out_dir`, tiles stored at the network's input size.

    Labels come from the full-size masks; the stored pixels are `resize_tile(tile, input_size)`,
    the same INTER_AREA shrink the worker's pre-processing applies, so training sees what the
    worker will feed the network. Returns the `ImportSummary`.
    """
    from worker.datasets.labelled import LabelledTile, write_tileset  # noqa: PLC0415
    from worker.datasets.synthetic import iter_synthetic_tiles  # noqa: PLC0415
    from worker.model.preprocessing import resize_tile  # noqa: PLC0415

    def shrunk() -> Iterator[LabelledTile]:
        for tile in iter_synthetic_tiles(
            catalogue,
            frames=recipe.frames,
            seed=recipe.seed,
            defect_rate=recipe.defect_rate,
            progress=progress,
        ):
            yield LabelledTile(
                resize_tile(tile.image, recipe.input_size), tile.source, tile.x, tile.y, tile.labels
            )

    return write_tileset(shrunk(), out_dir, catalogue, overwrite=True)


def _train(recipe: DemoRecipe, tiles: Path, out: Path, *, progress: bool) -> Any:
    from worker.model.training import TrainingConfig, train  # noqa: PLC0415

    config = TrainingConfig(
        data_dir=tiles,
        out_dir=out,
        input_size=recipe.input_size,
        optimizer=recipe.optimizer,  # type: ignore[arg-type]
        learning_rate=recipe.learning_rate,
        lr_schedule=recipe.lr_schedule,  # type: ignore[arg-type]
        warmup_steps=min(recipe.warmup_steps, recipe.training_steps - 1),
        batch_size=recipe.batch_size,
        steps_per_epoch=recipe.steps_per_epoch,
        epochs=recipe.epochs,
        validation_steps=recipe.validation_steps,
        batchnorm_momentum=recipe.batchnorm_momentum,
        oversample=recipe.oversample,
        loss=recipe.loss,  # type: ignore[arg-type]
        focal_alpha=recipe.focal_alpha,
        threshold_objective=recipe.threshold_objective,  # type: ignore[arg-type]
        seed=recipe.seed,
        lr_patience=recipe.epochs,  # a fixed schedule: no plateau steps or early stop in so few epochs
        stop_patience=recipe.epochs,
        verbose=None if progress else 2,  # None: one progress bar on a terminal
        known_limits=DEMO_KNOWN_LIMITS,
    )
    return train(config)
