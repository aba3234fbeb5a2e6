"""`steel-worker train`: train the focal-loss ResNet classifier on a tile set into a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError
from worker.model.presets import DEFAULT_PRESET, PAPER, PRESETS, describe, resolve

EPILOG = """\
examples:
  steel-worker train --data tiles/neu --out models/neu
      the paper's recipe at 256×256: SGD 0.001 momentum 0.9, batch 20, focal loss (γ 2, α 0.25),
      LR ×0.75 after 10 epochs without a lower val_loss, stop after 10
  steel-worker train --data tiles/neu --out models/neu --epochs 200 --resume
      continue an interrupted (or finished) run from its last checkpoint, epoch and LR
  steel-worker train --data tiles/synthetic --out models/demo --input-size 64 --loss bce \\
      --optimizer adam --batch-size 32 --lr-schedule cosine --warmup-steps 100 --epochs 6 \\
      --steps-per-epoch 200 --batchnorm-momentum 0.9 --threshold-objective f2
      the demo model's recipe: a quick from-scratch model at a reduced input size (tiles are
      resized to it); on CPUs without AVX-512 set TF_ENABLE_ONEDNN_OPTS=1 (docs/demo-model.md)
  steel-worker train --data tiles/plant --out models/plant \\
      --imagenet-weights ~/keras/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5
      transfer learning from a local copy of Keras' ImageNet weights (never downloaded)

