"""The two Kafka clients the project talks to, as the small Protocols of what it calls on them.

kafka-python's `KafkaConsumer` and `KafkaProducer` satisfy them; so do the tests' fakes. Code below
the composition root (`worker.streaming.service`, which makes the real clients) takes these types,
never `Any`, so a call the project does not use yet is a type error until it is added here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

__all__ = ["Consumer", "Producer"]


class Producer(Protocol):
    """What the project calls on a producer (keys, values and header values as bytes)."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Queue one record; returns a future of its metadata (`.get(timeout)`)."""
        ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class Consumer(Protocol):
    """What the project calls on a consumer: the worker's group member, the probe
    (`worker.streaming.transport`) that reads one partition by assignment, and the dead-letter
    replay (`worker.streaming.replay`)."""

    def subscribe(self, topics: Sequence[str], listener: Any = None) -> None: ...

    def assign(self, partitions: Sequence[TopicPartition]) -> None: ...

    def assignment(self) -> Collection[TopicPartition]: ...

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[ConsumerRecord]]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def position(self, partition: TopicPartition) -> int: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_ms: int | None = None
    ) -> Mapping[TopicPartition, int]: ...

    def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]: ...

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, Any]: ...

    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...

    def committed(self, partition: TopicPartition, metadata: bool = False) -> Any: ...

    def metrics(self, raw: bool = False) -> dict[str, Any]: ...

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> None: ...

    def topics(self) -> set[str]: ...

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None: ...
