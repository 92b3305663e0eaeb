"""Settings of the encoder service, read once from the environment (prefix ``KB_ENCODER_``).

The service and its callers share one internal token: the service reads it from a file
(``token_file``, a mounted secret) or the ``KB_ENCODER_TOKEN`` variable; it is never logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb_platform.resilience.circuit_breaker import BreakerConfig


class EncoderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KB_ENCODER_", extra="ignore")

    token: SecretStr | None = None
    token_file: Path | None = None

    # request limits: a request is one document's chunks at most, each chunk a few hundred words
    max_texts: int = 512
    max_text_chars: int = 20_000
    max_request_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000  # a CLIP item's image (it is resized to 224 px anyway)

    # adaptive batching (BentoML): texts of concurrent requests are encoded together. BentoML
    # answers 503 to a request it expects to wait longer than max_latency_ms; a backlog of
    # ingestion requests is work to queue, not to shed (a 503 makes the step retry the whole
    # request later), so the bound is the request timeout (bentos/encoder: traffic timeout).
    max_batch_size: int = 128
    max_latency_ms: int = 120_000

    torch_threads: int = 2  # batches of documents gain from both cores (DESIGN.md 7)

    def secret(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip() or None
        return self.token.get_secret_value() if self.token else None


@lru_cache(maxsize=1)
def get_encoder_settings() -> EncoderSettings:
    return EncoderSettings()


class EncoderClientSettings(BaseSettings):
    """Settings of the encoder service's callers (the pipeline's resources), prefix
    ``KB_ENCODER_CLIENT_``: the circuit breaker around the service, e.g.
    ``KB_ENCODER_CLIENT_BREAKER='{"failure_threshold": 3, "cooldown_s": 5}'``."""

    model_config = SettingsConfigDict(env_prefix="KB_ENCODER_CLIENT_", extra="ignore")

    breaker: BreakerConfig = BreakerConfig()


@lru_cache(maxsize=1)
def get_encoder_client_settings() -> EncoderClientSettings:
    return EncoderClientSettings()
