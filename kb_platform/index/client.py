"""The Elasticsearch client the pipeline and the RAG service share: orjson for the JSON and
NDJSON bodies (a query vector or a bulk of them serialises ~10x faster than with the standard
library), and the current request id sent as ``X-Opaque-Id`` on every call made while a request
is handled (Elasticsearch shows it in its slow logs, tasks and deprecation logs).

The request id rides on the HTTP node rather than on ``Elasticsearch.options(opaque_id=...)``:
``options`` builds a new client with its ~40 namespaced sub-clients each time, ~0.1 ms of CPU per
request on the service's hot path.

Every call goes through a circuit breaker (kb_platform.resilience.elasticsearch): by default the
process's one for the cluster's address, so all clients of a process learn together that the
cluster is down and stop waiting on it."""

from __future__ import annotations

from typing import Any

import orjson
from elastic_transport import HttpHeaders, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import Elasticsearch
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

from kb_platform.resilience import registry
from kb_platform.resilience.circuit_breaker import CircuitBreaker
from kb_platform.resilience.elasticsearch import BreakerTransport
from kb_platform.structured_logs import current_request_id

OPAQUE_ID_HEADER = "x-opaque-id"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class OrjsonJsonSerializer(JsonSerializer):
    """JSON through orjson; anything orjson cannot take (dates, UUIDs, numpy scalars of other
    kinds) falls back to the client's own ``default``."""

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default, option=_ORJSON_OPTIONS)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class OrjsonNdjsonSerializer(NdjsonSerializer):
    """The same for _bulk and _msearch bodies (one JSON object a line)."""

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default, option=_ORJSON_OPTIONS)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


SERIALIZERS = {
    JsonSerializer.mimetype: OrjsonJsonSerializer(),
    NdjsonSerializer.mimetype: OrjsonNdjsonSerializer(),
}


class RequestIdNode(Urllib3HttpNode):
    """urllib3's node, adding ``X-Opaque-Id: <request id>`` when a request id is current."""

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        request_id = current_request_id()
        if request_id and (headers is None or OPAQUE_ID_HEADER not in headers):
            headers = headers.copy() if headers is not None else HttpHeaders()
            headers[OPAQUE_ID_HEADER] = request_id
        return super().perform_request(
            method, target, body=body, headers=headers, request_timeout=request_timeout
        )


def elasticsearch_client(
    url: str,
    *,
    api_key: str | None = None,
    request_timeout: float = 30.0,
    max_retries: int = 3,
    retry_on_timeout: bool = True,
    opaque_id: str | None = None,
    breaker: CircuitBreaker | bool = True,
) -> Elasticsearch:
    """``opaque_id``: sent on every call (a run's request id); otherwise the current request's
    id is, while one is set. ``breaker``: True for the process's breaker of this address
    (``registry.breaker("elasticsearch", ...)``), a breaker of the caller's own, or False."""
    client = Elasticsearch(
        url,
        api_key=api_key or None,
        request_timeout=request_timeout,
        max_retries=max_retries,
        retry_on_timeout=retry_on_timeout,
        serializers=SERIALIZERS,
        node_class=RequestIdNode,
        headers={OPAQUE_ID_HEADER: opaque_id} if opaque_id else None,
        transport_class=BreakerTransport,
    )
    if breaker is True:
        breaker = registry.breaker("elasticsearch", registry.target_of(url))
    if isinstance(breaker, CircuitBreaker):
        transport = client.transport
        assert isinstance(transport, BreakerTransport)
        transport.breaker = breaker
    return client
