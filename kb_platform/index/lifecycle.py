"""Versioned chunk indices behind a read and a write alias, and atomic roll-outs between them.

A new embedding model or CLIP checkpoint gets a new index version: it is filled from the stored
embeddings while readers keep using the old one, then both aliases move in one atomic
``_aliases`` call. The old version is kept (for rollback) until it is deleted on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from kb_platform.index.mapping import DEFAULT_NAMES, IndexNames, chunk_mappings, index_template
from kb_platform.index.writer import BulkReport, bulk_with_retries, index_actions

log = logging.getLogger(__name__)


def ensure_template(
    es: Elasticsearch, names: IndexNames = DEFAULT_NAMES, replicas: int = 0
) -> None:
    es.indices.put_index_template(name=names.template, **index_template(names, replicas=replicas))


def alias_targets(es: Elasticsearch, alias: str) -> list[str]:
    try:
        return sorted(es.indices.get_alias(name=alias))
    except NotFoundError:
        return []


def versions(es: Elasticsearch, names: IndexNames = DEFAULT_NAMES) -> list[int]:
    try:
        indices = es.indices.get(index=f"{names.prefix}*", expand_wildcards="open")
    except NotFoundError:
        return []
    return sorted(names.version_of(name) for name in indices)


def ensure_index(es: Elasticsearch, names: IndexNames = DEFAULT_NAMES, replicas: int = 0) -> str:
    """The index behind the write alias; on a new cluster, creates v1 behind both aliases."""
    ensure_template(es, names, replicas)
    current = alias_targets(es, names.write_alias)
    if current:
        # Fields added to the mapping since the index was made (adding is allowed, and a no-op
        # when they are there already).
        es.indices.put_mapping(index=current[0], properties=chunk_mappings()["properties"])
        return current[0]
    name = names.index(1)
    if not es.indices.exists(index=name):
        es.indices.create(index=name)
    es.indices.update_aliases(
        actions=[
            {"add": {"index": name, "alias": names.read_alias}},
            {"add": {"index": name, "alias": names.write_alias, "is_write_index": True}},
        ]
    )
    return name


def swap_aliases(es: Elasticsearch, new_index: str, names: IndexNames = DEFAULT_NAMES) -> list[str]:
    """Points both aliases at ``new_index`` in one atomic call; returns the indices they left."""
    targets = {alias: alias_targets(es, alias) for alias in (names.read_alias, names.write_alias)}
    actions: list[dict[str, Any]] = [
        {"remove": {"index": index, "alias": alias}}
        for alias, indices in targets.items()
        for index in indices
        if index != new_index
    ]
    actions += [
        {"add": {"index": new_index, "alias": names.read_alias}},
        {"add": {"index": new_index, "alias": names.write_alias, "is_write_index": True}},
    ]
    es.indices.update_aliases(actions=actions)
    return sorted({i for indices in targets.values() for i in indices} - {new_index})


def roll_out(
    es: Elasticsearch,
    documents: Iterable[dict[str, Any]],
    *,
    names: IndexNames = DEFAULT_NAMES,
    replicas: int = 0,
) -> tuple[str, BulkReport]:
    """Builds the next index version from ``documents`` and swaps the aliases to it.

    The swap happens only if every document was written and the count matches; otherwise the
    aliases stay where they were and the half-built index is left for inspection.
    """
    ensure_template(es, names, replicas)
    new_index = names.index(max(versions(es, names), default=0) + 1)
    es.indices.create(index=new_index)
    documents = list(documents)
    report = bulk_with_retries(es, index_actions(new_index, documents))
    es.indices.refresh(index=new_index)
    count = es.count(index=new_index)["count"]
    if not report.ok or count != len({d["chunk_id"] for d in documents}):
        raise RuntimeError(
            f"{new_index} incomplete ({count} of {len(documents)} chunks, "
            f"{len(report.failed)} failed); aliases left unchanged"
        )
    left = swap_aliases(es, new_index, names)
    log.info("aliases moved to %s (previous: %s, kept)", new_index, left)
    return new_index, report


def delete_family(es: Elasticsearch, names: IndexNames) -> list[str]:
    """Deletes every version and the template of an index family (names given one by one:
    Elasticsearch refuses wildcard deletes by default)."""
    indices = [names.index(v) for v in versions(es, names)]
    if indices:
        es.indices.delete(index=",".join(indices))
    es.options(ignore_status=404).indices.delete_index_template(name=names.template)
    return indices
