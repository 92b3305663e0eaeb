"""Zero downtime, measured: two RAG service instances behind HAProxy under a steady /search load
(and a slow /ask), rolled one at a time (drain over the stats socket, stop, start, wait for
HAProxy's /readyz checks, back in rotation), in three scenarios:

1. restart: the rolling restart alone;
2. restart + index roll: the read alias swapped to kb-chunks-v{N+1} (built beside v{N} by
   kb_platform.index.lifecycle.roll_out) while the first instance is out;
3. restart + ingestion: the Dagster daemon ingesting documents produced to Kafka as the roll
   starts; then `kb-platform audit` accounts for every message.

    flock /tmp/kb-bench.lock .venv/bin/python benchmarks/zero_downtime.py [--docs 200]
        [--clients 4] [--rate 16] [--ask-every 5] [--settle 5] [--no-drain]

Everything runs on this machine: Elasticsearch and Kafka are the shared local ones (an index
family, topics and consumer group of the benchmark's own); the load generator shares the cores
with the services. --no-drain adds a fourth run that stops each instance without draining it
first (what the drain buys).
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.evaluation.cranfield import load_queries
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.local_stack import dagster_dev_env
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.load import Load
from kb_platform.serving.zero_downtime import (
    IndexRoll,
    Ingestion,
    RagPool,
    RollResult,
    delete_topics,
    embedded,
    index_documents,
    next_version_documents,
    roll_under_load,
    source_label,
    table,
)
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.corpus_slice import cranfield_chunks

log = logging.getLogger("benchmarks.zero_downtime")

TEXTS = "documents/unstructured/example-docs"
INGESTED = [
    f"{TEXTS}/book-war-and-peace-1p.txt",
    f"{TEXTS}/fake-text.txt",
    f"{TEXTS}/norwich-city.txt",
    "bad-inputs/pillow/truncated_image.png",  # corrupt: dead-lettered
]


def _load(pool: RagPool, queries: list[str], args: argparse.Namespace) -> Load:
    return pool.load(
        queries,
        clients=args.clients,
        rate_per_s=args.rate,
        ask_every_s=args.ask_every or None,
        label=source_label,
    )


def _asks(result: RollResult) -> str:
    asks = result.load.summary(endpoint="/ask")
    during = result.during_roll("/ask")
    kinds = collections.Counter(
        s.error.split(":")[0] for s in result.load.failures() if s.error is not None
    )
    return (
        f"/ask: {asks.requests} sent, {asks.failures} failed (during the roll: "
        f"{during.requests} sent, {during.failures} failed; p50 {asks.p50_ms:.0f} ms); "
        f"failures by kind, all endpoints: {dict(kinds) or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200, help="Cranfield documents to index")
    parser.add_argument("--clients", type=int, default=4, help="/search clients")
    parser.add_argument("--rate", type=float, default=16.0, help="/search requests a second")
    parser.add_argument("--ask-every", type=float, default=5.0, help="s between /asks; 0: none")
    parser.add_argument("--settle", type=float, default=5.0, help="s of load before and after")
    parser.add_argument("--no-drain", action="store_true", help="also roll without draining")
    args = parser.parse_args()

    settings = get_settings()
    folder = settings.corpus_dir / "retrieval" / "cranfield"
    queries = [text for _, text in load_queries(folder)]
    es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    names = IndexNames(f"bench-zdt-{uuid.uuid4().hex[:8]}")
    work = Path(tempfile.mkdtemp(prefix="kb-zdt-bench-"))
    kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers).namespaced(
        f"bench-zdt-{uuid.uuid4().hex[:8]}", topic_partitions=1
    )
    kafka.create_topics()
    results: list[RollResult] = []
    try:
        started = time.perf_counter()
        documents = embedded(cranfield_chunks(folder, args.docs))
        index_documents(es, names, documents)
        print(
            f"indexed {len(documents)} chunks in {time.perf_counter() - started:.0f}s "
            f"({names.base})"
        )
        pool = RagPool(
            work / "pool",
            [free_port(), free_port()],
            free_port(),
            names.base,
            settings.elasticsearch_url,
        )
        ingestion = Ingestion(
            dagster_dev_env(work / "dagster", str(free_port()), names.base, kafka),
            [settings.corpus_dir / f for f in INGESTED],
        )
        with pool.running():
            print(
                "instances ready (first start, in parallel): "
                + ", ".join(f"{k} {v:.1f}s" for k, v in pool.ready_s.items())
                + f"; HAProxy on {pool.proxy.url if pool.proxy else '?'}"
            )
            results.append(
                roll_under_load(pool, "restart", _load(pool, queries, args), settle_s=args.settle)
            )
            print(f"[restart] {_asks(results[-1])}", flush=True)

            index_roll = IndexRoll(es, names, next_version_documents(documents, "cranfield-v2"))
            result = roll_under_load(
                pool,
                "restart + index roll",
                _load(pool, queries, args),
                settle_s=args.settle,
                on_phase=index_roll.on_phase,
            )
            index_roll.join()
            results.append(result)
            stale = sum(
                1
                for s in result.load.samples
                if s.label
                and s.started > index_roll.swapped_at
                and "cranfield" in s.label.split("+")
            )
            print(
                f"[restart + index roll] read alias {index_roll.before} -> {index_roll.after}, "
                f"swapped {index_roll.swapped_at - result.roll_start:.1f}s into the roll; "
                f"/search answers by version: {result.labels()}, {stale} from the old version "
                f"sent after the swap; {_asks(result)}",
                flush=True,
            )

            started = time.perf_counter()
            with ingestion.running():
                print(
                    f"dagster dev up with warm run workers in {time.perf_counter() - started:.0f}s",
                    flush=True,
                )
                settled: list[str] = []

                def produce(server: str, phase: str) -> None:
                    if (server, phase) == ("rag1", "drain"):
                        ingestion.produce()

                result = roll_under_load(
                    pool,
                    "restart + ingestion",
                    _load(pool, queries, args),
                    settle_s=args.settle,
                    on_phase=produce,
                    after_roll=lambda: settled.append(ingestion.wait_settled()),
                )
                results.append(result)
                status, audit = ingestion.audit()
                print(
                    f"[restart + ingestion] {len(INGESTED)} messages produced as the roll began; "
                    f"settled {ingestion.settled_at - result.roll_start:.0f}s into the roll "
                    f"(roll {result.roll_end - result.roll_start:.0f}s): {settled[0]}",
                    flush=True,
                )
                print(f"kb-platform audit (exit {status}):\n{audit.strip()}")
                print(_asks(result))

            if args.no_drain:
                results.append(
                    roll_under_load(
                        pool,
                        "restart without drain",
                        _load(pool, queries, args),
                        settle_s=args.settle,
                        drain=False,
                    )
                )
                print(f"[restart without drain] {_asks(results[-1])}")
        shutil.rmtree(work, ignore_errors=True)  # kept when a scenario fails: the logs
    finally:
        delete_family(es, names)
        es.close()
        delete_topics(kafka)

    print()
    print(
        f"/search (k=5, hybrid) through HAProxy, {args.clients} clients at {args.rate:g} req/s "
        f"in all, a /ask every {args.ask_every:g}s; two instances rolled one at a time"
    )
    print(table(results))
    print()
    for result in results:
        print(f"HAProxy backend counters during [{result.name}]: {result.proxy_counters}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "elastic_transport", "kb_platform.models"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with printed_machine_load():
        main()
