"""Per-class decision thresholds: one shape from the model artefact to the database row.

A class is found on a tile when its score is >= the class's threshold (the convention of
`worker.evaluation.metrics`; a NaN score is never a defect). `ClassThresholds` holds one threshold
per catalogue class, in catalogue order, each a number in [0, 1]; it is what `model.json` stores
(`by_name()`), what the artefact loads (`from_mapping`), what the inferencer decides with
(`decide`), what each detection records (`values[c]`) and what `models.thresholds` keeps
(`by_name()`). Nothing converts it on the way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from worker.core.errors import ModelError

__all__ = ["ClassThresholds"]


@dataclass(frozen=True)
class ClassThresholds:
    """One threshold per class: `values[i]` is the threshold of class `names[i]`."""

    names: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values) or not self.names:
            raise ModelError(
                f"thresholds: expected one value per class of {list(self.names)}, received "
                f"{len(self.values)} values"
            )
        for name, value in zip(self.names, self.values, strict=True):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ModelError(f"thresholds: {name!r} must be a number in [0, 1], received {value!r}")
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    @classmethod
    def from_values(cls, names: Sequence[str], values: Sequence[float] | np.ndarray) -> ClassThresholds:
        """From values in class order (a list or a 1-D array); ModelError when they do not fit."""
        array = np.asarray(values, dtype=float)
        in_range = array.ndim == 1 and all(math.isfinite(v) and 0 <= v <= 1 for v in array.tolist())
        if array.shape != (len(names),) or not in_range:
            raise ModelError(
                f"thresholds: expected {len(names)} values in [0, 1] (one per class of {list(names)}), "
                f"received {array.tolist()}"
            )
        return cls(tuple(names), tuple(array.tolist()))

    @classmethod
    def from_mapping(
        cls, names: Sequence[str], by_name: Mapping[str, object], source: str
    ) -> ClassThresholds:
        """From `{class name: threshold}` naming exactly `names` (as `model.json` holds them);
        ModelError naming `source` when a class is missing or extra or a value is not in [0, 1]."""
        if set(by_name) != set(names):
            raise ModelError(
                f"{source}: thresholds must name exactly the classes {list(names)}, "
                f"received {sorted(by_name)}"
            )
        values = [by_name[n] for n in names]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
            raise ModelError(f"{source}: thresholds must be numbers in [0, 1], received {dict(by_name)}")
        return cls(tuple(names), tuple(float(v) for v in values))  # type: ignore[arg-type]

    @property
    def array(self) -> np.ndarray:
        """float64 (C,), class order."""
        return np.asarray(self.values, dtype=np.float64)

    def by_name(self) -> dict[str, float]:
        """`{class name: threshold}`, class order: the form of `model.json` and `models.thresholds`."""
        return dict(zip(self.names, self.values, strict=True))

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """bool (N, C): score >= the class's threshold; NaN is never a defect."""
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != len(self.names):
            raise ModelError(f"scores: expected shape (N, {len(self.names)}), received {scores.shape}")
        return scores >= self.array[None, :]

    def __len__(self) -> int:
        return len(self.names)
