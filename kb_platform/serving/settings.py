"""Settings of the RAG service, read once from the environment (prefix ``KB_SERVING_``).

API keys are stored as SHA-256 hashes only (``api_keys_file`` or ``KB_SERVING_API_KEYS``); the
secret of an OpenAI-compatible generator is read from a file, never from a setting's value; the
password of the rate limits' Redis from a file or its own variable, never from the URL.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb_platform.models.answerers import DEFAULT_ANSWERER
from kb_platform.models.registry import QueryRuntime
from kb_platform.resilience.circuit_breaker import BreakerConfig

REDIS_SCHEMES = ("redis", "rediss", "unix")


def read_secret(path: Path | None) -> str | None:
    """A secret from its file (surrounding whitespace dropped); None without a file or when the
    file is empty."""
    return (path.read_text(encoding="utf-8").strip() or None) if path is not None else None


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
    # hide_input_in_errors: a rejected value (a URL with a password in it) is not echoed
    model_config = SettingsConfigDict(
        env_prefix="KB_SERVING_", extra="ignore", hide_input_in_errors=True
    )

    # authentication: keys as hashes, from the environment (JSON list) and/or a secret file
    # (JSON list of the same objects, or one hex hash per line)
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    api_keys_file: Path | None = None
    metrics_require_key: bool = True

    # per-key token bucket: sustained requests per second and burst
    rate_per_s: float = 20.0
    burst: int = 40
    # per client address, whatever the key (off unless set: behind a proxy every request comes
    # from the proxy's address, so set trusted_proxies first); the address is the peer's, or
    # from X-Forwarded-For when the peer is one of trusted_proxies (JSON list of CIDRs)
    ip_rate_per_s: float | None = Field(default=None, gt=0)
    ip_burst: int | None = Field(default=None, ge=1)  # default: twice ip_rate_per_s, at least 1
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # the buckets shared by every replica, in Redis (redis://host:port/db, no password in it);
    # unset, or Redis unreachable: each replica's own buckets
    rate_limit_redis_url: str | None = None
    rate_limit_redis_password: SecretStr | None = None
    rate_limit_redis_password_file: Path | None = None
    rate_limit_redis_timeout_s: float = Field(default=0.25, gt=0)
    rate_limit_redis_prefix: str = "kb:ratelimit"
    rate_limit_redis_breaker: BreakerConfig = BreakerConfig(failure_threshold=3, cooldown_s=5.0)

    # circuit breakers (JSON objects, see kb_platform.resilience.circuit_breaker.BreakerConfig):
    # an open one answers 503 with Retry-After at once (Elasticsearch) or answers extractively
    # at once (the OpenAI-compatible answer server)
    elasticsearch_breaker: BreakerConfig = BreakerConfig()
    generator_breaker: BreakerConfig = BreakerConfig()

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

    @field_validator("rate_limit_redis_url")
    @classmethod
    def _redis_url_without_password(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"rate_limit_redis_url must be one of {REDIS_SCHEMES} URLs")
        if parts.password:
            raise ValueError(
                "rate_limit_redis_url must not hold a password (URLs end up in logs): use "
                "KB_SERVING_RATE_LIMIT_REDIS_PASSWORD_FILE or KB_SERVING_RATE_LIMIT_REDIS_PASSWORD"
            )
        return url

    @model_validator(mode="after")
    def _one_redis_password(self) -> ServingSettings:
        if self.rate_limit_redis_password and self.rate_limit_redis_password_file:
            raise ValueError("set the Redis password by file or by variable, not both")
        return self

    def redis_password(self) -> str | None:
        if self.rate_limit_redis_password_file is not None:
            return read_secret(self.rate_limit_redis_password_file)
        if self.rate_limit_redis_password is not None:
            return self.rate_limit_redis_password.get_secret_value()
        return None

    @property
    def ip_limit(self) -> tuple[float, int] | None:
        """(rate, burst) of the per-address bucket, None when it is off."""
        if self.ip_rate_per_s is None:
            return None
        return self.ip_rate_per_s, self.ip_burst or max(1, round(2 * self.ip_rate_per_s))


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
