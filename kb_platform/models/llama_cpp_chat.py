"""An instruction-tuned chat model in llama.cpp (through llama-cpp-python), streamed token by
token with greedy decoding, a token cap, stop sequences and a wall-clock deadline checked between
tokens. The chat template is the one the GGUF carries (rendered by llama-cpp-python's Jinja2
formatter), so each model family gets its own; the assistant's reply can be begun for the model
(``prefix``), which small models need to keep to an answer format."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kb_platform.models.generator import Generation

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


class LlamaCppChat:
    """One llama.cpp context: not thread-safe, so callers run one generation at a time."""

    def __init__(
        self,
        gguf: Path,
        *,
        name: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
    ):
        from llama_cpp import Llama

        started = time.perf_counter()
        self.name = name
        self.gguf = Path(gguf)
        self.model = Llama(
            model_path=str(self.gguf),
            n_ctx=n_ctx,
            n_threads=n_threads or os.cpu_count() or 1,
            n_batch=n_batch,
            verbose=False,
        )
        self._format = _chat_formatter(self.model)
        self.load_seconds = time.perf_counter() - started
        log.info("%s loaded from %s in %.2fs", name, self.gguf.name, self.load_seconds)

    def stream(
        self,
        messages: Messages,
        *,
        max_new_tokens: int,
        stop: Sequence[str],
        deadline: float,
        prefix: str = "",
    ) -> Iterator[str | Generation]:
        """The answer's text pieces as they are decoded (the first one led by ``prefix``), then
        one ``Generation`` with the whole text and why it ended (stop, length or timeout)."""
        started = time.perf_counter()
        text: list[str] = []
        tokens = 0
        reason = "stop"
        if time.monotonic() >= deadline:
            yield Generation("", 0, "timeout", 0.0)
            return
        formatted = self._format(messages=messages)
        template_stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        chunks = self.model.create_completion(
            formatted.prompt + prefix,
            max_tokens=max_new_tokens,
            temperature=0.0,
            stop=[*stop, *(s for s in template_stops if s)],
            stream=True,
        )
        lead = prefix
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]  # type: ignore[index]
                piece = choice["text"]  # type: ignore[index]
                if piece:
                    tokens += 1
                    text.append(piece)
                    yield lead + piece
                    lead = ""
                if choice.get("finish_reason") == "length":  # type: ignore[union-attr]
                    reason = "length"
                if time.monotonic() >= deadline:
                    reason = "timeout"
                    break
        finally:
            chunks.close()  # type: ignore[union-attr]  # frees the context at once
        yield Generation(prefix + "".join(text), tokens, reason, time.perf_counter() - started)

    def warmup(self) -> float:
        """One short real generation, so the first request pays for no lazy initialisation."""
        started = time.perf_counter()
        for _ in self.stream(
            [{"role": "user", "content": "What is lift?"}],
            max_new_tokens=4,
            stop=[],
            deadline=time.monotonic() + 60,
        ):
            pass
        return time.perf_counter() - started


def _chat_formatter(model: Any) -> Any:
    """The GGUF's own chat template as a formatter (messages -> prompt text and stop words)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the GGUF carries no chat template (tokenizer.chat_template)")

    def token_text(token: int) -> str:
        return model._model.token_get_text(token) if token >= 0 else ""

    return Jinja2ChatFormatter(
        template,
        eos_token=token_text(model.token_eos()),
        bos_token=token_text(model.token_bos()),
        stop_token_ids=[model.token_eos()],
    )
