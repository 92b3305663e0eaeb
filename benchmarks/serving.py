"""Load on the BentoML RAG service: /search throughput and latency at rising concurrency,
/ask/stream's first-piece and whole-answer latency, start-to-ready time and memory.

    flock /tmp/kb-bench.lock .venv/bin/python benchmarks/serving.py [--levels 1,2,4,8,16,32]
        [--seconds 15] [--modes hybrid,knn,bm25] [--asks 8] [--docs 1400]
        [--query-encoders torch,onnx]

Indexes Cranfield (chunked, MiniLM vectors) into an index family of its own on
KB_ELASTICSEARCH_URL, starts `bentoml serve` with a key of its own (a second process), then
drives it from this process over loopback with closed-loop clients (each sends its next request
when the previous one is answered), Cranfield's 225 queries in turn; once per query encoder
(KB_SERVING_QUERY_ENCODER), one service after the other, so before and after print side by
side. The client shares the 2 cores with the service and Elasticsearch, as a co-located client
would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.evaluation.cranfield import load_queries
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.serving import sse
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home
from kb_platform_tests.serving.corpus_slice import index_slice

P95_TARGET_MS = 100.0


@dataclass
class Level:
    mode: str
    concurrency: int
    latencies_ms: list[float]
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _load(
    url: str, key: str, mode: str, queries: list[str], clients: int, seconds: float
) -> Level:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = 0
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal errors, counter
            while time.perf_counter() < stop_at:
                query = queries[counter % len(queries)]
                counter += 1
                started = time.perf_counter()
                async with session.post(
                    f"{url}/search", json={"query": query, "k": 10, "mode": mode}
                ) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return Level(mode, clients, latencies, errors, elapsed)


async def _asks(url: str, key: str, questions: list[str]) -> list[dict]:
    """Each question through /ask/stream: the client's time to the first streamed piece and to
    the final answer event, beside the service's own numbers in that answer."""
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        for question in questions:
            started = time.perf_counter()
            body: dict = {}
            first_ms = None
            async with session.post(f"{url}/ask/stream", json={"question": question}) as response:
                block: list[str] = []
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line:
                        block.append(line)
                        continue
                    for name, data in sse.parse(block):
                        if name == "token" and first_ms is None:
                            first_ms = (time.perf_counter() - started) * 1000
                        elif name == "answer":
                            body = data
                    block = []
            body["client_ms"] = (time.perf_counter() - started) * 1000
            body["client_first_ms"] = first_ms
            body["status"] = response.status
            out.append(body)
    return out


