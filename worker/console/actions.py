"""What the console writes: a review of a crop, and an alert's acknowledgement (the same rule as
`steel-worker alerts ack`: who and when, never overwritten). Both run as the console's role."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from worker.alerts.store import AlertRecord, acknowledge
from worker.core.errors import ConfigError
from worker.storage.tables import VERDICTS, reviews

MAX_NOTE_CHARS = 2000


def record_review(
    engine: sa.Engine,
    frame_id: str,
    tile_index: int,
    *,
    verdict: str,
    labels: Sequence[str],
    reviewer: str,
    note: str = "",
) -> list[str]:
    """Store a review of the crop (frame_id, tile_index); returns the labels stored.

    `confirm` stores the classes the model found on the tile, `reject` none, `correct` exactly
    `labels` (at least one: a tile with none is `reject`). ConfigError (the page shows it) when the
    crop does not exist, the verdict is unknown, a label is not a class of the catalogue, or the
    note is too long.
    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict: expected one of {', '.join(VERDICTS)}, received {verdict[:40]!r}")
    if len(note) > MAX_NOTE_CHARS:
        raise ConfigError(f"note: at most {MAX_NOTE_CHARS} characters, received {len(note)}")
    with engine.begin() as conn:
        found = conn.execute(
            sa.text(
                "SELECT f.model_version FROM tile_images AS i JOIN frames AS f ON f.frame_id = i.frame_id"
                " WHERE i.frame_id = :f AND i.tile_index = :t LIMIT 1"
            ),
            {"f": frame_id, "t": tile_index},
        ).first()
        if found is None:
            raise ConfigError(f"no crop of tile {tile_index} of frame {frame_id[:200]!r} is stored")
        known = list(conn.execute(sa.text("SELECT name FROM defect_classes ORDER BY id")).scalars())
        detected = list(
            conn.execute(
                sa.text(
                    "SELECT c.name FROM detections AS d JOIN defect_classes AS c ON c.id = d.class_id"
                    " WHERE d.frame_id = :f AND d.tile_index = :t ORDER BY c.id"
                ),
                {"f": frame_id, "t": tile_index},
            ).scalars()
        )
        if verdict == "confirm":
            stored = detected
        elif verdict == "reject":
            stored = []
        else:
            unknown = sorted(set(labels) - set(known))
            if unknown:
                raise ConfigError(f"labels: {[u[:40] for u in unknown]} are not classes (known: {known})")
            if not labels:
                raise ConfigError("correct: name at least one class (a tile with none: reject)")
            stored = [name for name in known if name in set(labels)]
        conn.execute(
            sa.insert(reviews).values(
                frame_id=frame_id,
                tile_index=tile_index,
                verdict=verdict,
                labels=stored,
                model_version=found.model_version,
                reviewer=reviewer,
                note=note.strip(),
            )
        )
    return stored


def acknowledge_alert(engine: sa.Engine, alert_id: int, by: str) -> AlertRecord:
    """`alerts.store.acknowledge`: ConfigError when there is no such alert or it was acknowledged."""
    return acknowledge(engine, alert_id, by)
