"""Everything one service worker holds: the Elasticsearch client, the encoders, the generator,
readiness; and the two operations, search and ask. BentoML-free, so tests and benchmarks can
drive it too; bentos/rag/service.py exposes it over HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from elasticsearch import ApiError, NotFoundError, TransportError

from kb_platform.config import Settings, get_settings
from kb_platform.index.client import elasticsearch_client
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import (
    RRF_K,
    ClipQueries,
    Filters,
    Hit,
    Retriever,
)
from kb_platform.models import registry
from kb_platform.resilience.circuit_breaker import failed_status
from kb_platform.resilience.elasticsearch import ElasticsearchUnavailable
from kb_platform.resources import blob_store_for
from kb_platform.resources.blob_store import BlobStore, LocalBlobStore
from kb_platform.serving.answer import Answer, stream_answer
from kb_platform.serving.clip import load_clip
from kb_platform.serving.errors import SearchBackendUnavailable, ServingError
from kb_platform.serving.generation import (
    Generator,
    LlamaCppAnswerGenerator,
    LocalAnswerGenerator,
    OpenAICompatibleGenerator,
)
from kb_platform.serving.images import ImageEndpoint, ServedImage
from kb_platform.serving.limits import load_image
from kb_platform.serving.metrics import metrics
from kb_platform.serving.multimodal import AskContext, AskContextBuilder, fuse_sources
from kb_platform.serving.parts import answer_parts
from kb_platform.serving.prompt import Source
from kb_platform.serving.readiness import Readiness
from kb_platform.serving.relevance import EncodeMany, best_similarity
from kb_platform.serving.schemas import (
    AskRequest,
    AskResponse,
    Citation,
    QuestionImage,
    SearchRequest,
    SearchResponse,
)
from kb_platform.serving.search import filters_of, search_image, search_text, to_search_hit
from kb_platform.serving.settings import GeneratorBackend, ServingSettings, read_secret

log = logging.getLogger(__name__)


class RagRuntime:
    def __init__(
        self,
        settings: ServingSettings,
        base: Settings | None = None,
    ):
        self.settings = settings
        self.base = base or get_settings()
        self.names = IndexNames(self.base.elasticsearch_index_base)
        self.es = elasticsearch_client(
            self.base.elasticsearch_url,
            api_key=read_secret(settings.elasticsearch_api_key_file),
            request_timeout=settings.search_timeout_s,
            max_retries=1,
            retry_on_timeout=False,
        )
        self.readiness = Readiness(
            self.es, self.names.read_alias, cache_s=settings.readiness_cache_s
        )
        self.encode: Callable[[str], np.ndarray] | None = None
        self.encode_many: EncodeMany | None = None
        self.generator: Generator | None = None
        self.clip: ClipQueries | None = None
        self.clip_missing = "the service is still warming up"
        self.blobs: BlobStore = (
            LocalBlobStore(base_dir=str(settings.blob_dir))
            if settings.blob_dir is not None
            else blob_store_for(self.base)
        )
        self.context = AskContextBuilder(
            settings, self.names.read_alias, self.base.ocr_languages, self.blobs
        )
        self.images = ImageEndpoint(
            self.blobs,
            self.es,
            self.names.read_alias,
            max_bytes=settings.max_image_response_bytes,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
        )

    # warm-up and readiness

    def start_warmup(self) -> threading.Thread:
        thread = threading.Thread(target=self.warm_up, name="kb-warmup", daemon=True)
        thread.start()
        return thread

    def warm_up(self) -> None:
        m = metrics()
        m.ready.set(0)
        started = time.perf_counter()
        try:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
            with self._timed("text_encoder"):
                encoder = registry.query_encoder(self.settings.query_encoder)
                self.encode = lambda query: encoder.encode([query])[0]
                self.encode_many = encoder.encode
            m.model_load.labels("text_encoder").set(encoder.load_seconds)
            m.query_encoder.labels(encoder.version, self.settings.query_encoder.value).set(1)
            with self._timed("generator"):
                self.generator = self._load_generator()
            with self._timed("clip"):
                self.clip, self.clip_missing = load_clip(self.settings, self.base)
            with self._timed("elasticsearch"):
                self._warm_index()
        except Exception as exc:
            self.readiness.warmup_error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed; the service stays not ready")
            return
        total = time.perf_counter() - started
        m.warmup.labels("total").set(total)
        self.readiness.warm.set()
        m.ready.set(1 if self.readiness.is_ready() else 0)
        log.info("warm in %.1fs", total, extra={"warmup_s": round(total, 2)})

    @contextmanager
    def _timed(self, component: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        metrics().warmup.labels(component).set(seconds)
        log.info(
            "warm-up %s: %.2fs",
            component,
            seconds,
            extra={"component": component, "seconds": round(seconds, 3)},
        )

    def _load_generator(self) -> Generator:
        settings = self.settings
        if settings.generator is GeneratorBackend.OPENAI:
            if not (settings.openai_base_url and settings.openai_model):
                raise ValueError("the openai generator needs KB_SERVING_OPENAI_BASE_URL and _MODEL")
            remote = OpenAICompatibleGenerator(
                settings.openai_base_url,
                settings.openai_model,
                read_secret(settings.openai_api_key_file),
                vision=settings.openai_vision,
            )
            remote.warmup()
            return remote
        if settings.generator is GeneratorBackend.LLAMA_CPP:
            chat = registry.chat_answerer(
                settings.answerer,
                threads=settings.answerer_threads or None,
                n_ctx=settings.answerer_context_tokens,
            )
            metrics().model_load.labels("generator").set(chat.load_seconds)
            return LlamaCppAnswerGenerator(chat, settings.generation_concurrency)
        model = registry.generator(quantize=settings.generator_quantize)
        metrics().model_load.labels("generator").set(model.load_seconds)
        return LocalAnswerGenerator(model, settings.generation_concurrency)

    def _warm_index(self) -> None:
        """Checks the alias and runs one real query through it; an unreachable index is not
        fatal here: readiness keeps checking it."""
        ok, detail = self.readiness.index_status()
        if not ok:
            log.warning("index not available at warm-up: %s", detail)
            return
        self._retriever().hybrid("warm up the index", k=1)

    def is_alive(self) -> bool:
        """False only when the warm-up failed for good: a restart is the remedy."""
        return self.readiness.warmup_error is None

    def is_ready(self) -> bool:
        ready = self.readiness.is_ready()
        metrics().ready.set(1 if ready else 0)
        return ready

    # operations

    def _require_warm(self) -> None:
        if not self.readiness.warm.is_set() or self.encode is None:
            raise ServingError(
                503,
                "the service is warming up; retry shortly",
                code="warming_up",
                headers={"Retry-After": "5"},
            )

    def _retriever(self) -> Retriever:
        assert self.encode is not None
        return Retriever(
            self.es,
            self.encode,
            index=self.names.read_alias,
            num_candidates_factor=self.base.knn_num_candidates_factor,
            rescore_oversample=self.base.knn_rescore_oversample or None,
            fusion_window=self.settings.fusion_window,
            rrf_k=self.base.rrf_k,
            clip=self.clip,
        )

    @contextmanager
    def _index_errors(self) -> Iterator[None]:
        try:
            yield
        except NotFoundError:
            raise SearchBackendUnavailable(f"index {self.names.read_alias} not found") from None
        except ElasticsearchUnavailable as exc:  # the breaker refused: nothing was sent
            raise SearchBackendUnavailable(str(exc), retry_after_s=exc.retry_after_s) from None
        except TransportError as exc:  # connection refused, timeouts
            raise SearchBackendUnavailable(type(exc).__name__) from None
        except ApiError as exc:
            if failed_status(exc.status_code):
                raise SearchBackendUnavailable(f"status {exc.status_code}") from None
            raise

    def _retrieve(
        self,
        retriever: Retriever,
        *,
        query: str | None,
        image: Path | None,
        mode: str,
        target: str,
        k: int,
        filters: Filters,
    ) -> tuple[list[Hit], str]:
        started = time.perf_counter()
        with self._index_errors():
            if image is not None:
                picture = load_image(
                    image,
                    max_bytes=self.settings.max_image_bytes,
                    max_pixels=self.settings.max_image_pixels,
                )
                hits, label = search_image(
                    retriever,
                    picture,
                    target=target,
                    k=k,
                    filters=filters,
                    clip_missing=self.clip_missing,
                )
                if query:  # question and image: text hits and image-matched chunks, fused
                    text_hits, _ = search_text(
                        retriever, query, mode=mode, target=target, k=k, filters=filters
                    )
                    hits = fuse_sources([text_hits, hits], k, max_images=k, rrf_k=RRF_K)
                    label = f"{mode}+{label}"
            else:
                assert query is not None
                hits, label = search_text(
                    retriever,
                    query,
                    mode=mode,
                    target=target,
                    k=k,
                    filters=filters,
                    clip_missing=self.clip_missing,
                )
        metrics().retrieval.labels(label).observe(time.perf_counter() - started)
        return hits, label

    def search(self, request: SearchRequest, request_id: str | None = None) -> SearchResponse:
        self._require_warm()
        started = time.perf_counter()
        hits, label = self._retrieve(
            self._retriever(),
            query=request.query,
            image=request.image,
            mode=request.mode,
            target=request.target,
            k=request.k,
            filters=filters_of(request.filters),
        )
        return SearchResponse(
            request_id=request_id,
            mode=label,
            hits=[to_search_hit(hit) for hit in hits],
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def ask(self, request: AskRequest, request_id: str | None = None) -> AskResponse:
        for event in self.ask_events(request, request_id):
            if isinstance(event, AskResponse):
                return event
        raise RuntimeError("ask_events ended without its response")

    def ask_events(
        self, request: AskRequest, request_id: str | None = None
    ) -> Iterator[list[Citation] | str | AskResponse]:
        """The numbered sources, then the answer's text pieces as they are generated, then the
        whole response (the text to keep, its citations). Retrieval runs before this returns,
        so a service that is warming up or an index that is down fails the request at once,
        before any event is sent."""
        self._require_warm()
        assert self.generator is not None
        generator = self.generator
        settings = self.settings
        started = time.perf_counter()
        context, retrieval_s = self._ask_context(request, request_id)
        budget = min(
            request.timeout_s or settings.generation_timeout_s, settings.generation_timeout_s
        )
        max_tokens = min(request.max_tokens or settings.max_new_tokens, settings.max_new_tokens_cap)
        question_image = context.question_image
        pieces = stream_answer(
            request.question,
            context.hits,
            generator,
            max_new_tokens=max_tokens,
            deadline=time.monotonic() + budget,
            max_source_chars=settings.max_source_chars,
            relevance=self._relevance,
            min_relevance=settings.min_source_similarity,
            question_image_text=question_image.ocr_text if question_image else None,
            images=context.images,
        )

        def events() -> Iterator[list[Citation] | str | AskResponse]:
            generating = time.perf_counter()
            first_token_s = None
            for item in pieces:
                if isinstance(item, Answer):
                    yield self._respond(
                        item,
                        generator.name,
                        request_id,
                        started,
                        retrieval_s,
                        first_token_s,
                        question_image,
                    )
                    return
                if isinstance(item, str) and first_token_s is None:
                    first_token_s = time.perf_counter() - generating
                    metrics().first_token.labels(generator.name).observe(first_token_s)
                yield item

        return events()

    def _ask_context(self, request: AskRequest, request_id: str | None) -> tuple[AskContext, float]:
        """The context and the seconds its retrieval took (the question image's OCR after)."""
        started = time.perf_counter()
        picture = self.context.picture(request)
        with self._index_errors():
            hits, label = self.context.retrieve(self._retriever(), request, picture)
        retrieval_s = time.perf_counter() - started
        metrics().retrieval.labels(label).observe(retrieval_s)
        vision = getattr(self.generator, "vision", False)
        return self.context.describe(hits, picture, vision=vision), retrieval_s

    def image(self, key: str, side: int | None = None) -> ServedImage:
        """A stored image that answers cite (kb_platform.serving.images)."""
        with self._index_errors():
            return self.images.fetch(key, side)

    def _relevance(self, question: str, sources: list[Source]) -> float:
        assert self.encode_many is not None
        return best_similarity(self.encode_many, question, sources)

    def _respond(
        self,
        answer: Answer,
        generator: str,
        request_id: str | None,
        started: float,
        retrieval_s: float,
        first_token_s: float | None,
        question_image: QuestionImage | None = None,
    ) -> AskResponse:
        m = metrics()
        m.generation.labels(generator, answer.finish_reason).observe(answer.generation_s)
        m.tokens.labels(generator).inc(answer.tokens)
        kind = "refused" if answer.refused else "extractive" if answer.extractive else "generated"
        m.answers.labels(kind).inc()
        return AskResponse(
            request_id=request_id,
            answer=answer.text,
            parts=answer_parts(answer.text, answer.citations),
            question_image=question_image,
            citations=answer.citations,
            sources=answer.sources,
            extractive=answer.extractive,
            refused=answer.refused,
            fallback_reason=answer.fallback_reason,
            finish_reason=answer.finish_reason,  # type: ignore[arg-type]
            generator=generator,
            tokens_generated=answer.tokens,
            retrieval_ms=round(retrieval_s * 1000, 2),
            first_token_ms=round(first_token_s * 1000, 2) if first_token_s is not None else None,
            generation_ms=round(answer.generation_s * 1000, 2),
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def close(self) -> None:
        self.es.close()