MODEL_DIR afterwards: model.weights.h5 + model.json (the artefact: catalogue, thresholds chosen on the
validation split, input size, backbone, metrics, version = sha256 of the weights), split.json (the
persisted 20 % test / 20 % validation split), history.csv (per-epoch loss, tp/fp/tn/fn, precision,
recall, AUC, train and val_), checkpoints/ (last epoch, best weights, state for --resume), and
MODEL_CARD.md: the data (tiles per class in each part), the recipe, the time and machine, the
validation metrics, the thresholds and how they were chosen, the known limits (--known-limits);
`steel-worker evaluate --model MODEL_DIR` adds the test split's metrics to it.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and options whose default is 'not set'; keeps the epilog's layout."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or isinstance(action, argparse._HelpAction):
            return action.help or ""
        return super()._get_help_string(action) or ""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the classifier on a tile set (the paper's recipe) and write a model artefact",
        description=(
            "Train a Keras ResNet (no top, average pooling) with one sigmoid per catalogue class on a tile "
            "set made by `steel-worker dataset`, choose each class's threshold on the validation split, "
            "and write the model artefact. Runs on any Keras 3 backend (KERAS_BACKEND)."
        ),
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, metavar="TILESET_DIR", help="tile set to train on")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="a named recipe; options given beside it win: paper = the paper's recipe at 256 px; "
        "cpu-scratch = what trained best from scratch on a 2-core CPU within an hour (96 px, BCE, Adam, "
        "cosine, crops and lighting jitter; docs/classifier.md)",
    )
    g = p.add_argument_group("network")
    g.add_argument(
        "--backbone",
        choices=("resnet50", "resnet101", "resnet152"),
        default="resnet50",
        help="keras.applications ResNet depth",
    )
    g.add_argument(
        "--input-size",
        type=int,
        metavar="PX",
        help=f"network input side; tiles are resized to it ({describe('input_size')})",
    )
    g.add_argument(
        "--imagenet-weights",
        type=Path,
        metavar="FILE",
        help="Keras no-top ImageNet .h5 for the backbone (local file)",
    )
    g.add_argument(
        "--batchnorm-momentum",
        type=float,
        metavar="M",
        help="BatchNorm moving-average momentum (Keras' own: 0.99; 0.9 follows sooner in short runs) "
        f"({describe('batchnorm_momentum')})",
    )
    g = p.add_argument_group("loss and optimiser")
    g.add_argument(
        "--loss",
        choices=("focal", "bce"),
        help=f"binary focal loss (the paper's) or plain binary cross-entropy ({describe('loss')})",
    )
    g.add_argument("--focal-gamma", type=float, default=2.0, metavar="G", help="focusing parameter γ")
    g.add_argument(
        "--focal-alpha",
        default="0.25",
        metavar="A",
        help="positive-class weight α, or 'none' for no balancing",
    )
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        help=f"SGD with momentum (the paper's) or Adam ({describe('optimizer')})",
    )
    g.add_argument(
        "--learning-rate",
        type=float,
        metavar="LR",
        help=f"initial learning rate; the paper used 0.001 or 0.0005 ({describe('learning_rate')})",
    )
    g.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum")
    g.add_argument(
        "--jit-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="XLA for the train step; auto = Keras' choice (on with a GPU, off on CPU)",
    )
    g = p.add_argument_group("schedule")
    g.add_argument(
        "--batch-size", type=int, metavar="N", help=f"tiles per training step ({describe('batch_size')})"
    )
    g.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"last epoch number (also with --resume) ({describe('epochs')})",
    )
    g.add_argument(
        "--steps-per-epoch", type=int, metavar="N", help="training batches per epoch (default: one pass)"
    )
    g.add_argument(
        "--validation-steps", type=int, metavar="N", help="validation batches per epoch (default: all)"
    )
    g.add_argument(
        "--lr-schedule",
        choices=("plateau", "cosine"),
        help="plateau: the paper's (LR ×factor after --lr-patience epochs without a lower val_loss, "
        "stop after --stop-patience); cosine: a fixed budget of --epochs × --steps-per-epoch steps "
        "(one pass of the data per epoch when --steps-per-epoch is not given), "
        f"warm-up then cosine decay to 0, no early stop ({describe('lr_schedule')})",
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        metavar="N",
        help="with --lr-schedule cosine: steps of linear warm-up from 0 to --learning-rate "
        f"({describe('warmup_steps')})",
    )
    g.add_argument(
        "--lr-factor", type=float, default=0.75, metavar="F", help="learning-rate factor on a plateau"
    )
    g.add_argument(
        "--lr-patience",
        type=int,
        default=10,
        metavar="EPOCHS",
        help="epochs without a lower val_loss before the LR drops",
    )
    g.add_argument(
        "--stop-patience",
        type=int,
        default=10,
        metavar="EPOCHS",
        help="epochs without a lower val_loss before stopping",
    )
    g.add_argument(
        "--resume", action="store_true", help="continue the run in MODEL_DIR from its last checkpoint"
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the split, the batches, augmentation and initial weights",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--augment-probability",
        type=float,
        default=0.5,
        metavar="P",
        help="probability of each of: horizontal flip, vertical flip, 90°/180°/270° turn",
    )
    g.add_argument(
        "--augment-crop",
        type=float,
        metavar="MIN_SCALE",
        help="random square crop of MIN_SCALE…1 × the tile's side before the resize (1: none); for tiles "
        "that are one texture throughout (NEU-DET-like): on tiles cut from frames it can cut a small "
        f"defect away ({describe('augment_crop')})",
    )
    g.add_argument(
        "--augment-intensity",
        type=float,
        metavar="J",
        help="random gain 1 ± J and offset ± J × 64 grey levels per tile (0: none; at most 0.5) "
        f"({describe('augment_intensity')})",
    )
    g.add_argument("--no-augment", action="store_true", help="no augmentation")
    g.add_argument(
        "--augment-validation", action="store_true", help="random augmentation on validation batches too"
    )
    g.add_argument(
        "--oversample", action="store_true", help="repeat tiles of rare classes (up to 10×) in each pass"
    )
    g.add_argument("--class-weights", action="store_true", help="balanced per-tile weights by rarest class")
    g.add_argument(
        "--workers", type=int, default=2, metavar="N", help="feeder threads (0: load in the training thread)"
    )
    g = p.add_argument_group("thresholds")
    g.add_argument(
        "--threshold-objective",
        choices=("f1", "f2", "errors"),
        default="f1",
        help="per class on the validation split, sweep 0…1 by 0.05: maximise F1, maximise F2 (recall "
        "weighted twice: fewer missed defects, more false alarms) or minimise errors",
    )
    g = p.add_argument_group("model card")
    g.add_argument(
        "--known-limits",
        metavar="TEXT",
        help="what users of the model must know it cannot do, written into MODEL_CARD.md (e.g. 'trained "
        "on line 2 only; no images of oiled strip')",
    )
    p.set_defaults(func=run)


