"""The ingest consumer group's committed offsets: the line below which every message's work is
settled (indexed, dead-lettered or parked). Backed up as JSON with each partition's watermarks
at that moment; restored with ``alter_consumer_group_offsets``, which Kafka only allows on a
group without active members, so the restore refuses while any consumer is in the group.

Messages after the committed offsets are not copied: they stay on the topics (within the
topics' retention) and are read again after a restore.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from kb_platform.backup.manifest import FileEntry, entry_for

log = logging.getLogger(__name__)

OFFSETS = "kafka/offsets.json"
TIMEOUT_S = 30.0


class GroupActive(Exception):
    """The consumer group has members: offsets cannot (and must not) be changed under them."""


def committed(admin: AdminClient, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The group's committed offsets on ``topics`` (partitions without one are absent)."""
    request = [ConsumerGroupTopicPartitions(group)]
    try:
        result = admin.list_consumer_group_offsets(request)[group].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return {}
        raise
    wanted = set(topics)
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or []
        if tp.topic in wanted and tp.offset >= 0
    }


def watermarks(admin: AdminClient, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """(low, high) of each partition: what retention still holds and where the log ends."""
    if not partitions:
        return {}
    ends: dict[tuple[str, int], list[int]] = {p: [0, 0] for p in partitions}
    for which, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
        futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in partitions})
        for tp, future in futures.items():
            ends[(tp.topic, tp.partition)][which] = future.result(timeout=TIMEOUT_S).offset
    return {p: tuple(v) for p, v in ends.items()}


def members(admin: AdminClient, group: str) -> int:
    description = admin.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    if description.state in (ConsumerGroupState.DEAD, ConsumerGroupState.EMPTY):
        return 0
    return len(description.members or [])


def backup(
    admin: AdminClient, group: str, topics: list[str], folder: Path
) -> tuple[list[FileEntry], dict[str, Any]]:
    offsets = committed(admin, group, topics)
    marks = watermarks(admin, sorted(offsets))
    rows = [
        {"topic": t, "partition": p, "offset": o, "low": marks[(t, p)][0], "high": marks[(t, p)][1]}
        for (t, p), o in sorted(offsets.items())
    ]
    path = folder / OFFSETS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"group": group, "topics": topics, "offsets": rows}, indent=2))
    unsettled = sum(r["high"] - r["offset"] for r in rows)
    return [entry_for(folder, path)], {"group": group, "partitions": len(rows), "lag": unsettled}


def load(folder: Path) -> dict[str, Any]:
    return json.loads((folder / OFFSETS).read_text())


def restore(admin: AdminClient, group: str, saved: dict[str, Any], replace: bool) -> dict[str, Any]:
    """Sets the group's committed offsets to the saved ones (``replace``: deletes the group
    first, so partitions the backup does not name lose theirs too). Refuses while the group has
    members. Returns how many partitions were set and those whose saved offset retention has
    deleted meanwhile (their messages in between cannot be replayed)."""
    if active := members(admin, group):
        raise GroupActive(
            f"consumer group {group} has {active} active member(s): stop the Dagster daemon "
            "(its ingest sensor) and any other consumer of the group, then restore again"
        )
    if replace:
        try:
            admin.delete_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                raise
    partitions = [TopicPartition(r["topic"], r["partition"], r["offset"]) for r in saved["offsets"]]
    if partitions:
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        result = admin.alter_consumer_group_offsets(request)[group].result(timeout=TIMEOUT_S)
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            raise RuntimeError(f"offsets not set for {failed}")
    marks = watermarks(admin, [(r["topic"], r["partition"]) for r in saved["offsets"]])
    lost = [
        f"{r['topic']}:{r['partition']} (committed {r['offset']}, retention now starts at "
        f"{marks[(r['topic'], r['partition'])][0]})"
        for r in saved["offsets"]
        if marks[(r["topic"], r["partition"])][0] > r["offset"]
    ]
    for line in lost:
        log.warning("messages lost to retention since the backup: %s", line)
    return {"partitions": len(partitions), "beyond_retention": lost}
