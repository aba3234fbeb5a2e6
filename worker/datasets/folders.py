"""A folder per class → labelled tiles.

Layout: `SOURCE/<class folder>/*.png|jpg|jpeg|bmp|tif|tiff`, one folder per defect class, plus an
optional folder of defect-free images (`clean` by default). Every tile of an image in `holes/` is
labelled `holes` (the folder names the image's class, not where in the image the defect is), every
tile of a clean image has no label.

Folder names: a plant's own ("Rolled-in Scale", "pitted surface", "Écaillage") are allowed. Each
becomes a class name by `worker.core.catalogue.slugify_class_name` ("rolled-in_scale",
"pitted_surface", "ecaillage"; a name that already is a valid class name is kept), and the
folder name is the class's display name. Two folders with the same slug, or a folder name
without any letter or digit, are refused with both/the folder(s) named.

Catalogue: with an explicit catalogue every class folder must name one of its classes (by name,
by slug, or by display name). Without one, the default catalogue (the paper's Table 1) is used when
it lists every folder's slug; otherwise a catalogue is built from the folder names
(`Catalogue.from_display_names`: sorted by slug, ids 1..n).

A given split (`keep_split`): `SOURCE/train/`, `SOURCE/valid/` (or `val/`, `validation/`) and
`SOURCE/test/`, each holding class folders (and optionally the clean folder), keep that split: each
image's tiles carry its part, and the tile set records it (`worker.core.tileset.SPLIT_FILE`) for
`train` and `evaluate`. Without `keep_split`, such a layout is refused (its split folders would
otherwise be taken for classes).

Images: colour images are read as grey (OpenCV's conversion), 16-bit ones scaled to 8 bits; sizes
and formats may be mixed. An image whose shorter side is below the tile is resized up (bicubic,
aspect kept) so that side equals the tile — a 200×200 image becomes 256×256 at tile 256. Larger
images are cut into tiles that cover every pixel (overlapping where a side is not a multiple of
the tile).

Tile sources are named `<folder slug>__<file name>` (`<part>__<folder slug>__<file name>` with a
kept split) so that images with the same file name in different folders get distinct tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from worker.core.catalogue import Catalogue, load_catalogue, slugify_class_name, slugify_class_names
from worker.core.errors import CatalogueError, DatasetError
from worker.core.tileset import SPLIT_PARTS
from worker.core.tiling import cut_tiles, tile_windows
from worker.datasets.labelled import DEFAULT_TILE, LabelledTile, list_images, read_grey, upscale_to_tile

DEFAULT_CLEAN_FOLDER = "clean"
#: Folder name (lower-cased) → the split part it holds.
SPLIT_FOLDERS = {
    "train": "train",
    "valid": "validation",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}


@dataclass(frozen=True)
class FolderImage:
    """One image of a folder data set: its class (None for a defect-free image), its folder's
    machine name (used in tile names) and, with a kept split, its part."""

    path: Path
    label: str | None
    folder: str = ""
    part: str | None = None

    @property
    def source(self) -> str:
        stem = f"{self.folder or self.path.parent.name}__{self.path.name}"
        return f"{self.part}__{stem}" if self.part else stem


@dataclass(frozen=True)
class FolderDataset:
    """A scanned folder data set: the catalogue its labels use, and its images in a stable order."""

    root: Path
    catalogue: Catalogue
    images: tuple[FolderImage, ...]

    @property
    def has_split(self) -> bool:
        return any(image.part is not None for image in self.images)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_split_layout(folders: list[Path]) -> bool:
    """A folder named train, valid, val, validation or test that holds folders itself."""
    return any(p.name.lower() in SPLIT_FOLDERS and _subfolders(p) for p in folders)


def _split_parts(root: Path, folders: list[Path]) -> dict[str | None, Path]:
    """Part → its folder, for SOURCE/train, SOURCE/valid|val|validation, SOURCE/test."""
    parts: dict[str, Path] = {}
    for folder in folders:
        part = SPLIT_FOLDERS.get(folder.name.lower())
        if part is None:
            raise DatasetError(
                f"--keep-split: unexpected folder {folder.name!r} in {root}; expected only the split"
                " folders train/, valid/ (or val/, validation/) and test/, each holding class folders"
            )
        if part in parts:
            raise DatasetError(
                f"--keep-split: folders {parts[part].name!r} and {folder.name!r} in {root} both hold"
                f" the {part} part; keep one"
            )
        parts[part] = folder
    missing = [p for p in SPLIT_PARTS if p not in parts]
    if missing:
        names = {"train": "train/", "validation": "valid/ (or val/, validation/)", "test": "test/"}
        raise DatasetError(
            f"--keep-split: {root} has no {', '.join(names[p] for p in missing)} folder; expected"
            f" train/, valid/ (or val/, validation/) and test/, found {[f.name for f in folders]}"
        )
    empty = [parts[p].name for p in SPLIT_PARTS if not _subfolders(parts[p])]
    if empty:
        raise DatasetError(f"--keep-split: split folders {empty} in {root} hold no class folders")
    return {p: parts[p] for p in SPLIT_PARTS}


def scan_folders(
    source: str | Path,
    catalogue: Catalogue | None = None,
    clean_folder: str | None = None,
    *,
    keep_split: bool = False,
) -> FolderDataset:
    """Find the class folders and their images under `source`, and settle the catalogue.

    `clean_folder` names the folder of defect-free images; None means `clean` when it exists.
    `keep_split`: `source` holds train/, valid/ (val/, validation/) and test/, each with class
    folders; each image keeps its part. DatasetError for a missing source, a named clean folder
    that does not exist, folders that do not match the given catalogue, folder names that give no
    or the same class name, a split layout without `keep_split` (or a broken one with it), no images.
    """
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(f"--source {root}: expected a folder with one sub-folder per class")
    top = _subfolders(root)
    part_dirs: dict[str | None, Path]
    if keep_split:
        part_dirs = _split_parts(root, top)
    elif _is_split_layout(top):
        raise DatasetError(
            f"--source {root}: folders {[p.name for p in top if p.name.lower() in SPLIT_FOLDERS]} hold"
            " class folders: this data set comes split into train/valid/test; pass --keep-split to keep"
            " that split, or point --source at one part's folder"
        )
    else:
        part_dirs = {None: root}
    folders = {part: _subfolders(folder) for part, folder in part_dirs.items()}
    present = sorted({p.name for fs in folders.values() for p in fs})
    if clean_folder is None:
        clean_name = DEFAULT_CLEAN_FOLDER if DEFAULT_CLEAN_FOLDER in present else None
    else:
        if clean_folder not in present:
            where = root / clean_folder if not keep_split else f"{root}/<part>/{clean_folder}"
            raise DatasetError(
                f"--clean-folder {clean_folder!r}: expected a folder {where}, none found;"
                f" folders present: {present}"
            )
        clean_name = clean_folder
    class_names = [n for n in present if n != clean_name]
    if not class_names:
        raise DatasetError(f"--source {root}: expected at least one class folder, found {present}")
    catalogue, labels = _settle_catalogue(root, class_names, catalogue)
    keys = dict(labels)
    if clean_name is not None:
        keys[clean_name] = _folder_key(root, clean_name, set(labels.values()))
    images = [
        FolderImage(path, labels.get(folder.name), keys[folder.name], part)
        for part, fs in folders.items()
        for folder in fs
        for path in list_images(folder)
    ]
    if not images:
        raise DatasetError(f"--source {root}: empty data set, no image files in {present}")
    for part in part_dirs:
        if part is not None and not any(image.part == part for image in images):
            raise DatasetError(f"--keep-split: the {part} part ({part_dirs[part]}) holds no image files")
    return FolderDataset(root=root, catalogue=catalogue, images=tuple(images))


def _folder_key(root: Path, clean_name: str, class_keys: set[str]) -> str:
    """The clean folder's machine name for tile names: its slug, or `clean`."""
    key = _slug_or_none(clean_name) or DEFAULT_CLEAN_FOLDER
    if key in class_keys:
        raise DatasetError(
            f"--source {root}: the clean folder {clean_name!r} and a class folder give the same name"
            f" {key!r}; rename one"
        )
    return key


