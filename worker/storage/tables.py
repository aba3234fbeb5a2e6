"""The defect database's tables (SQLAlchemy Core): the one description of the schema in Python.

Alembic migrations in `migrations/` create these tables (never `metadata.create_all`), and
`alembic check` (run in the tests) fails when this file and the migrations disagree. Every time is
`timestamptz`. Constraint names follow `NAMING_CONVENTION`, so migrations can name what they drop.

Tables: `defect_classes` (the catalogue, id = catalogue id), `models` (version = sha256 of the
weights), `frames` (ledger of processed frames, one row per frame id, with the pass of the strip
it shows), `detections` (one row per frame, tile and class over threshold), `alerts` (cause-linked
alerts; an outbox for the alerts topic via `published_at`), `tile_images` (the evidence crop of
each tile with a detection, partitioned by month), `console_users`, `console_sessions` and
`reviews` (the console's users, their logged-in sessions, and their verdicts on crops),
`alert_strip_locks` (one row per strip, locked FOR UPDATE to serialise alert evaluation and the
pass inference of a strip's new frames), `camera_health` (each camera's run of frames failing the
image-quality gate). Views and the roles `steel_analyst` (read-only) and `steel_worker` (what the
worker needs, nothing more) live in the migrations.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Read-only role for analysts: SELECT on every table and view except `alert_strip_locks`, nothing else.
ANALYST_ROLE = "steel_analyst"
#: The worker's role: SELECT and INSERT where it writes, UPDATE where it upserts or marks; no DELETE,
#: TRUNCATE or DDL (revision 0003 lists the grants).
WORKER_ROLE = "steel_worker"
#: The console's role: a member of steel_analyst (read-only pages run as it), plus its users, reviews
#: and the acknowledgement columns of alerts (revision 0006), its sessions and the schema revision
#: (revision 0009).
CONSOLE_ROLE = "steel_console"

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _timestamp(
    name: str, *, nullable: bool = False, default_now: bool = False, comment: str | None = None
) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.TIMESTAMP(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default_now else None,
        comment=comment,
    )


defect_classes = sa.Table(
    "defect_classes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False, comment="catalogue id"),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("features", sa.Text, nullable=False, server_default=""),
    sa.Column("type", sa.Text, nullable=False, server_default=""),
    sa.Column("cause", sa.Text, nullable=False, server_default=""),
    sa.Column("automatic_inspection", sa.Text, nullable=False, server_default=""),
    sa.Column("prevention", sa.Text, nullable=False, server_default=""),
    sa.Column(
        "display_name",
        sa.Text,
        nullable=False,
        comment="the class as people name it (reports, alerts, console); name is the machine name",
    ),
    comment="The defect catalogue: each class with its cause and preventive action",
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("version", sa.Text, primary_key=True, comment="sha256 of the weights file"),
    sa.Column("backbone", sa.Text, nullable=False),
    sa.Column("input_size", sa.Integer, nullable=False, comment="tile side in pixels fed to the network"),
    sa.Column("class_names", ARRAY(sa.Text), nullable=False, comment="output order of the network"),
    sa.Column("thresholds", JSONB, nullable=False, comment="class name -> decision threshold"),
    sa.Column("metrics", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    _timestamp("registered_at", default_now=True),
    comment="Classifier versions that wrote detections",
)

frames = sa.Table(
    "frames",
    metadata,
    sa.Column("frame_id", sa.Text, primary_key=True),
    sa.Column("strip_id", sa.Text, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("camera", sa.Text, nullable=False),
    sa.Column("surface", sa.Text, nullable=False),
    _timestamp("captured_at"),
    sa.Column("position_m", sa.Float, nullable=False, comment="along the strip, of the frame's first row"),
    sa.Column("length_m", sa.Float, nullable=True, comment="extent along the strip"),
    sa.Column("width_mm", sa.Float, nullable=True, comment="extent across the strip"),
    sa.Column("model_version", sa.Text, sa.ForeignKey("models.version"), nullable=False),
    sa.Column("kafka_topic", sa.Text, nullable=False),
    sa.Column("kafka_partition", sa.Integer, nullable=False),
    sa.Column("kafka_offset", sa.BigInteger, nullable=False),
    sa.Column("tile_count", sa.Integer, nullable=False),
    sa.Column("detection_count", sa.Integer, nullable=False),
    _timestamp("processed_at"),
    sa.Column(
        "message_sha256",
        sa.Text,
        nullable=True,
        comment=(
            "sha256 hex of the frame message's frame-meta header bytes followed by its value;"
            " NULL for frames written before revision 0003"
        ),
    ),
    sa.Column(
        "quality_flags",
        ARRAY(sa.Text),
        nullable=False,
        server_default=sa.text("'{}'::text[]"),
        comment=(
            "image-quality checks the frame failed (dark, bright, flat, clipped, bit-depth, clock-skew);"
            " empty for a good frame; the alert rules skip the detections of a frame with an image flag"
        ),
    ),
    # revision 0008: the pass of the strip (a strip id rolled again is another pass)
    sa.Column(
        "pass_id",
        sa.Text,
        nullable=False,
        server_default="1",
        comment=(
            "the pass of the strip this frame shows: frame-meta's pass_id, or the number inferred when"
            " it was stored ('1', '2', ...; see pass_inferred)"
        ),
    ),
    sa.Column(
        "pass_inferred",
        sa.Boolean,
        nullable=False,
        server_default=sa.true(),
        comment="true: pass_id was inferred by the worker; false: the camera sent it",
    ),
    sa.CheckConstraint("tile_count >= 0 AND detection_count >= 0", name="counts_not_negative"),
    sa.Index("ix_frames_strip_id_position_m", "strip_id", "position_m"),
    sa.Index("ix_frames_strip_id_pass_id_surface_position_m", "strip_id", "pass_id", "surface", "position_m"),
    sa.Index("ix_frames_strip_id_pass_id_captured_at", "strip_id", "pass_id", "captured_at"),
    comment="Ledger of processed frames: one row per frame id, written with its detections",
)

detections = sa.Table(
    "detections",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("frame_id", sa.Text, sa.ForeignKey("frames.frame_id", ondelete="CASCADE"), nullable=False),
    sa.Column("tile_index", sa.Integer, nullable=False),
    sa.Column("class_id", sa.Integer, sa.ForeignKey("defect_classes.id"), nullable=False),
    sa.Column("confidence", sa.REAL, nullable=False),
    sa.Column("threshold", sa.REAL, nullable=False, comment="the class threshold the model used"),
    sa.Column("along_m", sa.Float, nullable=False, comment="tile centre, metres from the strip head"),
    sa.Column("across_mm", sa.Float, nullable=False, comment="tile centre, mm from the strip edge"),
    sa.Column("along_start_m", sa.Float, nullable=False),
    sa.Column("along_end_m", sa.Float, nullable=False),
    sa.Column("x", sa.Integer, nullable=False, comment="tile window in frame pixels"),
    sa.Column("y", sa.Integer, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    _timestamp("created_at", default_now=True),
    sa.UniqueConstraint("frame_id", "tile_index", "class_id"),
    sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
    sa.Index("ix_detections_class_id_created_at", "class_id", "created_at"),
    comment="One row per frame, tile and class found over its threshold",
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.Text, nullable=False, unique=True),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column(
        "class_id",
        sa.Integer,
        sa.ForeignKey("defect_classes.id"),
        nullable=True,
        comment="the class of the evidence; NULL for camera alerts (rule_kind camera)",
    ),
    sa.Column("strip_id", sa.Text, nullable=False),
    sa.Column("roll", sa.Text, nullable=True, comment="roll named by a periodic (roll mark) alert"),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("position_start_m", sa.Float, nullable=False),
    sa.Column("position_end_m", sa.Float, nullable=False),
    sa.Column("detection_count", sa.Integer, nullable=False),
    sa.Column("pitch_m", sa.REAL, nullable=True),
    sa.Column("evidence", ARRAY(sa.BigInteger), nullable=False, comment="detection ids"),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    # revision 0004: what every alert has, out of `details` (which keeps what the rule measured)
    sa.Column("rule_kind", sa.Text, nullable=False, comment="the kind of the rule: density, periodic, ..."),
    sa.Column("surface", sa.Text, nullable=False, comment="strip surface the evidence was seen on"),
    sa.Column("line", sa.Text, nullable=False, comment="line of the evidence's first camera"),
    sa.Column("camera", sa.Text, nullable=False, comment="camera of the evidence (the first by name)"),
    sa.Column("frame_ids", ARRAY(sa.Text), nullable=False, comment="frames of the evidence, sorted"),
    sa.Column("max_confidence", sa.REAL, nullable=False, comment="highest confidence of the evidence"),
    sa.Column("model_version", sa.Text, nullable=False, comment="model version of the evidence (the newest)"),
    _timestamp(
        "observed_at",
        nullable=True,
        comment="capture time of the evidence that completed the finding; NULL when unknown",
    ),
    _timestamp("created_at", default_now=True),
    _timestamp("published_at", nullable=True),
    sa.Column("acknowledged_by", sa.Text, nullable=True),
    _timestamp("acknowledged_at", nullable=True),
    sa.Column(
        "publish_error",
        sa.Text,
        nullable=True,
        comment=(
            "why the alert could not be put on the alerts topic, when the broker refused it"
            " permanently; published_at is then set too so it is not retried forever"
        ),
    ),
    sa.Column(
        "pass_id",
        sa.Text,
        nullable=False,
        server_default="1",
        comment="the pass of the strip the alert's evidence was seen on (frames.pass_id)",
    ),
    sa.CheckConstraint("max_confidence >= 0 AND max_confidence <= 1", name="max_confidence_range"),
    sa.CheckConstraint("class_id IS NOT NULL OR rule_kind = 'camera'", name="class_unless_camera"),
    sa.Index("ix_alerts_strip_id_class_id_created_at", "strip_id", "class_id", "created_at"),
    sa.Index(
        "ix_alerts_unpublished",
        "created_at",
        postgresql_where=sa.text("published_at IS NULL"),
    ),
    comment="Cause-linked alerts; published_at is set once the alert is on the alerts topic",
)

#: Partitions of `tile_images` are named `tile_images_<YYYY>_<MM>` (one per month of `created_at`)
#: and `tile_images_default` (what no month partition holds); `worker.storage.partitions` makes
#: and drops them. They are not in this metadata: the migrations' drift check skips them.
TILE_IMAGES_PARTITION_PREFIX = "tile_images_"

tile_images = sa.Table(
    "tile_images",
    metadata,
    sa.Column("frame_id", sa.Text, sa.ForeignKey("frames.frame_id", ondelete="CASCADE"), nullable=False),
    sa.Column("tile_index", sa.Integer, nullable=False),
    _timestamp("created_at", default_now=True, comment="when the crop was stored: the partition key"),
    sa.Column("x", sa.Integer, nullable=False, comment="tile window in frame pixels"),
    sa.Column("y", sa.Integer, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer, nullable=False, comment="of the stored image, pixels"),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("sampled", sa.Boolean, nullable=False, comment="a clean tile kept for quality control"),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("frame_id", "tile_index", "created_at"),
    sa.CheckConstraint(
        "width > 0 AND height > 0 AND size > 0 AND octet_length(image) > 0", name="image_not_empty"
    ),
    comment=(
        "The crop of each tile with a detection (and of a sample of clean tiles) as the model saw it,"
        " stored with the frame's detections; partitioned by month of created_at"
    ),
    postgresql_partition_by="RANGE (created_at)",
)

#: The console's roles, each with the rights of the one before: read; + review crops; + acknowledge
#: alerts; + everything (users).
CONSOLE_ROLES = ("viewer", "reviewer", "maintenance", "admin")
#: What a review says of a crop: the model's classes are right, nothing is there, or these are.
VERDICTS = ("confirm", "reject", "correct")

console_users = sa.Table(
    "console_users",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False, comment="Argon2id; never the password"),
    _timestamp("created_at", default_now=True),
    _timestamp("disabled_at", nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'reviewer', 'maintenance', 'admin')", name="known_role"),
    comment="Who may log in to the console, and as what",
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column(
        "token_sha256",
        sa.Text,
        primary_key=True,
        comment="sha256 hex of the session cookie's token; never the token",
    ),
    sa.Column(
        "user_name",
        sa.Text,
        sa.ForeignKey("console_users.name", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    _timestamp("created_at", default_now=True),
    _timestamp("expires_at"),
    comment=(
        "Logged-in console sessions, one per browser: logout, a new password or role, or"
        " disabling the user deletes them"
    ),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("frame_id", sa.Text, sa.ForeignKey("frames.frame_id", ondelete="CASCADE"), nullable=False),
    sa.Column("tile_index", sa.Integer, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column(
        "labels", ARRAY(sa.Text), nullable=False, comment="the classes on the crop, as the reviewer says"
    ),
    sa.Column("model_version", sa.Text, nullable=False, comment="the model that made the detections"),
    sa.Column("reviewer", sa.Text, nullable=False),
    _timestamp("reviewed_at", default_now=True),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    _timestamp(
        "published_at",
        nullable=True,
        comment="when the review went out on the reviews topic (NULL: not yet, or no topic)",
    ),
    sa.CheckConstraint("verdict IN ('confirm', 'reject', 'correct')", name="known_verdict"),
    sa.Index("ix_reviews_frame_id_tile_index_reviewed_at", "frame_id", "tile_index", "reviewed_at"),
    sa.Index("ix_reviews_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
    comment="People's verdicts on evidence crops; the newest per crop counts",
)

alert_strip_locks = sa.Table(
    "alert_strip_locks",
    metadata,
    sa.Column("strip_id", sa.Text, primary_key=True),
    _timestamp("created_at", default_now=True),
    comment=(
        "One row per strip whose alerts were evaluated; rows are locked FOR UPDATE to serialise"
        " evaluation; the analysts' role has no privilege on it, so it cannot take these locks"
    ),
)

camera_health = sa.Table(
    "camera_health",
    metadata,
    sa.Column("line", sa.Text, primary_key=True),
    sa.Column("camera", sa.Text, primary_key=True),
    sa.Column(
        "run_frames",
        sa.Integer,
        nullable=False,
        server_default="0",
        comment="frames in the camera's run of flagged or refused frames (0: its last frame was good)",
    ),
    sa.Column("run_refused", sa.Integer, nullable=False, server_default="0", comment="of them refused"),
    sa.Column(
        "run_flags",
        JSONB,
        nullable=False,
        server_default=sa.text("'{}'::jsonb"),
        comment="image-quality check -> frames of the run that failed it",
    ),
    sa.Column(
        "run_first",
        sa.Text,
        nullable=True,
        comment="Kafka coordinates of the run's first frame (topic[p]@offset)",
    ),
    sa.Column(
        "run_evidence",
        JSONB,
        nullable=False,
        server_default=sa.text("'[]'::jsonb"),
        comment="the run's first CAMERA_ALERT_FRAMES frames: frame id, strip, surface, position",
    ),
    sa.Column(
        "alert_id",
        sa.BigInteger,
        sa.ForeignKey("alerts.id", ondelete="SET NULL"),
        nullable=True,
        comment="the camera alert this run raised; NULL while it has not",
    ),
    sa.Column(
        "positions",
        JSONB,
        nullable=False,
        server_default=sa.text("'{}'::jsonb"),
        comment="topic[partition] -> the next offset to count: a frame read again is not counted twice",
    ),
    _timestamp("updated_at", default_now=True),
    sa.CheckConstraint(
        "run_frames >= 0 AND run_refused >= 0 AND run_refused <= run_frames", name="run_counts"
    ),
    comment=(
        "The image-quality state of each camera: its current run of flagged or refused frames, and the"
        " camera alert the run raised (worker.alerts.camera); rows are locked FOR UPDATE while a batch"
        " is counted"
    ),
)
