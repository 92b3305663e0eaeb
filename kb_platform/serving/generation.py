"""Answer generators behind one interface: an instruction-tuned chat model in llama.cpp, the
local gemma-3-270m base model, or an OpenAI-compatible server (vLLM, Ollama, llama.cpp's own
server, ...). Each honours a token cap, stop sequences and a deadline, and streams: ``stream``
yields the answer's text pieces and ends with one ``Generation``. A generation that cannot start
or finish in time reports ``timeout`` and the caller answers extractively."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import httpx

from kb_platform.models.generator import Generation, LocalGenerator
from kb_platform.models.llama_cpp_chat import LlamaCppChat
from kb_platform.resilience import registry
from kb_platform.resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitOpenError,
    Permit,
    failed_status,
)
from kb_platform.serving.prompt import (
    CHAT_STOP,
    GROUNDED_INSTRUCTIONS,
    STOP,
    Prompt,
    chat_messages,
)

Stream = Iterator[str | Generation]
log = logging.getLogger(__name__)


def _since(started: float) -> float:
    return time.perf_counter() - started


class Generator(Protocol):
    name: str

    def stream(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Stream: ...


def generate(
    generator: Generator, prompt: Prompt, *, max_new_tokens: int, deadline: float
) -> Generation:
    """The whole generation, for callers that do not stream."""
    for item in generator.stream(prompt, max_new_tokens=max_new_tokens, deadline=deadline):
        if isinstance(item, Generation):
            return item
    raise RuntimeError("a generator's stream ended without its Generation")


class _Slots:
    """At most ``concurrency`` generations at once (CPU-bound); a request that cannot get a
    slot before its deadline times out without generating."""

    def __init__(self, concurrency: int):
        self._slots = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def held(self, deadline: float) -> Iterator[bool]:
        got = self._slots.acquire(timeout=max(0.0, deadline - time.monotonic()))
        try:
            yield got
        finally:
            if got:
                self._slots.release()


class _InProcess:
    """A model in the service process, at most ``concurrency`` generations at once."""

    def __init__(self, model: LlamaCppChat | LocalGenerator, concurrency: int = 1):
        self.model = model
        self.name = model.name
        self._slots = _Slots(concurrency)

    def stream(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Stream:
        with self._slots.held(deadline) as got:
            if not got:
                yield Generation("", 0, "timeout", 0.0)
                return
            yield from self._stream(prompt, max_new_tokens, deadline)

    def _stream(self, prompt: Prompt, max_new_tokens: int, deadline: float) -> Stream:
        raise NotImplementedError


class LlamaCppAnswerGenerator(_InProcess):
    """An instruction-tuned GGUF chat model in the service process (llama.cpp). Small models
    refuse whenever a prompt offers them a refusal (benchmarks/answers.py measured Qwen2.5-0.5B
    and 1.5B doing so for 11-12 of 12 answerable Cranfield questions), so their reply is begun
    for them with "According to [", as for the base model; whether the sources hold an answer
    at all is judged before generation (kb_platform.serving.relevance)."""

    model: LlamaCppChat

    def _stream(self, prompt: Prompt, max_new_tokens: int, deadline: float) -> Stream:
        return self.model.stream(
            chat_messages(prompt, system=GROUNDED_INSTRUCTIONS),
            max_new_tokens=max_new_tokens,
            stop=CHAT_STOP,
            deadline=deadline,
            prefix=prompt.prefix,
        )


class LocalAnswerGenerator(_InProcess):
    """The in-process base model (transformers): its answer comes as one piece, when done."""

    model: LocalGenerator

    def _stream(self, prompt: Prompt, max_new_tokens: int, deadline: float) -> Stream:
        out = self.model.generate(
            prompt.completion,
            max_new_tokens=max_new_tokens,
            stop=STOP,
            deadline=deadline,
            starts=prompt.starts,
        )
        text = prompt.prefix + out.text
        if out.finish_reason != "timeout":
            yield text
        yield Generation(text, out.tokens, out.finish_reason, out.seconds)


class OpenAICompatibleGenerator:
    """``POST {base_url}/chat/completions`` with temperature 0, ``max_tokens``, ``stop`` and
    ``stream``: the server's server-sent events are passed on piece by piece. With ``vision``
    (a vision-language model: vLLM, Ollama, a hosted one), the prompt's images go along as
    ``image_url`` parts. A server that refuses the request or cannot be reached ends the
    generation with ``error`` and what it said; the caller answers extractively.

    Calls go through a circuit breaker (by default the process's one for the server's address):
    while it is open a generation ends with ``error`` at once, without a request, so /ask
    answers extractively instead of waiting on a server known to be down. The server failed when
    it cannot be reached, answers 5xx or 429, or sends nothing before a timeout while the call
    had at least ``timeout_failure_s`` left (with less, the caller's own budget ran out). An
    in-process model has no breaker: it cannot be unreachable, and its time is bounded by the
    deadline and its generation slots."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        vision: bool = False,
        breaker: CircuitBreaker | None = None,
        timeout_failure_s: float = 5.0,
    ):
        self.name = f"{model} (openai-compatible{', vision' if vision else ''})"
        self.model = model
        self.vision = vision
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers)
        self.breaker = breaker or registry.breaker("generator", registry.target_of(base_url))
        self.timeout_failure_s = timeout_failure_s

    def body(self, prompt: Prompt, max_new_tokens: int) -> dict:
        return {
            "model": self.model,
            "messages": chat_messages(prompt, vision=self.vision),
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stop": list(CHAT_STOP),
            "stream": True,
        }

    def stream(self, prompt: Prompt, *, max_new_tokens: int, deadline: float) -> Stream:
        started = time.perf_counter()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield Generation("", 0, "timeout", 0.0)
            return
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:  # the failures that opened it are in its log line
            reason = (
                f"answer server unavailable (circuit open, next try in {exc.retry_after_s:.0f}s)"
            )
            yield Generation("", 0, "error", _since(started), reason)
            return
        try:
            yield from self._stream(prompt, max_new_tokens, deadline, remaining, permit)
        finally:
            permit.release()  # a call abandoned by its reader proves nothing

    def _stream(
        self, prompt: Prompt, max_new_tokens: int, deadline: float, remaining: float, permit: Permit
    ) -> Stream:
        started = time.perf_counter()
        text: list[str] = []
        reason = "stop"
        try:
            with self._client.stream(
                "POST",
                "/chat/completions",
                json=self.body(prompt, max_new_tokens),
                timeout=httpx.Timeout(remaining),
            ) as response:
                if response.is_error:
                    response.read()
                    failed = self._failed(response, started)
                    if failed_status(response.status_code):
                        permit.failure(failed.error or "")
                    else:
                        permit.success()  # it answered: the request was at fault
                    yield failed
                    return
                permit.success()
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    choice = json.loads(data)["choices"][0]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        text.append(piece)
                        yield piece
                    if choice.get("finish_reason") == "length":
                        reason = "length"
                    if time.monotonic() >= deadline:
                        reason = "timeout"
                        break
        except httpx.TimeoutException as exc:
            if remaining >= self.timeout_failure_s:
                permit.failure(f"{type(exc).__name__} after {_since(started):.1f}s")
            reason = "timeout"
        except httpx.TransportError as exc:
            message = f"{type(exc).__name__}: {exc}"
            permit.failure(message)
            log.warning("the answer server could not be reached: %s", message)
            yield Generation("".join(text), len(text), "error", _since(started), message)
            return
        yield Generation("".join(text), len(text), reason, _since(started))

    def _failed(self, response: httpx.Response, started: float) -> Generation:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("error", response.text) if isinstance(body, dict) else response.text
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        message = f"status {response.status_code}: {str(detail)[:500]}"
        log.warning("the answer server refused the request: %s", message)
        return Generation("", 0, "error", _since(started), message)

    def warmup(self) -> float:
        started = time.perf_counter()
        self._client.get("/models", timeout=10).raise_for_status()
        return time.perf_counter() - started

    def close(self) -> None:
        self._client.close()
