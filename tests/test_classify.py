"""Tiling frames, thresholding scores and placing detections on the strip, through the one
inference path (`worker.inference.Inferencer`); batching frames through the real (untrained) model
gives the same detections as classifying each frame alone."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import pytest
from frames import grey_image, make_meta
from streaming_harness import loaded_model, untrained_model

from worker.core.catalogue import load_catalogue
from worker.core.errors import ModelError
from worker.core.records import DecodedFrame, KafkaCoordinates
from worker.core.thresholds import ClassThresholds
from worker.inference import Inferencer
from worker.model.artefact import Classifier
from worker.streaming.batch import Batch, Entry
from worker.streaming.classify import FrameClassifier, detections_for, tile_frame
from worker.streaming.decode import InboundMessage

CATALOGUE = load_catalogue()


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return loaded_model(untrained_model(tmp_path_factory))


@pytest.fixture(scope="session")
def inferencer(classifier: Classifier) -> Inferencer:
    return Inferencer(classifier, tile_size=256)


def _with_thresholds(classifier: Classifier, thresholds: list[float]) -> Inferencer:
    changed = copy.copy(classifier)
    changed.thresholds = ClassThresholds.from_values(classifier.catalogue.names, thresholds)
    return Inferencer(changed, tile_size=256)


def _frame(height: int, width: int, frame_id: str = "f1", offset: int = 0, **meta: object) -> DecodedFrame:
    return DecodedFrame(
        meta=make_meta(frame_id, **meta),
        source=KafkaCoordinates("mill.frames", 0, offset),
        image=grey_image(height, width, seed=offset),
    )


def test_tiles_cover_the_frame_and_hold_its_pixels(inferencer: Inferencer) -> None:
    frame = _frame(256, 600)
    tiled = tile_frame(frame, inferencer)
    assert [(t.index, t.x, t.y, t.size) for t in tiled.tiles] == [
        (0, 0, 0, 256),
        (1, 172, 0, 256),
        (2, 344, 0, 256),
    ]
    assert tiled.pixels.shape == (3, 256, 256)
    np.testing.assert_array_equal(tiled.pixels[1], frame.image[:, 172:428])


def test_detections_are_tiles_at_or_over_each_class_threshold_placed_on_the_strip(
    classifier: Classifier,
) -> None:
    # position 10 m, 0.5 mm per row along, 0.4 mm per column across, left edge 25 mm from the strip edge
    inferencer = _with_thresholds(classifier, [0.5, 0.6, 0.8])
    tiled = tile_frame(_frame(256, 600), inferencer)
    scores = np.array([[0.5, 0.1, 0.9], [0.49, 0.7, np.nan], [0.0, 0.0, 0.0]])
    decisions = inferencer.post_process(scores)
    found = detections_for(tiled, scores, decisions, CATALOGUE, inferencer.thresholds)
    assert [(d.tile_index, d.class_name, d.confidence) for d in found] == [
        (0, "holes", 0.5),  # equal to the threshold counts
        (0, "rolling", 0.9),
        (1, "scratches", 0.7),  # NaN (rolling on tile 1) never counts
    ]
    second = found[2]
    assert second.threshold == 0.6
    assert second.along_start_m == pytest.approx(10.0)
    assert second.along_end_m == pytest.approx(10.0 + 256 * 0.5 / 1000)
    assert second.along_m == pytest.approx(10.0 + 128 * 0.5 / 1000)
    assert second.across_mm == pytest.approx(25.0 + (172 + 128) * 0.4)
    assert (second.x, second.y, second.size) == (172, 0, 256)


def test_a_frame_smaller_than_a_tile_is_padded_and_placed_by_its_real_extent(inferencer: Inferencer) -> None:
    tiled = tile_frame(_frame(100, 300), inferencer)
    assert tiled.pixels.shape == (2, 256, 256)
    found = detections_for(
        tiled,
        np.ones((2, 3)),
        np.ones((2, 3), bool),
        CATALOGUE,
        ClassThresholds.from_values(CATALOGUE.names, [0.5] * 3),
    )
    first = found[0]
    assert first.along_end_m == pytest.approx(10.0 + 100 * 0.5 / 1000)  # 100 rows, not 256
    assert first.along_m == pytest.approx(10.0 + 50 * 0.5 / 1000)


def test_batching_frames_through_the_model_equals_classifying_each_alone(
    classifier: Classifier, inferencer: Inferencer
) -> None:
    frames = [tile_frame(_frame(256, 256 + 100 * i, f"f{i}", offset=i), inferencer) for i in range(4)]
    batched = FrameClassifier(inferencer).classify(frames, datetime.now(UTC))
    assert [r.meta.frame_id for r in batched] == ["f0", "f1", "f2", "f3"]
    assert [r.tile_count for r in batched] == [1, 2, 2, 3]
    for tiled, result in zip(frames, batched, strict=True):
        scores = classifier.predict(tiled.pixels)
        alone = detections_for(
            tiled, scores, inferencer.post_process(scores), classifier.catalogue, inferencer.thresholds
        )
        assert [(d.tile_index, d.class_name) for d in result.detections] == [
            (d.tile_index, d.class_name) for d in alone
        ]
        np.testing.assert_allclose(
            [d.confidence for d in result.detections], [d.confidence for d in alone], rtol=1e-4
        )
        assert result.model_version == classifier.version


def test_a_model_whose_thresholds_do_not_match_its_classes_is_refused(classifier: Classifier) -> None:
    broken = copy.copy(classifier)
    broken.thresholds = ClassThresholds.from_values(("holes", "scratches"), [0.5, 0.5])
    with pytest.raises(ModelError, match="one threshold per class"):
        Inferencer(broken)


def test_a_batch_commits_past_its_last_message_per_partition_and_drops_revoked_ones(
    inferencer: Inferencer,
) -> None:
    def entry(partition: int, offset: int) -> Entry:
        tiled = tile_frame(_frame(256, 256, offset=offset), inferencer)
        message = InboundMessage(KafkaCoordinates("mill.frames", partition, offset), None, None, ())
        return Entry(message=message, outcome=tiled, received_at=0.0)

    batch = Batch([entry(0, 5), entry(1, 7), entry(0, 6), entry(1, 8)])
    offsets = {tp.partition: o for tp, o in batch.next_offsets().items()}
    assert offsets == {0: 7, 1: 9}
    revoked = {next(tp for tp in batch.next_offsets() if tp.partition == 1)}
    assert [e.message.source.offset for e in batch.drop(revoked)] == [7, 8]
    assert {tp.partition: o for tp, o in batch.next_offsets().items()} == {0: 7}


class _RebalancedConsumer:
    """What the loop asks a consumer during a revocation: its assignment now, and seeks."""

    def __init__(self, assigned: set[object]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[int, int]] = []

    def assignment(self) -> set[object]:
        return self.assigned

    def seek(self, tp: object, offset: int) -> None:
        self.seeks.append((tp.partition, offset))  # type: ignore[attr-defined]


def test_a_revoked_partition_assigned_again_is_rewound_to_its_first_dropped_frame(
    inferencer: Inferencer,
) -> None:
    """kafka-python keeps the fetch position of a partition that stays with this consumer through
    a rebalance. The loop drops every uncommitted frame of a revoked partition, so a partition it
    keeps must be rewound to the first frame dropped, or those frames would be skipped (and later
    commits would pass them). A partition that went to another consumer is left alone."""

    from kafka import TopicPartition  # noqa: PLC0415

    from worker.streaming.rebalance import Revocations  # noqa: PLC0415
    from worker.streaming.transport import RecordReader  # noqa: PLC0415

    def entry(partition: int, offset: int) -> Entry:
        tiled = tile_frame(_frame(256, 256, offset=offset), inferencer)
        message = InboundMessage(KafkaCoordinates("mill.frames", partition, offset), None, None, ())
        return Entry(message=message, outcome=tiled, received_at=0.0)

    p0, p1, p2 = (TopicPartition("mill.frames", p) for p in range(3))
    consumer = _RebalancedConsumer({p0, p2})  # p1 went to another worker
    reader = RecordReader(consumer, open_probe=lambda: None)
    reader.suspects = {p1}  # a partition paused for an unreadable record, revoked meanwhile
    queue = [entry(0, 6), entry(1, 3), entry(0, 7), entry(2, 9)]
    in_flight = Batch([entry(0, 5), entry(1, 2)])
    on_model = Batch([entry(2, 8)])
    revocations = Revocations()
    revocations.on_partitions_revoked([p0, p1])  # kafka-python's IO thread

    applied = revocations.apply(consumer, reader, queue, [in_flight, on_model])
    assert applied.rewound == {p0} and applied.revoked == {p0, p1}
    assert consumer.seeks == [(0, 5)]
    assert [e.message.source.offset for e in applied.queue] == [9]  # p2 was not revoked
    assert in_flight.entries == [] and [e.message.source.offset for e in on_model.entries] == [8]
    assert reader.suspects == set()  # the new owner of p1 meets its bad record itself
    nothing = revocations.apply(consumer, reader, applied.queue, [on_model])
    assert (nothing.revoked, nothing.rewound, nothing.queue) == (set(), set(), applied.queue)
