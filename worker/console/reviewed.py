"""The reviewed crops as a tile set: what people said in the console, ready for `steel-worker train`.

`write_reviewed_tileset` (the command `steel-worker dataset --format reviews`) writes one tile per
reviewed crop, in the layout of `worker.core.tileset`. Guarantees:

- The labels are those of the crop's NEWEST review (reviewed_at, then id, descending); older
  reviews of the crop are history and are ignored. A `confirm` keeps the model's classes, a
  `correct` the reviewer's, and a `reject` gives a clean tile (all-zero labels): exactly the false
  positives the model must unlearn.
- Only reviewed crops are exported; a crop nobody reviewed is not a label.
- The tile's pixels are the stored crop, decoded (JPEG) and written losslessly (PNG): the pixels
  the reviewer saw. `source` is the frame id (characters other than letters, digits, '-' and '_'
  percent-encoded, so that the tile's file name is safe and unique); x, y are the tile's origin in
  the frame. Tile names are `tiles/<source>_x<x>_y<y>.png`.
- A review whose crop is gone (its month pruned by `steel-worker db prune`) is skipped and
  counted in the summary; it never fails the export.
- The catalogue is the database's `defect_classes` in id order (or one the caller passes); a
  review naming a class outside it fails the export (DatasetError), as does a database without
  any reviewed crop, or one whose reviewed crops are all pruned.
- Everything is read in one READ ONLY, REPEATABLE READ transaction: a consistent snapshot, and
  no write to the database. A read-only login (role `steel_analyst`) is enough.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from worker.core.catalogue import Catalogue, DefectClass, load_catalogue
from worker.core.errors import CatalogueError, DatasetError, InfrastructureError
from worker.core.evidence import decode
from worker.datasets.labelled import ImportSummary, LabelledTile, write_tileset
from worker.storage.engine import create_engine

#: The newest review of each reviewed crop, with the crop (NULL columns when it was pruned).
_NEWEST_REVIEWS = """
WITH newest AS (
    SELECT DISTINCT ON (frame_id, tile_index) id, frame_id, tile_index, verdict, labels
    FROM reviews ORDER BY frame_id, tile_index, reviewed_at DESC, id DESC
)
SELECT n.id AS review_id, n.frame_id, n.tile_index, n.verdict, n.labels, i.x, i.y, i.image
FROM newest AS n
LEFT JOIN LATERAL (
    SELECT t.x, t.y, t.image FROM tile_images AS t
    WHERE t.frame_id = n.frame_id AND t.tile_index = n.tile_index
    ORDER BY t.created_at DESC LIMIT 1
) AS i ON true
ORDER BY n.frame_id, n.tile_index
"""

_COUNT_REVIEWED = """
SELECT count(*) AS reviewed,
       count(*) FILTER (WHERE EXISTS (
           SELECT FROM tile_images AS t WHERE t.frame_id = n.frame_id AND t.tile_index = n.tile_index
       )) AS with_crop
FROM (SELECT DISTINCT frame_id, tile_index FROM reviews) AS n
"""

_SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_SOURCE_LENGTH = 120


def safe_source(frame_id: str) -> str:
    """A file-name-safe, unique stand-in for `frame_id`: itself when it holds only letters, digits,
    '-' and '_' (the usual ids); else each other character's UTF-8 bytes as %XX (reversible with
    `urllib.parse.unquote`). Names longer than 120 characters are cut to 100 plus '~' and a hash of
    the frame id ('~' never appears otherwise, so the two forms cannot collide)."""
    encoded = _SAFE_CHARACTERS.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), frame_id
    )
    if len(encoded) <= _MAX_SOURCE_LENGTH:
        return encoded
    digest = hashlib.blake2b(frame_id.encode("utf-8"), digest_size=8).hexdigest()
    return f"{encoded[:100]}~{digest}"


@dataclass
class ReviewTally:
    """What `reviewed_tiles` has seen so far: tiles exported per newest verdict, and reviewed crops
    skipped because their crop was pruned."""

    verdicts: Counter[str] = field(default_factory=Counter)
    pruned: int = 0


@dataclass(frozen=True)
class ReviewedSummary(ImportSummary):
    """An import's summary, plus the newest verdicts of the exported crops and how many reviewed
    crops were skipped because their crop was pruned."""

    verdicts: dict[str, int] = field(default_factory=dict)
    pruned: int = 0

    def table(self) -> str:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(self.verdicts.items())) or "none"
        lines = [
            super().table(),
            "",
            f"newest verdicts of the exported crops: {verdicts}",
            f"reviewed crops skipped, their crop pruned: {self.pruned}",
        ]
        return "\n".join(lines)


@contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a READ ONLY, REPEATABLE READ transaction (one snapshot), rolled back after.

    InfrastructureError when the database cannot be reached."""
    try:
        conn = engine.connect()
    except sa.exc.OperationalError as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise InfrastructureError(f"cannot reach the database {url}: {exc.orig}") from None
    with conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as transaction:
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            yield conn
            transaction.rollback()


