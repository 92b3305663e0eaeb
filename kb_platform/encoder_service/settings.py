"""Settings of the encoder service, read once from the environment (prefix ``KB_ENCODER_``).

The service and its callers share one internal token: the service reads it from a file
(``token_file``, a mounted secret) or the ``KB_ENCODER_TOKEN`` variable; it is never logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EncoderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KB_ENCODER_", extra="ignore")

    token: SecretStr | None = None
    token_file: Path | None = None

    # request limits: a request is one document's chunks at most, each chunk a few hundred words
    max_texts: int = 512
    max_text_chars: int = 20_000
    max_request_bytes: int = 16 * 1024 * 1024

    # adaptive batching (BentoML): texts of concurrent requests are encoded together
    max_batch_size: int = 128
    max_latency_ms: int = 30_000

    torch_threads: int = 2  # batches of documents gain from both cores (DESIGN.md 7)

    def secret(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip() or None
        return self.token.get_secret_value() if self.token else None


@lru_cache(maxsize=1)
def get_encoder_settings() -> EncoderSettings:
    return EncoderSettings()
