"""Dead letters: the original message plus why it failed, on ``dlq.<modality>.processing``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Producer

HEADER_NAMES = (
    "source-topic",
    "source-partition",
    "source-offset",
    "doc-id",
    "run-id",
    "error-class",
    "error-message",
    "attempts",
    "first-failed-at",
)
MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    error_class: str
    error_message: str
    doc_id: str = ""
    run_id: str = ""
    attempts: int = 1
    first_failed_at: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        first_failed = self.first_failed_at or datetime.now(UTC).isoformat()
        values = (
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
            self.doc_id,
            self.run_id,
            self.error_class,
            self.error_message[:MAX_ERROR_MESSAGE],
            str(self.attempts),
            first_failed,
        )
        return [(name, value.encode()) for name, value in zip(HEADER_NAMES, values, strict=True)]


def publish(producer: Producer, topic: str, letters: list[DeadLetter], timeout_s: float) -> None:
    """Produces the letters and waits until the broker has them all; raises if it has not."""
    errors: list[str] = []

    def delivered(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))

    for letter in letters:
        producer.produce(
            topic,
            key=letter.key,
            value=letter.value,
            headers=letter.headers(),
            on_delivery=delivered,
        )
    remaining = producer.flush(timeout_s)
    if remaining or errors:
        raise RuntimeError(
            f"dead letters not confirmed by the broker: {remaining} pending, {errors[:3]}"
        )


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: (value or b"").decode() for name, value in headers or []}
