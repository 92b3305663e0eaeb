"""Answer generators behind one interface: the local gemma-3-270m or an OpenAI-compatible server
(vLLM, Ollama, ...). Each honours a token cap, stop sequences and a deadline; a generation that
cannot start or finish in time reports ``timeout`` and the caller answers extractively."""

from __future__ import annotations

import threading
import time
from typing import Protocol

import httpx

from kb_platform.models.generator import Generation, LocalGenerator
from kb_platform.serving.prompt import STOP, Prompt


class Generator(Protocol):
    name: str

    def generate(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Generation: ...


class LocalAnswerGenerator:
    """The in-process model, at most ``concurrency`` generations at once (CPU-bound); a request
    that cannot get a slot before its deadline times out without generating."""

    def __init__(self, model: LocalGenerator, concurrency: int = 1):
        self.model = model
        self.name = model.name
        self._slots = threading.BoundedSemaphore(concurrency)

    def generate(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Generation:
        started = time.perf_counter()
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return Generation("", 0, "timeout", time.perf_counter() - started)
        try:
            out = self.model.generate(
                prompt.completion,
                max_new_tokens=max_new_tokens,
                stop=STOP,
                deadline=deadline,
                starts=prompt.starts,
            )
        finally:
            self._slots.release()
        return Generation(prompt.prefix + out.text, out.tokens, out.finish_reason, out.seconds)


class OpenAICompatibleGenerator:
    """``POST {base_url}/chat/completions`` with temperature 0, ``max_tokens`` and ``stop``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None):
        self.name = f"{model} (openai-compatible)"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers)

    def generate(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Generation:
        started = time.perf_counter()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Generation("", 0, "timeout", 0.0)
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stop": [s for s in STOP if s.strip()],
        }
        try:
            response = self._client.post("/chat/completions", json=body, timeout=remaining)
            response.raise_for_status()
        except httpx.TimeoutException:
            return Generation("", 0, "timeout", time.perf_counter() - started)
        data = response.json()
        choice = data["choices"][0]
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        text = choice["message"]["content"] or ""
        return Generation(text, tokens, reason, time.perf_counter() - started)

    def warmup(self) -> float:
        started = time.perf_counter()
        self._client.get("/models", timeout=10).raise_for_status()
        return time.perf_counter() - started

    def close(self) -> None:
        self._client.close()
