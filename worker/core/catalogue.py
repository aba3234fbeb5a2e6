"""The defect class catalogue: which classes exist, and each one's cause and prevention.

The catalogue is data. The default is the paper's Table 1 (`worker/core/catalogues/paper.json`); a plant
with other classes writes its own file of the same shape and retrains. The model has one sigmoid
output per class, in catalogue order, so the order of `classes` is part of a model's contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.core.errors import CatalogueError

DEFAULT_CATALOGUE_PATH = Path(__file__).parent / "catalogues" / "paper.json"

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
_TEXT_FIELDS = ("features", "type", "cause", "automatic_inspection", "prevention")


@dataclass(frozen=True)
class DefectClass:
    """One defect class: a stable integer id, a machine name, and the catalogue's text fields."""

    id: int
    name: str
    features: str = ""
    type: str = ""
    cause: str = ""
    automatic_inspection: str = ""
    prevention: str = ""


@dataclass(frozen=True)
class Catalogue:
    """An ordered, non-empty tuple of defect classes with unique ids and names."""

    classes: tuple[DefectClass, ...]
    name: str = "custom"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.classes:
            raise CatalogueError("catalogue: expected at least one class, received none")
        for field_name in ("id", "name"):
            values = [getattr(c, field_name) for c in self.classes]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise CatalogueError(
                    f"catalogue: expected unique class {field_name}s, received duplicates {duplicates}"
                )
        for c in self.classes:
            if not _NAME_PATTERN.match(c.name):
                raise CatalogueError(
                    f"catalogue: class name {c.name!r} must be lower-case letters, digits, '_' or '-',"
                    " starting with a letter"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        """Position of class `name` in the model's output; CatalogueError if it is not listed."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CatalogueError(
                f"class {name!r} is not in catalogue {self.name!r}; expected one of {list(self.names)}"
            ) from None

    def get(self, name: str) -> DefectClass:
        return self.classes[self.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "classes": [asdict(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "catalogue") -> Catalogue:
        """Build a catalogue from parsed JSON; CatalogueError says which field is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise CatalogueError(f"{source}: expected an object with a 'classes' list")
        classes = []
        for i, item in enumerate(data["classes"]):
            if not isinstance(item, dict):
                raise CatalogueError(f"{source}: classes[{i}] must be an object, received {item!r}")
            if not isinstance(item.get("id"), int) or not isinstance(item.get("name"), str):
                raise CatalogueError(
                    f"{source}: classes[{i}] needs an integer 'id' and a string 'name', received {item!r}"
                )
            unknown = set(item) - {"id", "name", *_TEXT_FIELDS}
            if unknown:
                raise CatalogueError(f"{source}: classes[{i}] has unknown fields {sorted(unknown)}")
            classes.append(DefectClass(**{k: item[k] for k in item}))
        return cls(
            classes=tuple(classes),
            name=str(data.get("name", "custom")),
            description=str(data.get("description", "")),
        )

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], name: str = "custom") -> Catalogue:
        """A catalogue with only names (ids 1..n), e.g. built from a data set's folder names."""
        return cls(classes=tuple(DefectClass(id=i + 1, name=n) for i, n in enumerate(names)), name=name)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read a catalogue JSON file; without a path, the paper's Table 1."""
    file = Path(path) if path is not None else DEFAULT_CATALOGUE_PATH
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"catalogue file {file} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"catalogue file {file}: expected JSON, {exc}") from None
    return Catalogue.from_dict(data, source=str(file))


def save_catalogue(catalogue: Catalogue, path: str | Path) -> None:
    Path(path).write_text(json.dumps(catalogue.to_dict(), indent=2) + "\n", encoding="utf-8")