def _settle_catalogue(
    root: Path, names: list[str], catalogue: Catalogue | None
) -> tuple[Catalogue, dict[str, str]]:
    """The catalogue, and each folder name → its class's machine name."""
    if catalogue is not None:
        return catalogue, _match_catalogue(root, names, catalogue)
    try:
        slugs = slugify_class_names(names)
    except CatalogueError as exc:
        raise DatasetError(f"--source {root}: folder names must give class names: {exc}") from None
    default = load_catalogue()
    if all(s in default.names for s in slugs.values()):
        return default, slugs
    try:
        return Catalogue.from_display_names(names, name=root.name), slugs
    except CatalogueError as exc:
        raise DatasetError(f"--source {root}: folder names must give class names: {exc}") from None


def _slug_or_none(text: str) -> str | None:
    try:
        return slugify_class_name(text)
    except CatalogueError:
        return None


def _match_catalogue(root: Path, names: list[str], catalogue: Catalogue) -> dict[str, str]:
    """Each folder name → the class of `catalogue` it names (by name, display name or slug), one
    folder per class; DatasetError for folders that name none, or two folders that name one."""
    labels: dict[str, str] = {}
    by_display = {c.display_name: c.name for c in catalogue.classes}
    for folder in names:
        if folder in catalogue.names:
            labels[folder] = folder
        elif folder in by_display:
            labels[folder] = by_display[folder]
        elif _slug_or_none(folder) in catalogue.names:
            labels[folder] = str(_slug_or_none(folder))
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise DatasetError(
            f"--source {root}: class folders {unknown} are not in catalogue {catalogue.name!r};"
            f" expected folder names (or their slugs, or display names) from {list(catalogue.names)}"
            " (or a --clean-folder)"
        )
    owners: dict[str, str] = {}
    for folder, label in labels.items():
        if label in owners:
            raise DatasetError(
                f"--source {root}: class folders {owners[label]!r} and {folder!r} both name class"
                f" {label!r} of catalogue {catalogue.name!r}; keep one folder per class"
            )
        owners[label] = folder
    return labels


def iter_folder_tiles(
    dataset: FolderDataset, *, tile: int = DEFAULT_TILE, progress: bool = True
) -> Iterator[LabelledTile]:
    """Yield every tile of every image, labelled with its folder's class (none for clean images),
    with its part when the data set keeps a split."""
    for item in tqdm(dataset.images, desc="folders", unit="image", disable=not progress):
        image, _ = upscale_to_tile(read_grey(item.path), tile)
        windows = tile_windows(image.shape[0], image.shape[1], tile)
        labels = frozenset() if item.label is None else frozenset({item.label})
        for window, pixels in zip(windows, cut_tiles(image, windows), strict=True):
            yield LabelledTile(pixels, item.source, window.x, window.y, labels, part=item.part)
