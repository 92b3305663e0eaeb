"""Settings of the RAG service, read once from the environment (prefix ``KB_SERVING_``).

API keys are stored as SHA-256 hashes only (``api_keys_file`` or ``KB_SERVING_API_KEYS``); the
secret of an OpenAI-compatible generator is read from a file, never from a setting's value.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb_platform.models.answerers import DEFAULT_ANSWERER
from kb_platform.models.registry import QueryRuntime


class GeneratorBackend(StrEnum):
    LLAMA_CPP = "llama-cpp"  # an instruction-tuned GGUF chat model in llama.cpp, in process
    LOCAL = "local"  # gemma-3-270m (a base model) from the BentoML model store, in process
    OPENAI = "openai"  # an OpenAI-compatible server (vLLM, Ollama, ...)


class ApiKeyEntry(BaseModel):
    """One accepted key: its SHA-256 (hex), a name for logs and metrics, optional own limits."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = "default"
    rate_per_s: float | None = None
    burst: int | None = None


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KB_SERVING_", extra="ignore")

    # authentication: keys as hashes, from the environment (JSON list) and/or a secret file
    # (JSON list of the same objects, or one hex hash per line)
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    api_keys_file: Path | None = None
    metrics_require_key: bool = True

    # per-key token bucket: sustained requests per second and burst
    rate_per_s: float = 20.0
    burst: int = 40

    # request limits
    max_request_bytes: int = 8 * 1024 * 1024
    max_image_bytes: int = 6 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_query_chars: int = 1000
    max_k: int = 50

    # time and concurrency, per worker
    search_timeout_s: float = 5.0
    ask_timeout_s: float = 60.0
    search_concurrency: int = 32
    ask_concurrency: int = 4
    generation_concurrency: int = 1

    # retrieval
    fusion_window: int = 20
    ask_sources: int = 4
    max_source_chars: int = 700
    # /ask refuses without generating when no source's MiniLM cosine to the question reaches
    # this (kb_platform/serving/relevance.py says where 0.30 comes from); 0 disables it
    min_source_similarity: float = 0.30

    # generation
    generator: GeneratorBackend = GeneratorBackend.LLAMA_CPP
    # llama-cpp backend: a key of kb_platform.models.answerers.ANSWERERS (benchmarks/answers.py
    # chose the default), its context window and threads (0: one per core)
    answerer: str = DEFAULT_ANSWERER
    answerer_context_tokens: int = 4096
    answerer_threads: int = 0
    generator_quantize: bool = True  # int8 dynamic quantization of the Linear layers on CPU
    generation_timeout_s: float = 20.0
    max_new_tokens: int = 96
    max_new_tokens_cap: int = 256
    openai_base_url: str | None = None  # e.g. http://vllm:8000/v1
    openai_model: str | None = None
    openai_api_key_file: Path | None = None

    elasticsearch_api_key_file: Path | None = None  # none on loopback

    # CLIP (image search): an export directory, else the promoted checkpoint if there is one
    clip_export_dir: Path | None = None

    # multimodal answers: images among /ask's sources (with CLIP), the text read from an image
    # sent with the question, and the stored images the answers cite (GET /images/...)
    ask_image_sources: int = 2  # at most this many of an answer's sources are images
    question_image_ocr_timeout_s: float = 20.0
    blob_dir: Path | None = None  # where the images are stored; default: the pipeline's store
    max_image_response_bytes: int = 8 * 1024 * 1024
    max_image_side: int = 4096  # the largest ?max_side= a client may ask for
    openai_vision: bool = False  # the OpenAI-compatible model takes image parts (a VLM)

    # the query encoder's runtime: MiniLM on ONNX Runtime with int8 weights in its middle layers
    # (Cranfield nDCG@10 within 0.002 of the float vectors', at 0.7x their time); onnx is the
    # float graph (the index's own vectors), torch the PyTorch model (benchmarks/retrieval.py)
    query_encoder: QueryRuntime = QueryRuntime.ONNX_INT8
    torch_threads: int = 1  # one intra-op thread per request is fastest here (DESIGN.md 7)
    readiness_cache_s: float = 1.0


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
