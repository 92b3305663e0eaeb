"""A steady load on the RAG service with every request recorded: paced /search clients (and,
optionally, a slow /ask client) in threads, each request's start, latency, status and outcome
kept, so a run can be cut into windows (overall, during a rolling restart) afterwards.

A request fails when it gets no HTTP answer, a status other than 200, or a /search answer
without hits (an index that went missing answers empty or 503, never silently).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

log = logging.getLogger(__name__)

Label = Callable[[dict[str, Any]], str]  # a name for an answered /search's body (which index)


@dataclass(frozen=True)
class Sample:
    endpoint: str
    started: float  # time.monotonic() when it was sent
    latency_ms: float
    status: int  # 0: no HTTP answer
    error: str | None  # None: the request succeeded
    label: str | None = None


@dataclass(frozen=True)
class Summary:
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rate_per_s: float

    @staticmethod
    def of(samples: list[Sample], seconds: float) -> Summary:
        latencies = np.array([s.latency_ms for s in samples]) if samples else np.array([np.nan])

        def p(q: float) -> float:
            return float(np.percentile(latencies, q))

        return Summary(
            requests=len(samples),
            failures=sum(s.error is not None for s in samples),
            p50_ms=p(50),
            p95_ms=p(95),
            p99_ms=p(99),
            max_ms=float(np.max(latencies)),
            rate_per_s=len(samples) / seconds if seconds > 0 else float("nan"),
        )


@dataclass
class Load:
    """``clients`` threads sending /search at ``rate_per_s`` in all (each paced; a slow answer
    delays only its own client's next request), plus one /ask every ``ask_every_s`` if set."""

    url: str
    api_key: str
    queries: list[str]
    clients: int = 4
    rate_per_s: float = 16.0
    mode: str = "hybrid"
    k: int = 5
    ask_every_s: float | None = None
    ask_max_tokens: int = 16
    timeout_s: float = 60.0
    label: Label | None = None
    samples: list[Sample] = field(default_factory=list)
    started_at: float = 0.0
    stopped_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)
        if sample.error is not None:
            log.warning("%s failed: %s", sample.endpoint, sample.error)

    def _send(
        self, http: httpx.Client, endpoint: str, body: dict[str, Any], needs_hits: bool
    ) -> None:
        started = time.monotonic()
        status, error, label = 0, None, None
        try:
            response = http.post(endpoint, json=body)
            status = response.status_code
            if status != 200:
                error = f"status {status}: {response.text[:200]}"
            else:
                answer = response.json()
                if needs_hits and not answer.get("hits"):
                    error = "answered without hits"
                elif needs_hits and self.label is not None:
                    label = self.label(answer)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = (time.monotonic() - started) * 1000
        self._record(Sample(endpoint, started, latency_ms, status, error, label))

    def _client(self, n: int, interval_s: float, work: Callable[[httpx.Client, int], None]) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s) as http:
            next_at = time.monotonic() + interval_s * n / max(self.clients, 1)  # staggered
            i = n
            while not self._stop.is_set():
                wait = next_at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                next_at = max(next_at + interval_s, time.monotonic())
                work(http, i)
                i += self.clients

    def _search(self, http: httpx.Client, i: int) -> None:
        query = self.queries[i % len(self.queries)]
        self._send(http, "/search", {"query": query, "k": self.k, "mode": self.mode}, True)

    def _ask(self, http: httpx.Client, i: int) -> None:
        question = self.queries[i % len(self.queries)]
        body = {"question": question, "max_tokens": self.ask_max_tokens}
        self._send(http, "/ask", body, False)

    def start(self) -> None:
        self.started_at = time.monotonic()
        interval = self.clients / self.rate_per_s
        for n in range(self.clients):
            self._threads.append(
                threading.Thread(
                    target=self._client, args=(n, interval, self._search), name=f"search-{n}"
                )
            )
        if self.ask_every_s:
            self._threads.append(
                threading.Thread(
                    target=self._client, args=(0, self.ask_every_s, self._ask), name="ask"
                )
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """No new request from now on (the window's end); waits for those under way."""
        self._stop.set()
        self.stopped_at = time.monotonic()
        for thread in self._threads:
            thread.join()

    @contextmanager
    def running(self) -> Iterator[Load]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def window(
        self, start: float | None = None, end: float | None = None, endpoint: str | None = None
    ) -> list[Sample]:
        """The requests sent in [start, end) (monotonic times), of one endpoint or all."""
        lo = self.started_at if start is None else start
        hi = self.stopped_at if end is None else end
        return [
            s
            for s in self.samples
            if lo <= s.started < hi and (endpoint is None or s.endpoint == endpoint)
        ]

    def summary(
        self, start: float | None = None, end: float | None = None, endpoint: str | None = None
    ) -> Summary:
        lo = self.started_at if start is None else start
        hi = self.stopped_at if end is None else end
        return Summary.of(self.window(lo, hi, endpoint), hi - lo)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.error is not None]
