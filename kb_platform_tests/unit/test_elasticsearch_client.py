"""The shared Elasticsearch client: the request id travels as X-Opaque-Id, bodies go through
orjson. A real HTTP server on loopback stands in for the cluster's front door, so the headers
the client really sends can be read."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from kb_platform.index.client import (
    OrjsonJsonSerializer,
    OrjsonNdjsonSerializer,
    elasticsearch_client,
)
from kb_platform.structured_logs import reset_request_id, set_request_id


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"version": {"number": "8.19.0"}, "tagline": "You Know, for Search"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def front_door() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_current_request_id_is_sent_as_x_opaque_id(
    front_door: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = front_door
    client = elasticsearch_client(url, max_retries=0)
    token = set_request_id("req-123")
    try:
        client.info()
    finally:
        reset_request_id(token)
    client.info()
    assert seen[0]["x-opaque-id"] == "req-123"
    assert "x-opaque-id" not in seen[1]  # no request, no id
    # An id set explicitly through options() wins over the current one.
    token = set_request_id("req-456")
    try:
        client.options(opaque_id="explicit").info()
    finally:
        reset_request_id(token)
    assert seen[2]["x-opaque-id"] == "explicit"
    client.close()


def test_orjson_bodies_take_vectors_dates_and_ndjson() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    body = OrjsonJsonSerializer().dumps(
        {"v": vector, "n": np.int64(7), "at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)}
    )
    assert json.loads(body) == {"v": [0.25, -1.5, 3.0], "n": 7, "at": "2026-01-02T00:00:00+00:00"}
    lines = OrjsonNdjsonSerializer().dumps([{}, {"query": {"match_all": {}}}])
    assert lines == b'{}\n{"query":{"match_all":{}}}\n'
    assert OrjsonNdjsonSerializer().loads(lines) == [{}, {"query": {"match_all": {}}}]
    with pytest.raises(Exception, match="Unable to serialize"):
        OrjsonJsonSerializer().dumps({"bad": object()})
