"""The defect class catalogue: which classes exist, and each one's cause and prevention.

The catalogue is data. The default is the paper's Table 1 (`worker/core/catalogues/paper.json`); a plant
with other classes writes its own file of the same shape and retrains. The model has one sigmoid
output per class, in catalogue order, so the order of `classes` is part of a model's contract.

Names and display names: a class's `name` is its machine name — the identifier in labels.csv, the
model, the database, Kafka messages and alert rules — and matches `^[a-z][a-z0-9_-]*$`. Its
`display_name` is what people read (reports, alert text, the console); it defaults to the name. A
plant's own folder names ("Rolled-in Scale", "Écaillage") become names by `slugify_class_name`
and stay the display names.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.core.errors import CatalogueError

DEFAULT_CATALOGUE_PATH = Path(__file__).parent / "catalogues" / "paper.json"

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
_TEXT_FIELDS = ("features", "type", "cause", "automatic_inspection", "prevention")
_NOT_NAME_CHARACTERS = re.compile(r"[^a-z0-9_-]+")
MAX_NAME_LENGTH = 64
"""Longest machine name `slugify_class_name` makes (longer slugs are cut, then trimmed again)."""
MAX_DISPLAY_NAME_LENGTH = 200
DIGIT_PREFIX = "c_"
"""Put before a slug that starts with a digit ("3 mm holes" → "c_3_mm_holes")."""


def is_class_name(text: str) -> bool:
    """True when `text` is a valid machine name: a-z, digits, '_' or '-', starting with a letter a-z."""
    return bool(_NAME_PATTERN.match(text))


def slugify_class_name(text: str) -> str:
    """The machine name for a class called `text` by people (a folder name, a label).

    The rule, in order:
    1. a name that is already valid (`^[a-z][a-z0-9_-]*$`, at most 64 characters) is kept as it is;
    2. otherwise Unicode NFKD, accents (combining marks) dropped, case folded ("Écaillage" →
       "ecaillage", "ß" → "ss");
    3. every run of characters other than a-z, 0-9, '_' and '-' becomes one '_';
    4. '_' and '-' are trimmed from both ends; a slug starting with a digit gets the prefix "c_";
    5. the slug is cut to 64 characters (and trimmed again).

    CatalogueError when nothing is left (no letter or digit a-z/0-9 in `text`: "..", "/", "???",
    a name in a script without a Latin decomposition) — such a class needs a catalogue file.
    """
    if is_class_name(text) and len(text) <= MAX_NAME_LENGTH:
        return text
    # Case folding may itself produce combining marks ("İ" → "i̇"): decompose again after it.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    bare = "".join(ch for ch in folded if not unicodedata.combining(ch))
    slug = _NOT_NAME_CHARACTERS.sub("_", bare).strip("_-")
    if not slug:
        raise CatalogueError(
            f"class name {text!r}: expected at least one letter a-z or digit after removing accents,"
            " received none; rename the folder or pass a catalogue that lists the class"
        )
    if not slug[0].isalpha():
        slug = DIGIT_PREFIX + slug
    return slug[:MAX_NAME_LENGTH].rstrip("_-")


def slugify_class_names(texts: Iterable[str]) -> dict[str, str]:
    """Each text → its machine name (`slugify_class_name`); CatalogueError, naming both texts, when
    two of them give the same machine name ("Pitted Surface" and "pitted_surface")."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for text in texts:
        slug = slugify_class_name(text)
        if slug in owner and owner[slug] != text:
            raise CatalogueError(
                f"class names {owner[slug]!r} and {text!r} both become the machine name {slug!r};"
                " expected names that differ in more than case, accents and punctuation (rename one)"
            )
        owner[slug] = text
        names[text] = slug
    return names


@dataclass(frozen=True)
class DefectClass:
    """One defect class: a stable integer id, a machine name, the catalogue's text fields, and the
    name people read (`display_name`, the machine name when not given)."""

    id: int
    name: str
    features: str = ""
    type: str = ""
    cause: str = ""
    automatic_inspection: str = ""
    prevention: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)


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
            if (
                len(c.display_name) > MAX_DISPLAY_NAME_LENGTH
                or not c.display_name.strip()
                or any(unicodedata.category(ch).startswith("C") for ch in c.display_name)
            ):
                raise CatalogueError(
                    f"catalogue: class {c.name!r} has display name {c.display_name!r}; expected one line"
                    f" of at most {MAX_DISPLAY_NAME_LENGTH} printable characters"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def display_names(self) -> dict[str, str]:
        """Machine name → display name, in catalogue order."""
        return {c.name: c.display_name for c in self.classes}

    def display_name(self, name: str) -> str:
        """The display name of class `name`; `name` itself when the catalogue lacks it (a report
        over old rows must still print something)."""
        for c in self.classes:
            if c.name == name:
                return c.display_name
        return name

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
        """The JSON shape; `display_name` is written only where it differs from the name, so that
        catalogues without display names keep the shape older versions read."""
        classes = []
        for c in self.classes:
            item = asdict(c)
            if c.display_name == c.name:
                del item["display_name"]
            classes.append(item)
        return {"name": self.name, "description": self.description, "classes": classes}

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
            unknown = set(item) - {"id", "name", "display_name", *_TEXT_FIELDS}
            if unknown:
                raise CatalogueError(f"{source}: classes[{i}] has unknown fields {sorted(unknown)}")
            wrong = [k for k in ("display_name", *_TEXT_FIELDS) if k in item and not isinstance(item[k], str)]
            if wrong:
                raise CatalogueError(
                    f"{source}: classes[{i}] fields {wrong} must be strings, received {item!r}"
                )
            classes.append(DefectClass(**{k: item[k] for k in item}))
        return cls(
            classes=tuple(classes),
            name=str(data.get("name", "custom")),
            description=str(data.get("description", "")),
        )

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], name: str = "custom") -> Catalogue:
        """A catalogue with only names (ids 1..n), e.g. built from a data set's class names."""
        return cls(classes=tuple(DefectClass(id=i + 1, name=n) for i, n in enumerate(names)), name=name)

    @classmethod
    def from_display_names(cls, texts: Iterable[str], name: str = "custom") -> Catalogue:
        """A catalogue of classes people named `texts` (e.g. a plant's folder names): each class's
        name is its text's slug (`slugify_class_name`), its display name the text; sorted by name,
        ids 1..n. CatalogueError for a text without letters or digits, or two texts with one slug."""
        slugs = slugify_class_names(texts)
        ordered = sorted(slugs.items(), key=lambda item: (item[1], item[0]))
        return cls(
            classes=tuple(
                DefectClass(id=i + 1, name=slug, display_name=text) for i, (text, slug) in enumerate(ordered)
            ),
            name=name,
        )


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
