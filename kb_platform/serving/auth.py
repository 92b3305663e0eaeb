"""API keys: clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; the service
knows only the keys' SHA-256 hashes (keys are random 256-bit tokens, so a fast hash suffices).

    python -m kb_platform.serving.auth   # prints a new key and the line to add for it
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kb_platform.serving.settings import ApiKeyEntry, ServingSettings

KEY_PREFIX = "kb_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and a short id derived from its hash (safe to log)."""

    name: str
    key_id: str
    rate_per_s: float | None
    burst: int | None


def read_keys_file(path: Path) -> list[ApiKeyEntry]:
    """A JSON list of ``{"sha256", "name"?, "rate_per_s"?, "burst"?}`` or one hex hash a line."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return [ApiKeyEntry.model_validate(item) for item in json.loads(text)]
    return [
        ApiKeyEntry(sha256=line.split()[0].lower(), name=f"key-{n}")
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class ApiKeys:
    def __init__(self, entries: Iterable[ApiKeyEntry]):
        self._by_hash: dict[str, Principal] = {
            e.sha256: Principal(e.name, e.sha256[:8], e.rate_per_s, e.burst) for e in entries
        }

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> ApiKeys:
        entries = list(settings.api_keys)
        if settings.api_keys_file is not None:
            entries += read_keys_file(settings.api_keys_file)
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_hash)

    def verify(self, key: str) -> Principal | None:
        # A lookup by hash leaks nothing useful through timing: the attacker chooses the input
        # of the hash, not the stored value it is compared with.
        return self._by_hash.get(hash_key(key))

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        key = presented_key(headers)
        return self.verify(key) if key else None


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def main() -> None:
    key = new_key()
    entry = {"sha256": hash_key(key), "name": "my-client"}
    # A command-line tool's output, not logging: the key is shown once and stored nowhere.
    print(f"API key (give it to the client, it is not stored): {key}")
    print(f"add to the keys file (JSON list): {json.dumps(entry)}")


if __name__ == "__main__":
    main()
