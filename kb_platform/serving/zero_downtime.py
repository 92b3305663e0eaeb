"""The zero-downtime scenarios' stack and measurements, shared by benchmarks/zero_downtime.py
and kb_platform_tests/e2e/test_zero_downtime.py: RAG service instances (real ``bentoml serve``
processes) behind a real HAProxy, a steady /search load through it while the instances roll
(kb_platform.serving.rolling_restart), optionally while the index rolls to a new version
(kb_platform.index.lifecycle.roll_out) and while the Dagster daemon ingests.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from kb_platform.index.lifecycle import alias_targets, ensure_index, roll_out
from kb_platform.index.mapping import IndexNames
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.haproxy import Checks, HAProxy
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home
from kb_platform.serving.load import Load, Summary
from kb_platform.serving.rolling_restart import Hook, InstanceRoll, RollingRestart

log = logging.getLogger(__name__)

# What the instances need least of: no CLIP (image search answers "not available" without
# it); the generator still loads (readiness waits for every model) but an /ask reads two short
# sources and writes 16 tokens: a full one (4 sources of 700 characters) on two cores shared
# with a restarting instance and /search load passed the service's own 60 s limit (504).
LEAN_SERVICE_ENV = {
    "KB_SERVING_ASK_CONCURRENCY": "1",
    "KB_SERVING_ASK_SOURCES": "2",
    "KB_SERVING_MAX_SOURCE_CHARS": "300",
    "KB_SERVING_MAX_NEW_TOKENS": "16",
}


@dataclass
class RagPool:
    """One RAG instance per port of ``ports`` (rag1, rag2, ...) behind HAProxy on
    ``proxy_port``, reading the index family ``index_base`` on ``elasticsearch_url``; an API
    key of its own without rate limits."""

    work: Path
    ports: list[int]
    proxy_port: int
    index_base: str
    elasticsearch_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    checks: Checks = field(default_factory=Checks)
    api_key: str = field(default_factory=new_key)
    instances: dict[str, ServiceProcess] = field(default_factory=dict)
    proxy: HAProxy | None = None
    ready_s: dict[str, float] = field(default_factory=dict)  # first start to ready, each

    def _env(self, name: str) -> dict[str, str]:
        keys = self.work / "keys.json"
        if not keys.exists():
            entry = {"sha256": hash_key(self.api_key), "name": "load", "rate_per_s": 1e6}
            keys.write_text(json.dumps([{**entry, "burst": 1_000_000}]))
        return {
            "KB_SERVING_API_KEYS_FILE": str(keys),
            "KB_ELASTICSEARCH_URL": self.elasticsearch_url,
            "KB_ELASTICSEARCH_INDEX_BASE": self.index_base,
            "KB_SERVING_CLIP_EXPORT_DIR": str(self.work / "no-clip-checkpoint"),
            **LEAN_SERVICE_ENV,
            **self.extra_env,
            "BENTOML_HOME": str(private_bentoml_home(self.work / name / "bentoml")),
        }

    @contextmanager
    def running(self, timeout_s: float = 300.0) -> Iterator[RagPool]:
        self.work.mkdir(parents=True, exist_ok=True)
        for n, port in enumerate(self.ports, 1):
            name = f"rag{n}"
            self.instances[name] = ServiceProcess(
                port=port, env=self._env(name), log_path=self.work / name / "service.log"
            )
        self.proxy = HAProxy(
            {name: f"127.0.0.1:{i.port}" for name, i in self.instances.items()},
            self.proxy_port,
            self.work / "haproxy",
            checks=self.checks,
        )
        with ExitStack() as stack:
            for instance in self.instances.values():
                stack.callback(instance.stop)
                instance.start()
            with ThreadPoolExecutor(len(self.instances)) as pool:
                ready = pool.map(lambda i: i.wait_ready(timeout_s), self.instances.values())
                self.ready_s = dict(zip(self.instances, ready, strict=True))
            stack.enter_context(self.proxy.running())
            self.proxy.wait(
                lambda states: all(s.up for s in states.values()), "every server up", 30.0
            )
            yield self

    def rolling_restart(self, on_phase: Hook | None = None, drain: bool = True) -> RollingRestart:
        assert self.proxy is not None
        return RollingRestart(self.proxy, dict(self.instances), drain=drain, on_phase=on_phase)

    def load(self, queries: list[str], **kwargs: Any) -> Load:
        assert self.proxy is not None
        return Load(self.proxy.url, self.api_key, queries, **kwargs)


@dataclass
class RollResult:
    """One scenario: the load's requests overall and while the instances rolled."""

    name: str
    load: Load
    rolls: list[InstanceRoll]
    proxy_counters: dict[str, int]  # the HAProxy backend's counters over the scenario

    @property
    def roll_start(self) -> float:
        return self.rolls[0].out_at

    @property
    def roll_end(self) -> float:
        return self.rolls[-1].back_at

    def overall(self, endpoint: str | None = "/search") -> Summary:
        return self.load.summary(endpoint=endpoint)

    def during_roll(self, endpoint: str | None = "/search") -> Summary:
        return self.load.summary(self.roll_start, self.roll_end, endpoint)

    def labels(self) -> dict[str, int]:
        """Answered /search requests by the index version their hits came from."""
        counts: dict[str, int] = {}
        for sample in self.load.samples:
            if sample.label is not None:
                counts[sample.label] = counts.get(sample.label, 0) + 1
        return counts


