"""Producing records that must not be lost: sent, then waited for until the broker confirmed
every one (dead letters, audit records); a caller moves on only after that."""

from __future__ import annotations

from confluent_kafka import Producer

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]  # key, value, headers


def produce_confirmed(
    producer: Producer, topic: str, records: list[Record], timeout_s: float, what: str
) -> None:
    """Produces ``records`` to ``topic`` and waits until the broker has them all; raises naming
    ``what`` if it has not."""
    if not records:
        return
    errors: list[str] = []

    def delivered(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))

    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
    remaining = producer.flush(timeout_s)
    if remaining or errors:
        raise RuntimeError(f"{what} not confirmed by the broker: {remaining} pending, {errors[:3]}")
