"""Grounded prompts with numbered sources, and the citations read back from an answer.

Every model gets the numbered sources and the question. A chat model behind an OpenAI-compatible
endpoint gets them as messages, with a fixed sentence to reply when the sources do not answer
it. The small models in process get an answer that already starts with "According to [", so they
continue with a source number and the sentence it supports: the chat model in llama.cpp as its
chat template's reply, the base model (gemma-3-270m) as a completion.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from kb_platform.index.retriever import Hit
from kb_platform.serving.control_tokens import neutralise

STOP = ("\nQuestion:", "\n\n", "\n[", "<end_of_turn>", "<eos>")
ANSWER_PREFIX = "According to ["
_CITE = (
    "Answer the question using only the numbered sources. After each statement, cite the "
    "source it comes from by its number in brackets, like [1]."
)
INSTRUCTIONS = f"{_CITE} If the sources do not contain the answer, say so."
REFUSAL = "The sources do not contain the answer."
CHAT_INSTRUCTIONS = (
    "You answer questions from numbered sources. Use what the sources say, in two to four "
    "sentences, and put the number of the source each statement comes from in brackets after "
    "it, like [1] or [2][3]. Cite only the sources given. Only if no source is about the "
    f"question at all, reply with exactly: {REFUSAL}"
)
# For a chat model whose reply is begun for it with ANSWER_PREFIX (it cannot refuse; the
# relevance gate decides that before generation).
GROUNDED_INSTRUCTIONS = f"{_CITE} Answer in two to four sentences."
CHAT_REMINDER = "Answer from the sources above, citing them like [1]."
IMAGE_SOURCES_NOTE = (
    "Sources marked (image: ...) are pictures, given by the text shown with them and the text "
    "of their page; cite them by number like the others."
)
CHAT_STOP = ("\nQuestion:", "\nSources:")
_REFUSALS = (
    "sources do not contain",
    "sources don't contain",
    "sources does not contain",
    "not contain the answer",
    "do not contain enough information",
    "do not provide",
    "does not provide",
)
_CITATION = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
_SPACE = re.compile(r"\s+")
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class Source:
    number: int
    hit: Hit

    @property
    def text(self) -> str:
        return str(self.hit.source.get("text") or "")

    @property
    def title(self) -> str:
        return str(self.hit.source.get("title") or "")

    @property
    def page(self) -> int | None:
        page = self.hit.source.get("page")
        return int(page) if page is not None else None

    @property
    def is_image(self) -> bool:
        return self.hit.source.get("kind") == "image"

    @property
    def image_kind(self) -> str:
        """figure (an image embedded in a page) or page (a page render, or the picture itself)."""
        return "figure" if "-img-" in self.hit.chunk_id.rsplit(":", 1)[-1] else "page"

    @property
    def page_text(self) -> str:
        """Images: the text of the page they are on (kb_platform.serving.multimodal adds it)."""
        return str(self.hit.source.get("page_text") or "")


@dataclass(frozen=True)
class PromptImage:
    """An image a vision-language model is shown: what it is, and its bytes."""

    label: str  # e.g. "Image of source [2]" or "The question's image"
    data: bytes
    mime: str = "image/png"

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class Prompt:
    completion: str  # for a completion model: ends with ANSWER_PREFIX
    user: str  # for a chat model: sources and question
    prefix: str  # the start of the answer that the completion already contains
    system: str = CHAT_INSTRUCTIONS  # a chat model's system message
    # What a completion model's continuation may begin with: a given source's number and "]"
    # (the prefix ends with "["), so its first citation is valid by construction.
    starts: tuple[str, ...] = ()
    images: tuple[PromptImage, ...] = ()  # sent as image parts to a vision-language model


def number_sources(hits: list[Hit]) -> list[Source]:
    return [Source(n, hit) for n, hit in enumerate(hits, start=1)]


def clip_text(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, cut at a word boundary."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut[: cut.rfind(" ")] if " " in cut else cut) + " ..."


def _where(source: Source) -> str:
    where = source.title
    if source.page is not None:
        where = f"{where}, page {source.page}" if where else f"page {source.page}"
    return where


def _source_line(source: Source, max_chars: int) -> str:
    where = _where(source)
    if not source.is_image:
        head = f"[{source.number}] ({where}) " if where else f"[{source.number}] "
        return head + clip_text(source.text, max_chars)
    # An image reaches a text-only model as the words around it: what is shown with it (a
    # figure's caption, or its page's text) and, when that is not the same, its page's text.
    label = f"image: {source.image_kind}" + (f", {where}" if where else "")
    shown = clip_text(source.text, max_chars // 2)
    line = f"[{source.number}] ({label}) Shown with it: {shown or '(nothing)'}"
    page = clip_text(source.page_text, max_chars // 2)
    if page and not page.startswith(shown.removesuffix(" ...")):
        line += f" Its page says: {page}"
    return line


def build_prompt(
    question: str,
    sources: list[Source],
    *,
    max_source_chars: int,
    question_image_text: str | None = None,
    images: tuple[PromptImage, ...] = (),
) -> Prompt:
    """The grounded prompt. Image sources are described in words (every model can read them);
    a question sent with an image gets the text read from that image (``question_image_text``,
    "" when none was found); ``images`` go to vision-language models as image parts."""
    # Sources and questions are data: the chat-control tokens they carry could forge a turn.
    question = _SPACE.sub(" ", neutralise(question)).strip()
    block = neutralise("\n".join(_source_line(source, max_source_chars) for source in sources))
    lead = IMAGE_SOURCES_NOTE + "\n" if any(source.is_image for source in sources) else ""
    user = f"{lead}Sources:\n{block}\n\n"
    if question_image_text is not None:
        read = (
            clip_text(neutralise(question_image_text), max_source_chars)
            or "(no text was found in it)"
        )
        user += f"The question comes with an image. Text read from that image: {read}\n"
    user += f"Question: {question}"
    completion = f"{INSTRUCTIONS}\n\n{user}\nAnswer: {ANSWER_PREFIX}"
    return Prompt(
        completion=completion,
        user=f"{user}\n\n{CHAT_REMINDER}",
        prefix=ANSWER_PREFIX,
        starts=tuple(f"{source.number}]" for source in sources),
        images=images,
    )


def cited_numbers(answer: str, count: int) -> list[int]:
    """The source numbers an answer cites, in order of first citation; numbers outside
    1..count (sources that were never given) are ignored."""
    found: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= count and number not in found:
                found.append(number)
    return found


def chat_messages(
    prompt: Prompt, *, system: str | None = None, vision: bool = False
) -> list[dict[str, Any]]:
    """System and user messages; with ``vision``, the user message is a list of parts (the
    OpenAI chat format): its text, then each image as a label and an ``image_url`` data URL."""
    content: str | list[dict[str, Any]] = prompt.user
    if vision and prompt.images:
        content = [{"type": "text", "text": prompt.user}]
        for image in prompt.images:
            content.append({"type": "text", "text": f"{image.label}:"})
            content.append({"type": "image_url", "image_url": {"url": image.data_url()}})
    return [
        {"role": "system", "content": system or prompt.system},
        {"role": "user", "content": content},
    ]


def is_refusal(answer: str) -> bool:
    """The model said the sources do not answer the question (and cited nothing for it)."""
    text = _SPACE.sub(" ", answer).casefold()
    return any(phrase in text for phrase in _REFUSALS)


def strip_unknown_citations(answer: str, count: int) -> str:
    """The answer without citations of sources that were never given (numbers outside
    1..count); a bracket that cites given and unknown numbers keeps the given ones."""

    def keep(match: re.Match[str]) -> str:
        numbers = [int(p) for p in match.group(1).split(",")]
        valid = [str(n) for n in numbers if 1 <= n <= count]
        return f"[{', '.join(valid)}]" if valid else ""

    return _SPACES.sub(" ", _CITATION.sub(keep, answer)).replace(" .", ".").strip()