def _metric(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf'^{name}\{{component="([^"]+)"\}} (\S+)$', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def _serve_and_load(
    args: argparse.Namespace, runtime: str, env: dict[str, str], log_path: Path
) -> tuple[list[Level], list[dict]]:
    """One service with ``runtime`` as its query encoder: start to ready, the load levels, and
    (for the last runtime only, the answerer does not depend on it) the /ask round."""
    service = ServiceProcess(
        port=args.port, env={**env, "KB_SERVING_QUERY_ENCODER": runtime}, log_path=log_path
    )
    try:
        service.start()
        ready_s = service.wait_ready()
        rss_ready = service.rss_bytes()
        import urllib.request

        req = urllib.request.Request(
            f"{service.url}/metrics", headers={"Authorization": f"Bearer {args.key}"}
        )
        metrics_text = urllib.request.urlopen(req, timeout=10).read().decode()
        warmup = _metric(metrics_text, "kb_serving_warmup_seconds")
        print(
            f"[query encoder {runtime}] start to ready: {ready_s:.1f}s (warm-up "
            f"{warmup.get('total', float('nan')):.1f}s:"
            + ", ".join(f" {k} {v:.1f}s" for k, v in warmup.items() if k != "total")
            + f"); memory (RSS of the service's processes) when ready: {rss_ready / 2**20:.0f} MiB"
        )
        rows: list[Level] = []
        peak = rss_ready
        for mode in args.modes.split(","):
            asyncio.run(_load(service.url, args.key, mode, args.queries, 2, 3.0))  # warm it
            for clients in args.levels:
                level = asyncio.run(
                    _load(service.url, args.key, mode, args.queries, clients, args.seconds)
                )
                rows.append(level)
                peak = max(peak, service.rss_bytes())
                print(
                    f"  {runtime} {mode} c={clients}: {level.rps:.1f} req/s, "
                    f"p95 {level.p(95):.1f} ms",
                    flush=True,
                )
        asks = []
        if runtime == args.query_encoders[-1]:
            asks = asyncio.run(_asks(service.url, args.key, args.queries[: args.asks]))
            peak = max(peak, service.rss_bytes())
        print(f"[query encoder {runtime}] memory (RSS) peak under load: {peak / 2**20:.0f} MiB")
        return rows, asks
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--modes", default="hybrid,knn,bm25")
    parser.add_argument(
        "--query-encoders",
        default="torch,onnx,onnx-int8",
        help="KB_SERVING_QUERY_ENCODER values, one service each, in this order (before, after)",
    )
    parser.add_argument("--asks", type=int, default=8)
    parser.add_argument("--docs", type=int, default=1400, help="Cranfield documents to index")
    parser.add_argument("--port", type=int, default=3190)
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    args.query_encoders = args.query_encoders.split(",")

    settings = get_settings()
    folder = settings.corpus_dir / "retrieval" / "cranfield"
    args.queries = [text for _, text in load_queries(folder)]
    es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    names = IndexNames(f"bench-serving-{uuid.uuid4().hex[:8]}")
    work = Path(tempfile.mkdtemp(prefix="kb-serving-bench-"))
    args.key = new_key()
    keys_file = work / "keys.json"
    keys_file.write_text(
        json.dumps(
            [{"sha256": hash_key(args.key), "name": "bench", "rate_per_s": 1e6, "burst": 1_000_000}]
        )
    )
    env = {
        "KB_SERVING_API_KEYS_FILE": str(keys_file),
        "KB_ELASTICSEARCH_INDEX_BASE": names.base,
        "KB_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
    }
    try:
        started = time.perf_counter()
        chunks = index_slice(es, names, folder, args.docs)
        print(
            f"indexed {chunks} chunks of {args.docs} Cranfield documents "
            f"in {time.perf_counter() - started:.0f}s ({names.base})"
        )
        results = {}
        for runtime in args.query_encoders:
            results[runtime] = _serve_and_load(args, runtime, env, work / f"service-{runtime}.log")
    finally:
        delete_family(es, names)
        es.close()

    print()
    print(f"/search (k=10), {args.seconds:g}s per level, closed-loop clients on loopback")
    print("| query encoder | mode | clients | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for runtime, (rows, _) in results.items():
        for r in rows:
            print(
                f"| {runtime} | {r.mode} | {r.concurrency} | {r.rps:.1f} | {r.p(50):.1f} "
                f"| {r.p(95):.1f} | {r.p(99):.1f} | {r.errors} |"
            )
    for runtime, (rows, _) in results.items():
        for mode in args.modes.split(","):
            mine = [r for r in rows if r.mode == mode]
            crossing = next((r.concurrency for r in mine if r.p(95) > P95_TARGET_MS), None)
            best = max(mine, key=lambda r: r.rps if r.p(95) <= P95_TARGET_MS else 0)
            print(
                f"{runtime} {mode}: p95 crosses {P95_TARGET_MS:g} ms at "
                f"{crossing if crossing else f'none up to {args.levels[-1]}'} clients; best rate "
                f"with p95 <= {P95_TARGET_MS:g} ms: {best.rps:.1f} req/s at {best.concurrency}"
            )
    asks = results[args.query_encoders[-1]][1]
    ok = [a for a in asks if a["status"] == 200 and "answer" in a]
    if ok:
        latencies = [a["client_ms"] for a in ok]
        firsts = [a["client_first_ms"] for a in ok if a["client_first_ms"] is not None]
        print()
        print(
            f"/ask/stream ({len(ok)}/{len(asks)} answered, sequential): first piece p50 "
            f"{statistics.median(firsts) if firsts else float('nan'):.0f} ms, whole answer p50 "
            f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms; generation "
            f"p50 {statistics.median(a['generation_ms'] for a in ok):.0f} ms, "
            f"{statistics.mean(a['tokens_generated'] for a in ok):.0f} tokens on average; "
            f"retrieval p50 {statistics.median(a['retrieval_ms'] for a in ok):.0f} ms; "
            f"{sum(a['extractive'] for a in ok)} extractive, "
            f"{sum(a['refused'] for a in ok)} refused"
        )


if __name__ == "__main__":
    with printed_machine_load():
        main()
