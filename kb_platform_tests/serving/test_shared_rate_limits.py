"""Rate limits shared by replicas through a real Redis (deploy/local/redis/redis.sh, on a port and
folder of this module's own): two replicas of the service's front door take from one budget
per key and per client address, answer 429 with Retry-After, and fall back to their own buckets,
visibly, while Redis is down.

The replicas are two uvicorn processes of the real front door (ServingMiddleware, which is all
that rate-limits) in front of a minimal app that answers 200: two full RAG services would load
two sets of models on this 2-core machine to test a part that sits in front of them. Client
addresses come from X-Forwarded-For, which the replicas trust from 127.0.0.1 (the proxy setup
the settings describe), so one machine can stand for many clients.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest

from kb_platform.config import REPO_ROOT
from kb_platform.serving.asgi import Receive, Scope, Send
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import probe
from kb_platform.serving.middleware import ServingMiddleware
from kb_platform.serving.ratelimit import Limit, RateLimiter, client_address
from kb_platform.serving.settings import ServingSettings
from kb_platform.structured_logs import configure_json_logging
from kb_platform_tests.ports import free_port

REDIS_SCRIPT = REPO_ROOT / "deploy" / "local" / "redis" / "redis.sh"
SLOW = 0.05  # tokens per second: one per 20 s, so refills barely move the sums below
KEY_BURST, IP_BURST = 6, 4
KEYS = ("shared", "a", "b", "c", "fallback")
_reads = itertools.count(1)


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def front_door() -> ServingMiddleware:
    """The uvicorn factory each replica runs (settings from its environment)."""
    configure_json_logging()
    return ServingMiddleware(_ok, ServingSettings())


# pure parts: the address a request counts against, the local buckets' all-or-nothing take


def _scope(peer: str, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 5000), "headers": headers}


def test_the_client_address_comes_from_forwarded_for_only_through_trusted_proxies() -> None:
    proxies = [ip_network("10.0.0.0/8"), ip_network("::1/128")]
    assert client_address(_scope("203.0.113.9", "1.2.3.4"), proxies) == "203.0.113.9"
    assert client_address(_scope("10.0.0.5", "1.2.3.4"), []) == "10.0.0.5"  # none trusted
    assert client_address(_scope("10.0.0.5", "1.2.3.4"), proxies) == "1.2.3.4"
    # the client's own entries sit left of what the proxies append: they cannot hide it
    spoofed = _scope("10.0.0.5", "6.6.6.6, 198.51.100.7", "10.1.1.1")
    assert client_address(spoofed, proxies) == "198.51.100.7"
    assert client_address(_scope("10.0.0.5", "10.0.0.9"), proxies) == "10.0.0.9"  # all trusted
    assert client_address(_scope("10.0.0.5", "1.2.3.4, junk"), proxies) == "10.0.0.5"
    assert client_address(_scope("::1", "[2001:db8::1]:443"), proxies) == "2001:db8::1"
    assert client_address(_scope("::ffff:10.0.0.5", "1.2.3.4"), proxies) == "1.2.3.4"
    assert client_address({"headers": []}, proxies) == "unknown"


def test_a_refused_request_takes_no_token_from_its_other_buckets() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 1, clock=lambda: now[0])
    ip = Limit("ip", "203.0.113.1", 1.0, 2)
    assert limiter.check_all([Limit("key", "k1", 1.0, 5), ip]).allowed
    assert limiter.check_all([Limit("key", "k1", 1.0, 5), ip]).allowed
    refused = limiter.check_all([Limit("key", "k2", 1.0, 5), ip])
    assert not refused.allowed and refused.refused_by == ip
    assert refused.retry_after_s == pytest.approx(1.0)
    empty_key = Limit("key", "k3", 0.5, 1)
    assert limiter.check_all([empty_key]).allowed
    refused = limiter.check_all([empty_key, Limit("ip", "203.0.113.2", 1.0, 1)])
    assert refused.refused_by == empty_key and refused.retry_after_s == pytest.approx(2.0)
    # the address's bucket was not charged by the refusal
    assert limiter.check_all([Limit("key", "k4", 1.0, 1), Limit("ip", "203.0.113.2", 1.0, 1)])


def test_settings_refuse_a_password_in_the_redis_url_without_echoing_it() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        ServingSettings(rate_limit_redis_url="redis://:hunter2-secret@127.0.0.1:6390/0")
    assert "PASSWORD_FILE" in str(refused.value) and "hunter2" not in str(refused.value)
    with pytest.raises(ValidationError):
        ServingSettings(rate_limit_redis_url="http://127.0.0.1:6390")
    with pytest.raises(ValidationError):
        ServingSettings(rate_limit_redis_password="x", rate_limit_redis_password_file=Path("/p"))
    with pytest.raises(ValidationError):
        ServingSettings(trusted_proxies=["not-a-network"])
    with pytest.raises(ValidationError):
        ServingSettings(ip_rate_per_s=0)
    assert ServingSettings(ip_rate_per_s=2.5).ip_limit == (2.5, 5)


# the real thing: Redis and two replicas


@dataclass
class RedisNode:
    root: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KB_LOCAL_DIR": str(self.root), "KB_REDIS_PORT": str(self.port)}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def password_file(self) -> Path:
        return self.root / "redis" / "password"

    def run(self, action: str) -> None:
        result = subprocess.run(
            ["bash", str(REDIS_SCRIPT), action], env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis.sh {action} failed:\n{result.stderr[-3000:]}")


@dataclass
class Replica:
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def redis_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    node = RedisNode(tmp_path_factory.mktemp("redis"), free_port(6391))
    node.run("up")
    try:
        yield node
    finally:
        node.run("down")


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {name: new_key() for name in (*KEYS, "metrics")}


@pytest.fixture(scope="module")
def replicas(
    redis_node: RedisNode, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Replica]]:
    work = tmp_path_factory.mktemp("replicas")
    keys_file = work / "keys.json"
    entries = [
        {"sha256": hash_key(keys[name]), "name": name, "rate_per_s": SLOW, "burst": KEY_BURST}
        for name in KEYS
    ]
    entries.append({"sha256": hash_key(keys["metrics"]), "name": "metrics", "rate_per_s": 1000})
    keys_file.write_text(json.dumps(entries))
    env = {
        **os.environ,
        "KB_SERVING_API_KEYS_FILE": str(keys_file),
        "KB_SERVING_IP_RATE_PER_S": str(SLOW),
        "KB_SERVING_IP_BURST": str(IP_BURST),
        "KB_SERVING_TRUSTED_PROXIES": '["127.0.0.1/32"]',
        "KB_SERVING_RATE_LIMIT_REDIS_URL": redis_node.url,
        "KB_SERVING_RATE_LIMIT_REDIS_PASSWORD_FILE": str(redis_node.password_file),
        "KB_SERVING_RATE_LIMIT_REDIS_BREAKER": '{"failure_threshold": 3, "cooldown_s": 1}',
    }
    started: list[Replica] = []
    try:
        for n in range(2):
            port, log_path = free_port(), work / f"replica-{n}.log"
            with log_path.open("wb") as out:
                process = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "--factory"),
                        "kb_platform_tests.serving.test_shared_rate_limits:front_door",
                        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append(Replica(port, log_path, process))
        for replica in started:
            deadline = time.monotonic() + 60
            while probe(f"{replica.url}/livez") != 200:
                if replica.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"replica did not start:\n{replica.log_path.read_text()}")
                time.sleep(0.2)
        yield started
    finally:
        for replica in started:
            replica.process.terminate()
            replica.process.wait(30)


def _post(replica: Replica, key: str, client: str) -> httpx.Response:
    return httpx.post(
        f"{replica.url}/search",
        json={"query": "lift"},
        headers={"X-API-Key": key, "X-Forwarded-For": client},
        timeout=30,
    )


def _metric(replica: Replica, key: str, name: str, labels: str = "") -> float | None:
    """A value from the replica's /metrics (read with a key and an address of its own, each
    read from a new address: the reads pass the limits too)."""
    n = next(_reads)
    client = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
    text = httpx.get(
        f"{replica.url}/metrics", headers={"X-API-Key": key, "X-Forwarded-For": client}
    ).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{([^}}]*)}})? ([0-9.e+-]+)$", re.MULTILINE)
    values = [float(v) for found, v in pattern.findall(text) if labels in found]
    return sum(values) if values else None


def _allowed(responses: list[httpx.Response]) -> int:
    assert {r.status_code for r in responses} <= {200, 429}, [r.text for r in responses]
    return sum(r.status_code == 200 for r in responses)


def test_two_replicas_share_one_budget_per_key(
    replicas: list[Replica], keys: dict[str, str]
) -> None:
    started = time.monotonic()
    responses = [
        _post(replicas[i % 2], keys["shared"], f"198.51.100.{i + 1}") for i in range(4 * KEY_BURST)
    ]
    elapsed = time.monotonic() - started
    allowed = _allowed(responses)
    # The key's budget over the whole exchange, however the two replicas split it; each
    # replica's own buckets would have allowed twice the burst.
    assert KEY_BURST <= allowed <= KEY_BURST + math.floor(SLOW * elapsed)
    assert all(r.status_code == 200 for r in responses[:KEY_BURST])  # both replicas served
    refused = responses[-1]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= math.ceil(1 / SLOW)
    body = refused.json()
    assert body["code"] == "rate_limited" and "rate limit of key 'shared'" in body["error"]
    assert body["request_id"] == refused.headers["x-request-id"]
    for replica in replicas:
        assert _metric(replica, keys["metrics"], "kb_serving_rate_limit_shared") == 1
        local = _metric(replica, keys["metrics"], "kb_serving_rate_limit_local_decisions_total")
        assert local == 0


def test_an_address_over_its_budget_is_refused_whatever_key_it_uses(
    replicas: list[Replica], keys: dict[str, str]
) -> None:
    started = time.monotonic()
    names = ("a", "b", "c")
    responses = [
        _post(replicas[i % 2], keys[names[i % 3]], "203.0.113.7") for i in range(3 * IP_BURST)
    ]
    elapsed = time.monotonic() - started
    allowed = _allowed(responses)
    assert IP_BURST <= allowed <= IP_BURST + math.floor(SLOW * elapsed)
    refused = responses[-1]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "client address 203.0.113.7" in refused.json()["error"]
    # the keys themselves still have tokens (the address's refusals took none of theirs)
    other = _post(replicas[0], keys["a"], "203.0.113.8")
    assert other.status_code == 200, other.text
    for replica in replicas:
        refusals = _metric(
            replica, keys["metrics"], "kb_serving_rate_limited_requests_total", 'scope="ip"'
        )
        assert refusals is not None and refusals >= 1


def test_replicas_fall_back_to_their_own_buckets_while_redis_is_down(
    redis_node: RedisNode, replicas: list[Replica], keys: dict[str, str]
) -> None:
    redis_node.run("down")
    try:
        burst = KEY_BURST
        started = time.monotonic()
        responses = [
            _post(replicas[i % 2], keys["fallback"], f"198.51.100.{100 + i}")
            for i in range(4 * burst)
        ]
        elapsed = time.monotonic() - started
        allowed = _allowed(responses)  # answered, not failed: 200 or 429, never 5xx
        # each replica's own buckets: more than the shared budget, at most one budget each
        assert burst < allowed <= 2 * (burst + math.floor(SLOW * elapsed))
        for replica in replicas:
            assert _metric(replica, keys["metrics"], "kb_serving_rate_limit_shared") == 0
            local = _metric(replica, keys["metrics"], "kb_serving_rate_limit_local_decisions_total")
            assert local is not None and local >= 2 * burst
            state = _metric(
                replica, keys["metrics"], "kb_circuit_breaker_state", 'dependency="redis"'
            )
            assert state is not None and state >= 1  # open, or half-open while probing
            log = replica.log_path.read_text()
            assert log.count("rate limits fall back to this replica's own buckets") == 1
            assert redis_node.password_file.read_text().strip() not in log
    finally:
        redis_node.run("up")
    # Redis is back (empty: it keeps no data): after the breaker's cool-down a probe finds it
    for replica in replicas:
        deadline = time.monotonic() + 30
        while _metric(replica, keys["metrics"], "kb_serving_rate_limit_shared") != 1:
            assert time.monotonic() < deadline, replica.log_path.read_text()[-2000:]
            time.sleep(0.3)
        assert "rate limits shared through Redis at" in replica.log_path.read_text()
        assert "again" in replica.log_path.read_text()


def test_the_redis_script_refuses_a_bucket_that_never_refills(redis_node: RedisNode) -> None:
    from kb_platform.resilience.redis_buckets import Bucket, RedisBuckets

    async def run() -> list[Any]:
        buckets = RedisBuckets(
            redis_node.url, password=redis_node.password_file.read_text().strip(), prefix="t"
        )
        try:
            once = [Bucket("key:hard-cap", 0.0, 1)]
            return [await buckets.take(once), await buckets.take(once)]
        finally:
            await buckets.close()

    first, second = asyncio.run(run())
    assert first.allowed and not second.allowed and math.isinf(second.retry_after_s)
