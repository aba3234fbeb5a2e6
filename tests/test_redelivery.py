"""A frame read again is written once and published as stored — even when the worker that reads it
again would now judge it otherwise — so the detections topic never contradicts the database.
Against the real broker, PostgreSQL and model."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from streaming_harness import (
    detection_rows,
    frame_messages,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.model.artefact import Classifier, load_classifier


def test_a_redelivered_stream_writes_nothing_new_and_republishes_what_is_stored(
    broker,
    make_topic,
    worker_database_url: str,
    database_url: str,
    tmp_path: Path,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    topics = make_topics(make_topic)
    messages = frame_messages(8)
    first = worker_settings(broker.bootstrap_servers, worker_database_url, model_dir, topics)
    with running_worker(first, classifier):
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == len(messages), 60, "the stream written")
    stored = detection_rows(database_url)
    assert stored, "the thresholds let some tiles through"

    # The same weights (hence the same model version) with every threshold at 0: this worker
    # would find every class on every tile. A new group reads the whole stream again.
    eager_dir = tmp_path / "eager-model"
    shutil.copytree(model_dir, eager_dir)
    meta = json.loads((eager_dir / "model.json").read_text())
    meta["thresholds"] = dict.fromkeys(meta["thresholds"], 0.0)
    (eager_dir / "model.json").write_text(json.dumps(meta))
    eager = load_classifier(eager_dir, batch_size=4)
    again = replace(first, consumer_group=f"{first.consumer_group}-again", model_path=eager_dir)
    with running_worker(again, eager) as running:
        wait_until(
            lambda: running.worker.metrics.value("steel_worker_frames_total") == len(messages),
            60,
            "the replay",
        )
    assert len(ledger(database_url)) == len(messages)
    assert detection_rows(database_url) == stored

    said: dict[str, list[list[tuple[int, str, float]]]] = defaultdict(list)
    for record in read_topic(broker.bootstrap_servers, topics.detections, at_least=2 * len(messages)):
        message = json.loads(record.value)
        said[message["frame_id"]].append(
            sorted(
                (d["tile_index"], d["class_name"], round(d["confidence"], 5)) for d in message["detections"]
            )
        )
    by_frame: dict[str, list[tuple[int, str, float]]] = {f: [] for f in messages}
    for frame_id, tile, name, confidence, _threshold in stored:
        by_frame[frame_id].append((tile, name, round(confidence, 5)))
    for frame_id in messages:
        assert said[frame_id] == [sorted(by_frame[frame_id])] * 2, frame_id
