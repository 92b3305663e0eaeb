"""kb-platform RAG service: /search and /ask over the chunk index, warmed before it is ready.

    bentoml serve bentos/rag/service.py:RagService     # from the checkout (or: cd bentos/rag)
    bentoml build -f bentos/rag/bentofile.yaml .       # a bento (references the generator model)

Everything but the HTTP surface lives in kb_platform.serving (runtime, limits, auth, metrics);
the encoders, retriever and prompts are kb_platform's own, the ones the Dagster assets use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kb_platform.models.answerers import DEFAULT_ANSWERER, answerer
from kb_platform.serving import sse
from kb_platform.serving.errors import ServingError
from kb_platform.serving.middleware import ServingMiddleware
from kb_platform.serving.runtime import RagRuntime
from kb_platform.serving.schemas import (
    AskRequest,
    AskResponse,
    AskStreamEvent,
    SearchRequest,
    SearchResponse,
)
from kb_platform.serving.settings import get_serving_settings
from kb_platform.structured_logs import configure_json_logging, current_request_id

log = logging.getLogger("kb_platform.serving.service")
T = TypeVar("T")


def _respond(call: Callable[[], T]) -> T | JSONResponse:
    try:
        return call()
    except ServingError as exc:
        return JSONResponse(
            exc.body(current_request_id()), status_code=exc.status, headers=exc.headers
        )


def _image(request: Request) -> Response:
    """GET /images/<doc_id>/<image>.png[?max_side=N]: a stored image that answers cite."""
    side = request.query_params.get("max_side")
    if side is not None and not side.isdigit():
        return JSONResponse(
            {"error": "max_side must be a whole number", "code": "bad_request"}, 400
        )
    runtime: RagRuntime = bentoml.get_current_service().runtime
    key = f"images/{request.path_params['key']}"
    served = _respond(lambda: runtime.image(key, int(side) if side else None))
    if isinstance(served, Response):
        return served
    return Response(
        served.data,
        media_type=served.media_type,
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# Starlette runs a plain function in its thread pool, so a blob read never blocks the loop.
images_app = Starlette(routes=[Route("/{key:path}", _image, methods=["GET"])])


@bentoml.asgi_app(images_app, path="/images")
@bentoml.service(
    name="kb-rag",
    workers=1,  # one process, threads inside: the per-key rate limits stay exact
    threads=24,
    traffic={"timeout": 120},  # safety net; endpoints have their own, shorter limits
    # kb_platform.serving.middleware serves /metrics (kb_serving_*); BentoML's own per-request
    # instruments would cost ~3 % of /search's throughput and repeat kb_serving_request_seconds.
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},  # ServingMiddleware logs each request as JSON
)
class RagService:
    # The default answerer, by tag, so `bentoml build` packs it; the service itself loads it
    # through kb_platform.models.registry (which joins it into the store first if absent).
    answerer_model = bentoml.models.BentoModel(f"{answerer(DEFAULT_ANSWERER).store_name}:latest")

    def __init__(self) -> None:
        configure_json_logging()
        self.runtime = RagRuntime(get_serving_settings())
        # Warm-up runs in the background so /livez answers at once and /readyz says "not yet".
        self.runtime.start_warmup()

    def __is_alive__(self) -> bool:
        return self.runtime.is_alive()

    def __is_ready__(self) -> bool:
        return self.runtime.is_ready()

    @bentoml.api(route="/search", output_spec=SearchResponse)
    def search(self, request: SearchRequest, /) -> SearchResponse | JSONResponse:
        """Chunks (or images) for a text query or an uploaded image: bm25, knn or hybrid."""
        return _respond(lambda: self.runtime.search(request, current_request_id()))

    @bentoml.api(route="/ask", output_spec=AskResponse)
    def ask(self, request: AskRequest, /) -> AskResponse | JSONResponse:
        """A grounded answer that cites the retrieved chunks by number."""
        return _respond(lambda: self.runtime.ask(request, current_request_id()))

    @bentoml.api(route="/ask/stream", output_spec=AskStreamEvent)
    def ask_stream(self, request: AskRequest, /) -> StreamingResponse | JSONResponse:
        """The same answer as /ask, streamed as server-sent events: the sources, the answer's
        pieces as they are generated, then the whole response with its citations."""
        return _respond(
            lambda: StreamingResponse(
                sse.ask_stream(self.runtime.ask_events(request, current_request_id())),
                media_type=sse.MEDIA_TYPE,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        )

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.runtime.close()


RagService.add_asgi_middleware(ServingMiddleware)
