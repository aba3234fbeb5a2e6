"""A folder per class → labelled tiles.

Layout: `SOURCE/<class name>/*.png|jpg|...`, one folder per defect class, plus an optional folder of
defect-free images (`clean` by default). Every tile of an image in `holes/` is labelled `holes` (the
folder names the image's class, not where in the image the defect is), every tile of a clean image
has no label.

Catalogue: with an explicit catalogue every class folder must name one of its classes. Without one,
the default catalogue (the paper's Table 1) is used when it lists every folder name; otherwise a
catalogue is built from the folder names, sorted (`Catalogue.from_names`).

Sizes: an image whose shorter side is below the tile is resized up (bicubic, aspect kept) so that
side equals the tile — a 200×200 image becomes 256×256 at tile 256. Larger images are cut into
tiles that cover every pixel (overlapping where a side is not a multiple of the tile).

Tile sources are named `<folder>__<file name>` so that images with the same file name in different
folders get distinct tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import CatalogueError, DatasetError
from worker.core.tiling import cut_tiles, tile_windows
from worker.datasets.labelled import DEFAULT_TILE, LabelledTile, list_images, read_grey, upscale_to_tile

DEFAULT_CLEAN_FOLDER = "clean"


@dataclass(frozen=True)
class FolderImage:
    """One image of a folder data set and its class (None for a defect-free image)."""

    path: Path
    label: str | None

    @property
    def source(self) -> str:
        return f"{self.path.parent.name}__{self.path.name}"


@dataclass(frozen=True)
class FolderDataset:
    """A scanned folder data set: the catalogue its labels use, and its images in a stable order."""

    root: Path
    catalogue: Catalogue
    images: tuple[FolderImage, ...]


def scan_folders(
    source: str | Path, catalogue: Catalogue | None = None, clean_folder: str | None = None
) -> FolderDataset:
    """Find the class folders and their images under `source`, and settle the catalogue.

    `clean_folder` names the folder of defect-free images; None means `clean` when it exists.
    DatasetError for a missing source, a named clean folder that does not exist, folders that do
    not match the given catalogue, folder names that are not valid class names, or no images.
    """
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(f"--source {root}: expected a folder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if clean_folder is None:
        clean_name = DEFAULT_CLEAN_FOLDER if (root / DEFAULT_CLEAN_FOLDER).is_dir() else None
    else:
        if not (root / clean_folder).is_dir():
            raise DatasetError(
                f"--clean-folder {clean_folder!r}: expected a folder {root / clean_folder}, none found;"
                f" folders present: {[p.name for p in folders]}"
            )
        clean_name = clean_folder
    class_names = [p.name for p in folders if p.name != clean_name]
    if not class_names:
        raise DatasetError(
            f"--source {root}: expected at least one class folder, found {[p.name for p in folders]}"
        )
    catalogue = _settle_catalogue(root, class_names, catalogue)
    images = [
        FolderImage(path, None if folder.name == clean_name else folder.name)
        for folder in folders
        for path in list_images(folder)
    ]
    if not images:
        raise DatasetError(f"--source {root}: empty data set, no image files in {[p.name for p in folders]}")
    return FolderDataset(root=root, catalogue=catalogue, images=tuple(images))


def _settle_catalogue(root: Path, names: list[str], catalogue: Catalogue | None) -> Catalogue:
    if catalogue is not None:
        unknown = [n for n in names if n not in catalogue.names]
        if unknown:
            raise DatasetError(
                f"--source {root}: class folders {unknown} are not in catalogue {catalogue.name!r};"
                f" expected folder names from {list(catalogue.names)} (or a --clean-folder)"
            )
        return catalogue
    default = load_catalogue()
    if all(n in default.names for n in names):
        return default
    try:
        return Catalogue.from_names(sorted(names), name=root.name)
    except CatalogueError as exc:
        raise DatasetError(f"--source {root}: folder names must be valid class names: {exc}") from None


def iter_folder_tiles(
    dataset: FolderDataset, *, tile: int = DEFAULT_TILE, progress: bool = True
) -> Iterator[LabelledTile]:
    """Yield every tile of every image, labelled with its folder's class (none for clean images)."""
    for item in tqdm(dataset.images, desc="folders", unit="image", disable=not progress):
        image, _ = upscale_to_tile(read_grey(item.path), tile)
        windows = tile_windows(image.shape[0], image.shape[1], tile)
        labels = frozenset() if item.label is None else frozenset({item.label})
        for window, pixels in zip(windows, cut_tiles(image, windows), strict=True):
            yield LabelledTile(pixels, item.source, window.x, window.y, labels)