def roll_under_load(
    pool: RagPool,
    name: str,
    load: Load,
    *,
    settle_s: float = 3.0,
    on_phase: Hook | None = None,
    drain: bool = True,
    after_roll: Callable[[], None] | None = None,
) -> RollResult:
    """Starts ``load``, lets it run ``settle_s``, rolls every instance, runs ``after_roll``
    (waiting for ingestion, say) with the load still on, lets it run ``settle_s`` more."""
    assert pool.proxy is not None
    before = pool.proxy.api.backend_counters()
    with load.running():
        time.sleep(settle_s)
        rolls = pool.rolling_restart(on_phase, drain=drain).run()
        if after_roll is not None:
            after_roll()
        time.sleep(settle_s)
    after = pool.proxy.api.backend_counters()
    counters = {k: after[k] - before[k] for k in after}
    return RollResult(name, load, rolls, counters)


# the index rolling to a new version


def embedded(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chunk documents with their MiniLM vectors (as the text_embeddings asset makes them)."""
    from kb_platform.index.analysis import embedding_input
    from kb_platform.models.registry import text_encoder

    vectors = text_encoder().encode([embedding_input(c["title"], c["text"]) for c in chunks])
    return [
        {**chunk, "text_vector": vector.tolist()}
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


def index_documents(es: Elasticsearch, names: IndexNames, documents: list[dict[str, Any]]) -> None:
    """The first version of ``names`` (behind both aliases) holding ``documents``."""
    ensure_index(es, names)
    report = bulk_with_retries(es, index_actions(names.write_alias, documents))
    if not report.ok:
        raise RuntimeError(f"indexing failed: {report.failed[:3]}")
    es.indices.refresh(index=names.write_alias)


def source_label(body: dict[str, Any]) -> str:
    """The index version a /search answer came from: its hits' source_uri schemes
    (``cranfield`` in one version, ``cranfield-v2`` in the next), ``a+b`` if mixed."""
    schemes = {hit["provenance"]["source_uri"].split(":", 1)[0] for hit in body["hits"]}
    return "+".join(sorted(schemes))


def next_version_documents(documents: list[dict[str, Any]], scheme: str) -> list[dict[str, Any]]:
    """The same chunks, their source_uri under another scheme, so answers name their version."""
    out = copy.deepcopy(documents)
    for doc in out:
        doc["source_uri"] = f"{scheme}:{doc['source_uri'].split(':', 1)[1]}"
    return out


@dataclass
class IndexRoll:
    """``roll_out`` of ``documents`` into the next version of ``names`` on a thread of its own,
    started by a rolling restart's phase (so the aliases swap while an instance is out)."""

    es: Elasticsearch
    names: IndexNames
    documents: list[dict[str, Any]]
    trigger: tuple[str, str] = ("rag1", "stopped")  # (server, phase) that starts it
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    swapped_at: float = 0.0
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def on_phase(self, server: str, phase: str) -> None:
        if (server, phase) == self.trigger and self._thread is None:
            self._thread = threading.Thread(target=self._roll, name="index-roll")
            self._thread.start()

    def _roll(self) -> None:
        try:
            self.before = alias_targets(self.es, self.names.read_alias)
            roll_out(self.es, self.documents, names=self.names)
            self.swapped_at = time.monotonic()
            self.after = alias_targets(self.es, self.names.read_alias)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout_s: float = 120.0) -> None:
        if self._thread is None:
            raise RuntimeError(f"the index roll never started (trigger {self.trigger})")
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("the index roll did not finish")
        if self.error is not None:
            raise self.error


# ingestion by the Dagster daemon


