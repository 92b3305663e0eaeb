"""Soak and leak check: tens of thousands of /search requests to one RAG service, then a few
hundred documents ingested by a `dagster dev` of the benchmark's own (webserver, daemon, code
server, warm run workers) from Kafka, sampling the resident memory of every process after each
batch of work. Prints MiB per 1,000 requests and per 100 documents for each process (the slope
over the second half of the samples, so warm-up growth that levels off is not counted) and exits
1 when a process keeps growing past the limit (kb_platform.observability.memory_growth).

    flock /tmp/kb-bench.lock .venv/bin/python benchmarks/soak.py [--requests 20000]
        [--batch 2000] [--clients 4] [--docs 300] [--doc-batch 50] [--passes 2]
        [--workers 1] [--max-runs-per-worker N]

The documents are produced ``--passes`` times (new messages, new runs), by default to one warm
run worker that is not replaced meanwhile: the second half of the samples is then documents that
worker has processed before, so growth there is a leak, not a parser, model or format loaded on
its first use (which a worker's first pass shows, and which levels off). ``--workers 3`` gives
dagster.yaml's mix instead, where a worker meets documents new to it in every pass.

Elasticsearch and Kafka are the shared local ones (an index family, topics and consumer group
of the benchmark's own, deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import psutil
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.evaluation.cranfield import load_queries
from kb_platform.evaluation.cranfield_chunks import cranfield_chunks
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.local_stack import dagster_dev_env
from kb_platform.observability.memory_growth import HEADER, Growth, growth
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home
from kb_platform.serving.zero_downtime import Ingestion, delete_topics, embedded, index_documents
from kb_platform_tests.ports import free_port

DOCUMENT_FOLDERS = ("documents/unstructured", "documents/docling", "documents/py-pdf-sample-files")
# what each process under `dagster dev` runs, from the start of its command line (the rest holds
# the instance's config, which names the run launcher's module for every process)
ROLES = (
    ("dagster_webserver", "webserver"),
    ("dagster._daemon", "daemon"),
    ("api grpc", "code server"),
    ("code-server", "code server proxy"),
    ("run_workers.worker", "run workers"),
    ("forkserver", "parser fork servers"),
)


def _role(process: psutil.Process) -> str:
    head = " ".join(process.cmdline()[:5])
    for needle, role in ROLES:
        if needle in head:
            return role
    return process.name()


def dagster_rss(pid_file: Path) -> dict[str, int]:
    """RSS of each process under `dagster dev`, summed per role (run workers together)."""
    root = psutil.Process(int(pid_file.read_text().strip()))
    found: dict[str, int] = defaultdict(int)
    for process in [root, *root.children(recursive=True)]:
        try:
            found[_role(process) if process != root else "dagster dev"] += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return dict(found)


def search_batch(url: str, key: str, queries: list[str], requests: int, clients: int) -> int:
    """``requests`` /search calls from ``clients`` threads; the number that failed."""
    failed = [0] * clients
    per_client = requests // clients

    def client(n: int) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            for i in range(per_client):
                query = queries[(n * per_client + i) % len(queries)]
                response = http.post("/search", json={"query": query, "k": 5})
                failed[n] += response.status_code != 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(failed)


def soak_search(
    service: ServiceProcess, key: str, queries: list[str], args: argparse.Namespace
) -> Growth:
    warm = search_batch(service.url, key, queries, args.batch, args.clients)
    print(f"warm-up: {args.batch} requests ({warm} failed), RSS {service.rss_bytes() >> 20} MiB")
    done, work, rss = 0, [], []
    started = time.perf_counter()
    while done < args.requests:
        failed = search_batch(service.url, key, queries, args.batch, args.clients)
        done += args.batch
        work.append(float(done))
        rss.append(service.rss_bytes())
        print(
            f"  {done:>6} requests: RSS {rss[-1] >> 20} MiB, {failed} failed, "
            f"{done / (time.perf_counter() - started):.0f} req/s",
            flush=True,
        )
        if failed:
            raise SystemExit(f"{failed} /search requests failed: see {service.log_path}")
    return growth(
        "rag service",
        work,
        rss,
        per=1000,
        unit="1,000 requests",
        limit_mib=args.limit_per_1000_requests,
    )


def soak_ingestion(
    ingestion: Ingestion, files: list[Path], args: argparse.Namespace
) -> list[Growth]:
    pid_file = Path(ingestion.env["KB_LOCAL_DIR"]) / "dagster" / "dagster.pid"
    print(f"dagster dev warm: {dagster_rss(pid_file)}")
    samples: dict[str, list[int]] = defaultdict(list)
    work: list[float] = []
    for start in range(0, len(files), args.doc_batch):
        ingestion.files = files[start : start + args.doc_batch]
        if start and start % args.distinct_docs == 0:
            print(f"  pass {start // args.distinct_docs + 1}: the same documents again")
        begun = time.perf_counter()
        ingestion.produce()
        settled = ingestion.wait_settled()
        work.append(float(start + len(ingestion.files)))
        for role, rss in dagster_rss(pid_file).items():
            samples[role].append(rss)
        print(
            f"  {int(work[-1]):>4} documents in {time.perf_counter() - begun:.0f}s ({settled}): "
            + ", ".join(f"{role} {values[-1] >> 20} MiB" for role, values in samples.items()),
            flush=True,
        )
    return [
        growth(
            role,
            work,
            values,
            per=100,
            unit="100 documents",
            limit_mib=args.limit_per_100_docs,
        )
        for role, values in samples.items()
        if len(values) == len(work)
    ]


def rag_service(work: Path, index_base: str, key: str) -> ServiceProcess:
    """One RAG service on the shared Elasticsearch, with a key of its own without limits."""
    keys = work / "keys.json"
    entry = {"sha256": hash_key(key), "name": "soak", "rate_per_s": 1e6, "burst": 1_000_000}
    keys.write_text(json.dumps([entry]))
    return ServiceProcess(
        port=free_port(),
        env={
            "KB_SERVING_API_KEYS_FILE": str(keys),
            "KB_ELASTICSEARCH_URL": get_settings().elasticsearch_url,
            "KB_ELASTICSEARCH_INDEX_BASE": index_base,
            "KB_SERVING_CLIP_EXPORT_DIR": str(work / "no-clip-checkpoint"),
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="0: ingestion only")
    parser.add_argument("--batch", type=int, default=2_000, help="requests between samples")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--docs", type=int, default=300, help="0: /search only")
    parser.add_argument("--doc-batch", type=int, default=50, help="documents between samples")
    parser.add_argument("--workers", type=int, default=1, help="warm run workers")
    parser.add_argument(
        "--max-runs-per-worker", type=int, help="default: more than the soak's runs (no recycling)"
    )
    parser.add_argument("--passes", type=int, default=2, help="produce the documents N times")
    parser.add_argument(
        "--folders", nargs="+", default=list(DOCUMENT_FOLDERS), help="corpus folders to ingest"
    )
    parser.add_argument("--limit-per-1000-requests", type=float, default=2.0, help="MiB")
    parser.add_argument("--limit-per-100-docs", type=float, default=40.0, help="MiB")
    args = parser.parse_args()

    settings = get_settings()
    folder = settings.corpus_dir / "retrieval" / "cranfield"
    queries = [text for _, text in load_queries(folder)]
    files = sorted(
        path
        for sub in args.folders
        for path in (settings.corpus_dir / sub).rglob("*")
        if path.is_file()
    )[: args.docs]
    args.distinct_docs = len(files) or 1
    files = files * args.passes
    if args.max_runs_per_worker is None:  # room for retried and re-requested runs too
        args.max_runs_per_worker = 2 * len(files) + 10
    es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    names = IndexNames(f"bench-soak-{uuid.uuid4().hex[:8]}")
    work = Path(tempfile.mkdtemp(prefix="kb-soak-bench-"))
    kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers).namespaced(
        f"bench-soak-{uuid.uuid4().hex[:8]}", topic_partitions=1
    )
    kafka.create_topics()
    results: list[Growth] = []
    try:
        with printed_machine_load():
            index_documents(es, names, embedded(cranfield_chunks(folder, 200)))
            key = new_key()
            if args.requests:
                with rag_service(work, names.base, key).running(timeout=300) as service:
                    print(f"/search soak: {args.requests} requests, {args.clients} clients")
                    results.append(soak_search(service, key, queries, args))
            if files:
                env = dagster_dev_env(work / "dagster", str(free_port()), names.base, kafka)
                ingestion = Ingestion(
                    env, [], run_workers=args.workers, max_runs_per_worker=args.max_runs_per_worker
                )
                with ingestion.running():
                    print(f"ingestion soak: {len(files)} documents, {args.doc_batch} per sample")
                    results.extend(soak_ingestion(ingestion, files, args))
                    status, audit = ingestion.audit()
                    print(f"kb-platform audit (exit {status}):\n{audit.strip()}")
    finally:
        delete_family(es, names)
        delete_topics(kafka)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(HEADER)
    for result in results:
        print(result.row())
    leaking = [r.process for r in results if r.leaking]
    if leaking:
        print(f"LEAK: {', '.join(leaking)} kept growing past the limit", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
