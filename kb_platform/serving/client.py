"""A small client of the RAG service's HTTP API (``kb-platform ask``, the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class RagServiceError(RuntimeError):
    """The RAG service could not be reached or refused the request."""


class RagClient:
    def __init__(self, url: str, api_key_file: Path, *, timeout_s: float = 120.0):
        if not api_key_file.is_file():
            raise RagServiceError(
                f"no API key at {api_key_file}: `kb-platform services up rag` makes one"
            )
        key = api_key_file.read_text().strip()
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(route, json=body)
        except httpx.TransportError as exc:
            raise RagServiceError(
                f"the RAG service at {self.url} did not answer ({type(exc).__name__}): "
                "`kb-platform services up rag`"
            ) from None
        if response.status_code != 200:
            raise RagServiceError(f"{route} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid") -> dict[str, Any]:
        return self._post("/search", {"query": query, "k": k, "mode": mode})

    def ask(self, question: str, *, k: int = 4) -> dict[str, Any]:
        return self._post("/ask", {"question": question, "k": k})