@dataclass
class Ingestion:
    """A `dagster dev` of its own (webserver, daemon, warm run workers) on ``env``
    (kb_platform.local_stack.dagster_dev_env: its instance, topics, consumer group and index
    family), files produced to it with ``kb-platform produce --follow`` (which returns once every
    message is settled) and accounted for with ``kb-platform audit``."""

    env: dict[str, str]
    files: list[Path]
    # warm run workers (and concurrent runs) of this instance; None: dagster.yaml's. Each
    # worker imports the code location and loads the models: fewer leave the cores to the
    # instances being restarted
    run_workers: int | None = None
    # runs a worker serves before the launcher replaces it; None: dagster.yaml's
    max_runs_per_worker: int | None = None
    follow_timeout_s: float = 420.0
    produced_at: float = 0.0
    settled_at: float = 0.0
    _up: subprocess.Popen[str] | None = None
    _follow: subprocess.Popen[str] | None = None

    @property
    def _log(self) -> Path:
        return Path(self.env["KB_LOCAL_DIR"]) / "dagster" / "logs" / "dagster.log"

    def start(self) -> None:
        """Starts `dagster dev` (deploy/local/dagster/dagster.sh up) without waiting for it."""
        from kb_platform.local_stack import DAGSTER_SCRIPT

        if self.run_workers is not None or self.max_runs_per_worker is not None:
            self._write_instance_config()
        self._up = subprocess.Popen(
            ["bash", str(DAGSTER_SCRIPT), "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _write_instance_config(self) -> None:
        """dagster.yaml with this ingestion's run workers, in DAGSTER_HOME (dagster.sh links the
        repository's only when there is none)."""
        import yaml

        from kb_platform.config import REPO_ROOT

        config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
        if self.run_workers is not None:
            config["run_launcher"]["config"]["workers"] = self.run_workers
            config["run_coordinator"]["config"]["max_concurrent_runs"] = self.run_workers
        if self.max_runs_per_worker is not None:
            config["run_launcher"]["config"]["max_runs_per_worker"] = self.max_runs_per_worker
        home = Path(self.env["DAGSTER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def wait_up(self, timeout_s: float = 300.0) -> None:
        """Waits until the webserver answers and the warm run workers are ready."""
        assert self._up is not None
        output, _ = self._up.communicate(timeout=timeout_s)
        if self._up.returncode != 0:
            raise RuntimeError(f"dagster.sh up failed:\n{output[-3000:]}")
        self._wait_for_warm_workers(timeout_s)

    def stop(self) -> None:
        from kb_platform.local_stack import DAGSTER_SCRIPT

        for process in (self._follow, self._up):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        subprocess.run(["bash", str(DAGSTER_SCRIPT), "down"], env=self.env, capture_output=True)

    @contextmanager
    def running(self, timeout_s: float = 300.0) -> Iterator[Ingestion]:
        self.start()
        try:
            self.wait_up(timeout_s)
            yield self
        finally:
            self.stop()

    def _wait_for_warm_workers(self, timeout_s: float) -> None:
        import yaml

        from kb_platform.config import REPO_ROOT

        home_config = Path(self.env["DAGSTER_HOME"]) / "dagster.yaml"
        config = yaml.safe_load(
            (home_config if home_config.exists() else REPO_ROOT / "dagster.yaml").read_text()
        )
        workers = int(config["run_launcher"]["config"]["workers"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (
                self._log.exists()
                and self._log.read_text(errors="replace").count("worker warm in") >= workers
            ):
                return
            time.sleep(1)
        raise TimeoutError(f"run workers not warm after {timeout_s:.0f}s (see {self._log})")

    def produce(self) -> None:
        """Produces the files (``kb-platform produce --follow`` in the background)."""
        cli = Path(sys.executable).with_name("kb-platform")
        self.produced_at = time.monotonic()
        self._follow = subprocess.Popen(
            [
                str(cli),
                "produce",
                *map(str, self.files),
                "--follow",
                "--interval",
                "2",
                "--timeout",
                str(self.follow_timeout_s),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_settled(self) -> str:
        """Waits until every produced message is settled; the last progress line."""
        if self._follow is None:
            raise RuntimeError("nothing was produced")
        output, _ = self._follow.communicate(timeout=self.follow_timeout_s + 60)
        self.settled_at = time.monotonic()
        if self._follow.returncode != 0:
            raise RuntimeError(f"kb-platform produce --follow failed:\n{output[-3000:]}")
        return output.strip().splitlines()[-1]

    def audit(self) -> tuple[int, str]:
        """``kb-platform audit`` of this stack's topics: (exit status, output)."""
        cli = Path(sys.executable).with_name("kb-platform")
        done = subprocess.run(
            [str(cli), "audit"], env=self.env, capture_output=True, text=True, timeout=180
        )
        return done.returncode, done.stdout + done.stderr


def table(results: list[RollResult]) -> str:
    """The scenarios side by side: /search requests, failures and latency overall and during
    the roll, and each instance's time out of rotation."""
    lines = [
        "| scenario | window | requests | failed | p50 ms | p95 ms | p99 ms | max ms | req/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for window, s in (("overall", result.overall()), ("during roll", result.during_roll())):
            lines.append(
                f"| {result.name} | {window} | {s.requests} | {s.failures} | {s.p50_ms:.1f} "
                f"| {s.p95_ms:.1f} | {s.p99_ms:.1f} | {s.max_ms:.1f} | {s.rate_per_s:.1f} |"
            )
    lines += [
        "",
        "| scenario | instance | out of rotation s | drain s | stop s | start to ready s |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for roll in result.rolls:
            lines.append(
                f"| {result.name} | {roll.name} | {roll.out_s:.1f} | {roll.drain_s:.2f} "
                f"| {roll.stop_s:.1f} | {roll.start_to_ready_s:.1f} |"
            )
    return "\n".join(lines)


def delete_topics(kafka: KafkaResource) -> None:
    """Deletes the ingest, dead-letter and audit topics of a namespaced ``kafka``."""
    topics, admin = kafka.topics(), kafka.admin()  # the client must outlive its futures
    futures = admin.delete_topics([*topics.all_ingest(), *topics.all_dlq(), topics.audit])
    for future in futures.values():
        future.result(timeout=30)
