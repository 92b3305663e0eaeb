"""Grounded prompts with numbered sources, and the citations read back from an answer.

Every model gets the numbered sources and the question. A chat model behind an OpenAI-compatible
endpoint gets them as messages, with a fixed sentence to reply when the sources do not answer
it. The small models in process get an answer that already starts with "According to [", so they
continue with a source number and the sentence it supports: the chat model in llama.cpp as its
chat template's reply, the base model (gemma-3-270m) as a completion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb_platform.index.retriever import Hit

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


@dataclass(frozen=True)
class Prompt:
    completion: str  # for a completion model: ends with ANSWER_PREFIX
    user: str  # for a chat model: sources and question
    prefix: str  # the start of the answer that the completion already contains
    system: str = CHAT_INSTRUCTIONS  # a chat model's system message
    # What a completion model's continuation may begin with: a given source's number and "]"
    # (the prefix ends with "["), so its first citation is valid by construction.
    starts: tuple[str, ...] = ()


def number_sources(hits: list[Hit]) -> list[Source]:
    return [Source(n, hit) for n, hit in enumerate(hits, start=1)]


def clip_text(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, cut at a word boundary."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut[: cut.rfind(" ")] if " " in cut else cut) + " ..."


def _source_block(sources: list[Source], max_chars: int) -> str:
    lines = []
    for source in sources:
        where = source.title
        if source.page is not None:
            where = f"{where}, page {source.page}" if where else f"page {source.page}"
        head = f"[{source.number}] ({where}) " if where else f"[{source.number}] "
        lines.append(head + clip_text(source.text, max_chars))
    return "\n".join(lines)


def build_prompt(question: str, sources: list[Source], *, max_source_chars: int) -> Prompt:
    question = _SPACE.sub(" ", question).strip()
    block = _source_block(sources, max_source_chars)
    user = f"Sources:\n{block}\n\nQuestion: {question}"
    completion = f"{INSTRUCTIONS}\n\n{user}\nAnswer: {ANSWER_PREFIX}"
    return Prompt(
        completion=completion,
        user=f"{user}\n\n{CHAT_REMINDER}",
        prefix=ANSWER_PREFIX,
        starts=tuple(f"{source.number}]" for source in sources),
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


def chat_messages(prompt: Prompt, *, system: str | None = None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system or prompt.system},
        {"role": "user", "content": prompt.user},
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