def _alpha(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"--focal-alpha: expected a number in (0, 1) or 'none', received {text!r}"
        ) from None


def _augmentation(recipe: dict[str, Any], no_augment: bool, probability: float) -> Any:
    from worker.model.feeding import Augmentation  # noqa: PLC0415

    if no_augment:
        return Augmentation(hflip=0.0, vflip=0.0, rot90=0.0)
    crop, intensity = recipe["augment_crop"], recipe["augment_intensity"]
    if not 0.1 <= crop <= 1.0:
        raise ConfigError(f"--augment-crop: expected a fraction in [0.1, 1], received {crop}")
    if not 0.0 <= intensity <= 0.5:
        raise ConfigError(f"--augment-intensity: expected 0 to 0.5, received {intensity}")
    return Augmentation(
        hflip=probability, vflip=probability, rot90=probability, crop_min_scale=crop, intensity=intensity
    )


def recipe_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's settings under the options given on the command line. A preset's warm-up belongs
    to its cosine schedule: with --lr-schedule plateau and no --warmup-steps, there is none."""
    recipe = resolve(args.preset, {name: getattr(args, name) for name in PAPER})
    if recipe["lr_schedule"] != "cosine" and args.warmup_steps is None:
        recipe["warmup_steps"] = 0
    return recipe


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainingConfig the parsed options describe (ConfigError for bad values)."""
    from worker.model.training import TrainingConfig  # noqa: PLC0415

    p = 0.0 if args.no_augment else args.augment_probability
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"--augment-probability: expected a probability in [0, 1], received {p}")
    recipe = recipe_from_args(args)
    return TrainingConfig(
        data_dir=args.data,
        out_dir=args.out,
        backbone=args.backbone,
        input_size=recipe["input_size"],
        imagenet_weights=args.imagenet_weights,
        loss=recipe["loss"],
        focal_gamma=args.focal_gamma,
        focal_alpha=_alpha(args.focal_alpha),
        optimizer=recipe["optimizer"],
        learning_rate=recipe["learning_rate"],
        momentum=args.momentum,
        batch_size=recipe["batch_size"],
        epochs=recipe["epochs"],
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        lr_schedule=recipe["lr_schedule"],
        warmup_steps=recipe["warmup_steps"],
        lr_factor=args.lr_factor,
        lr_patience=args.lr_patience,
        stop_patience=args.stop_patience,
        augmentation=_augmentation(recipe, args.no_augment, p),
        preset=args.preset,
        augment_validation=args.augment_validation,
        oversample=args.oversample,
        class_weights=args.class_weights,
        batchnorm_momentum=recipe["batchnorm_momentum"],
        seed=args.seed,
        threshold_objective=args.threshold_objective,
        resume=args.resume,
        jit_compile=args.jit_compile,
        workers=args.workers,
        known_limits=args.known_limits,
    )


def run(args: argparse.Namespace) -> int:
    from worker.model.training import train  # noqa: PLC0415

    result = train(config_from_args(args))
    print(f"model written to {result.model_dir} (version {result.version[:12]})")
    print(
        f"epochs done: {result.epochs_done}, best epoch {result.best_epoch} with val_loss "
        f"{result.best_val_loss:.4f}, {result.seconds / 60:.1f} min"
    )
    print("per-class thresholds and validation metrics at them:")
    for name, m in result.metrics["classes"].items():
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        print(
            f"  {name:<16} threshold {m['threshold']:.2f}  F1 {m['f1']:.3f}  recall {m['recall']:.3f}  "
            f"precision {m['precision']:.3f}  AUC {auc}"
        )
    print(f"binary accuracy (validation): {result.metrics['binary_accuracy']:.4f}")
    return 0