def database_catalogue(conn: sa.Connection) -> Catalogue:
    """The database's `defect_classes` as a catalogue, in id order (the order of the tile set's
    label columns); the default catalogue when the table is empty. DatasetError when the stored
    classes do not make a valid catalogue."""
    rows = conn.execute(
        sa.text(
            "SELECT id, name, features, type, cause, automatic_inspection, prevention, display_name"
            " FROM defect_classes ORDER BY id"
        )
    ).mappings()
    classes = tuple(DefectClass(**row) for row in rows)
    if not classes:
        return load_catalogue()
    try:
        return Catalogue(classes=classes, name="database", description="the defect database's classes")
    except CatalogueError as exc:
        raise DatasetError(f"the database's defect_classes are not a valid catalogue: {exc}") from None


def reviewed_tiles(
    conn: sa.Connection, catalogue: Catalogue, tally: ReviewTally | None = None
) -> Iterator[LabelledTile]:
    """One tile per reviewed crop that still exists, labelled with its newest review's classes
    (none for `reject`), in (frame id, tile index) order; rows are streamed, not loaded at once.

    Reviewed crops whose crop was pruned are skipped and counted in `tally.pruned`. DatasetError
    names the review when its labels name a class the catalogue lacks, or its crop is not an image.
    """
    tally = tally if tally is not None else ReviewTally()
    rows = conn.execute(sa.text(_NEWEST_REVIEWS), execution_options={"stream_results": True, "yield_per": 64})
    for row in rows.mappings():
        if row["image"] is None:
            tally.pruned += 1
            continue
        where = f"review {row['review_id']} of tile {row['tile_index']} of frame {row['frame_id']!r}"
        labels = frozenset() if row["verdict"] == "reject" else frozenset(row["labels"])
        unknown = sorted(labels - set(catalogue.names))
        if unknown:
            raise DatasetError(
                f"{where}: labels {unknown} are not in the catalogue {catalogue.name!r};"
                f" expected classes among {list(catalogue.names)}"
            )
        try:
            image = decode(bytes(row["image"]))
        except ValueError as exc:
            raise DatasetError(f"{where}: the stored crop cannot be decoded: {exc}") from None
        tally.verdicts[row["verdict"]] += 1
        yield LabelledTile(
            image=image,
            source=safe_source(row["frame_id"]),
            x=int(row["x"]),
            y=int(row["y"]),
            labels=labels,
        )


def write_reviewed_tileset(
    database_url: str,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    catalogue: Catalogue | None = None,
) -> ReviewedSummary:
    """Write the reviewed crops of the database at `database_url` as a tile set in `out_dir`.

    The catalogue is `catalogue`, else the database's (see `database_catalogue`). DatasetError,
    before anything is written, when no crop was reviewed or every reviewed crop was pruned;
    ConfigError (from `write_tileset`) for a non-empty `out_dir` without `overwrite`.
    """
    engine = create_engine(database_url)
    try:
        with snapshot(engine) as conn:
            counts = conn.execute(sa.text(_COUNT_REVIEWED)).one()
            if counts.reviewed == 0:
                raise DatasetError(
                    "no reviewed crop in the database: expected at least one review (confirm, reject or"
                    " correct) of a crop in the console, found none"
                )
            if counts.with_crop == 0:
                raise DatasetError(
                    f"all {counts.reviewed} reviewed crops were pruned from tile_images: expected at"
                    " least one reviewed crop whose image is still stored"
                )
            chosen = catalogue if catalogue is not None else database_catalogue(conn)
            tally = ReviewTally()
            summary = write_tileset(reviewed_tiles(conn, chosen, tally), out_dir, chosen, overwrite=overwrite)
    finally:
        engine.dispose()
    return ReviewedSummary(
        out_dir=summary.out_dir,
        catalogue=summary.catalogue,
        frames=summary.frames,
        tiles=summary.tiles,
        class_counts=summary.class_counts,
        combination_counts=summary.combination_counts,
        verdicts=dict(tally.verdicts),
        pruned=tally.pruned,
    )
