"""Pascal VOC annotations (the NEU-DET layout) → labelled tiles.

Layout: `SOURCE/images/` (or `JPEGImages/`) and `SOURCE/annotations/` (or `Annotations/`), one XML
file per image with the same stem. The classes of an image are the `<object><name>` of its boxes,
lower-cased with spaces replaced by `_` (NEU's `rolled-in_scale` stays as it is). An XML without
objects marks a defect-free image; an image without an XML is an error.

Sizes: an image whose shorter side is below the tile is resized up (bicubic, aspect kept) so that
side equals the tile, boxes scaled with it — NEU-DET's 200×200 images become single 256×256 tiles
at tile 256, labelled with all their boxes' classes. A larger image is cut into tiles; a box's class
is on a tile when the tile holds at least `min_pixels` pixels of the box, or all of a smaller box.

Catalogue: with an explicit catalogue every class name must be in it; without one a catalogue is
built from the class names found, sorted (`Catalogue.from_names`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError, DatasetError
from worker.core.tiling import TileWindow, cut_tiles, tile_windows
from worker.datasets.labelled import (
    DEFAULT_MIN_PIXELS,
    DEFAULT_TILE,
    LabelledTile,
    list_images,
    read_grey,
    upscale_to_tile,
)

IMAGE_DIRS = ("images", "JPEGImages")
ANNOTATION_DIRS = ("annotations", "Annotations")


@dataclass(frozen=True)
class VocBox:
    """One annotated object: class name and pixel box, 0-indexed, right and bottom exclusive.

    A VOC object without `<bndbox>` covers the whole image (`whole` is True, coordinates unused).
    """

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    whole: bool = False


@dataclass(frozen=True)
class VocImage:
    path: Path
    annotation: Path
    boxes: tuple[VocBox, ...]


@dataclass(frozen=True)
class VocDataset:
    root: Path
    catalogue: Catalogue
    images: tuple[VocImage, ...]


def normalise_name(name: str) -> str:
    """Class names as the catalogue spells them: trimmed, lower case, spaces as `_`."""
    return "_".join(name.strip().lower().split())


def parse_annotation(path: Path) -> tuple[VocBox, ...]:
    """The boxes of one VOC XML file; DatasetError names the file and what is wrong."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"cannot read VOC annotation {path}: {exc}") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: expected an <annotation> root element, received <{root.tag}>")
    boxes = []
    for i, obj in enumerate(root.findall("object")):
        name = normalise_name(obj.findtext("name") or "")
        if not name:
            raise DatasetError(f"{path}: <object> #{i + 1} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            boxes.append(VocBox(name, 0, 0, 0, 0, whole=True))
            continue
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DatasetError(
                f"{path}: <object> #{i + 1} ({name}) needs numeric xmin, ymin, xmax, ymax in <bndbox>"
            ) from None
        if xmax < xmin or ymax < ymin:
            raise DatasetError(
                f"{path}: <object> #{i + 1} ({name}) box has max < min: {(xmin, ymin, xmax, ymax)}"
            )
        # VOC pixel coordinates are 1-based and inclusive.
        boxes.append(VocBox(name, xmin - 1, ymin - 1, xmax, ymax))
    return tuple(boxes)


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"--source {root}: expected a folder of {what} named one of {list(names)}")


def scan_voc(source: str | Path, catalogue: Catalogue | None = None) -> VocDataset:
    """Pair every image with its XML, read the boxes, and settle the catalogue.

    DatasetError for missing folders, an image without an XML, a malformed XML, class names not in
    the given catalogue (or not valid class names), or no images.
    """
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(f"--source {root}: expected a VOC folder with images/ and annotations/")
    images_dir = _find_dir(root, IMAGE_DIRS, "images")
    annotations_dir = _find_dir(root, ANNOTATION_DIRS, "VOC XML annotations")
    items = []
    for path in list_images(images_dir):
        xml = annotations_dir / f"{path.stem}.xml"
        if not xml.is_file():
            raise DatasetError(f"image {path} has no annotation: expected {xml}")
        items.append(VocImage(path, xml, parse_annotation(xml)))
    if not items:
        raise DatasetError(f"--source {root}: empty data set, no image files in {images_dir}")
    found = sorted({b.name for item in items for b in item.boxes})
    if catalogue is None:
        if not found:
            raise DatasetError(
                f"--source {root}: no annotated objects, so no classes to build a catalogue from"
            )
        try:
            catalogue = Catalogue.from_names(found, name=root.name)
        except CatalogueError as exc:
            raise DatasetError(f"--source {root}: VOC class names must be valid class names: {exc}") from None
    else:
        unknown = [n for n in found if n not in catalogue.names]
        if unknown:
            where = next(i.annotation for i in items if any(b.name in unknown for b in i.boxes))
            raise DatasetError(
                f"--source {root}: classes {unknown} (e.g. in {where}) are not in catalogue"
                f" {catalogue.name!r}; expected names from {list(catalogue.names)}"
            )
    return VocDataset(root=root, catalogue=catalogue, images=tuple(items))


def box_labels(
    boxes: tuple[VocBox, ...], windows: list[TileWindow], scale: float, min_pixels: int
) -> list[set[str]]:
    """Per window, the classes of boxes (scaled by `scale`) that put enough pixels in it.

    Enough: at least `min_pixels`, or the whole box when it is smaller than that.
    """
    labels: list[set[str]] = [set() for _ in windows]
    for box in boxes:
        if box.whole:
            for label in labels:
                label.add(box.name)
            continue
        x0, y0, x1, y1 = (v * scale for v in (box.x0, box.y0, box.x1, box.y1))
        need = min(float(min_pixels), (x1 - x0) * (y1 - y0))
        for label, w in zip(labels, windows, strict=True):
            dx = min(x1, w.x + w.size) - max(x0, w.x)
            dy = min(y1, w.y + w.size) - max(y0, w.y)
            if dx > 0 and dy > 0 and dx * dy >= need:
                label.add(box.name)
    return labels


def iter_voc_tiles(
    dataset: VocDataset,
    *,
    tile: int = DEFAULT_TILE,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    progress: bool = True,
) -> Iterator[LabelledTile]:
    """Yield every tile of every image with the classes of the boxes it holds."""
    for item in tqdm(dataset.images, desc="voc", unit="image", disable=not progress):
        image, scale = upscale_to_tile(read_grey(item.path), tile)
        windows = tile_windows(image.shape[0], image.shape[1], tile)
        labels = box_labels(item.boxes, windows, scale, min_pixels)
        for window, pixels, classes in zip(windows, cut_tiles(image, windows), labels, strict=True):
            yield LabelledTile(pixels, item.path.name, window.x, window.y, frozenset(classes))
