"""The OpenAI-compatible generator (the path to vLLM, Ollama or a hosted model) against a real
OpenAI-compatible server: llama.cpp's own (`python -m llama_cpp.server`), started here with the
smallest packaged chat model. Streaming, the token cap, the deadline and a whole /ask answer."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from kb_platform.models.answerers import ensure_in_store
from kb_platform.models.generator import Generation
from kb_platform.serving.answer import answer_question
from kb_platform.serving.generation import OpenAICompatibleGenerator, generate
from kb_platform.serving.multimodal import png_for_vision
from kb_platform.serving.prompt import PromptImage, build_prompt, number_sources
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.test_serving_units import hits

pytestmark = pytest.mark.numerics

MODEL = "smollm2-135m-instruct"
QUESTION = "What does slipstream do to lift?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(ensure_in_store(MODEL)),
                "--model_alias",
                MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def generator(server: str) -> Iterator[OpenAICompatibleGenerator]:
    remote = OpenAICompatibleGenerator(server, MODEL)
    assert remote.warmup() < 10
    yield remote
    remote.close()


def _prompt():
    return build_prompt(QUESTION, number_sources(hits()), max_source_chars=300)


def test_the_answer_streams_in_pieces_and_ends_with_the_whole_generation(
    generator: OpenAICompatibleGenerator,
) -> None:
    items = list(generator.stream(_prompt(), max_new_tokens=24, deadline=time.monotonic() + 60))
    pieces, final = items[:-1], items[-1]
    assert isinstance(final, Generation) and final.finish_reason in ("stop", "length")
    assert len(pieces) >= 2 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == final.text and final.tokens == len(pieces) <= 24


def test_the_token_cap_ends_a_generation_with_length(generator: OpenAICompatibleGenerator) -> None:
    capped = generate(generator, _prompt(), max_new_tokens=2, deadline=time.monotonic() + 60)
    assert capped.finish_reason == "length" and 1 <= capped.tokens <= 2


def test_a_passed_deadline_times_out_and_the_answer_falls_back_to_quotes(
    generator: OpenAICompatibleGenerator,
) -> None:
    late = generate(generator, _prompt(), max_new_tokens=24, deadline=time.monotonic() - 1)
    assert late.finish_reason == "timeout" and late.tokens == 0
    answer = answer_question(
        QUESTION,
        hits(),
        generator,
        max_new_tokens=24,
        deadline=time.monotonic() - 1,
        max_source_chars=300,
    )
    assert answer.extractive and answer.finish_reason == "timeout" and answer.citations


def test_a_whole_answer_through_the_server_cites_only_given_sources(
    generator: OpenAICompatibleGenerator,
) -> None:
    answer = answer_question(
        QUESTION,
        hits(),
        generator,
        max_new_tokens=64,
        deadline=time.monotonic() + 60,
        max_source_chars=300,
    )
    # A 135M model may cite, refuse or leave its answer uncited (then quotes replace it); in
    # every case the citations are given sources under their own numbers.
    given = {c.number: c for c in answer.sources}
    assert sorted(given) == [1, 2]
    assert all(given[c.number] == c for c in answer.citations)
    assert answer.refused or answer.citations


def _vision_prompt():
    picture = png_for_vision(Image.new("RGB", (64, 48), "red"))
    return build_prompt(
        QUESTION,
        number_sources(hits()),
        max_source_chars=300,
        images=(PromptImage("The image sent with the question", picture),),
    )


def test_image_parts_pass_the_servers_validation_and_a_refusal_falls_back_to_quotes(
    server: str,
) -> None:
    """No vision weights can be had here, so what is proven is the request: llama.cpp's server
    checks every chat request against its models of the OpenAI API before a model sees it. The
    image parts the generator sends pass that check (a malformed part, below, does not); the
    text-only model behind it then cannot take them, and the answer is quoted instead."""
    vision = OpenAICompatibleGenerator(server, MODEL, vision=True)
    try:
        prompt = _vision_prompt()
        result = generate(vision, prompt, max_new_tokens=8, deadline=time.monotonic() + 60)
        assert result.finish_reason != "error" or "validation" not in (result.error or "")
        broken = vision.body(prompt, 8)
        broken["messages"][1]["content"][2]["image_url"] = {"href": "data:image/png;base64,AA"}
        refused = httpx.post(f"{server}/chat/completions", json=broken, timeout=30)
        assert refused.status_code >= 400
        assert "validation error" in refused.text and "image_url" in refused.text
        answer = answer_question(
            QUESTION,
            hits(),
            vision,
            max_new_tokens=8,
            deadline=time.monotonic() + 60,
            max_source_chars=300,
            images=prompt.images,
        )
        if result.finish_reason == "error":
            assert answer.extractive and answer.finish_reason == "error"
            assert (
                answer.fallback_reason and "the generator failed: status" in answer.fallback_reason
            )
    finally:
        vision.close()


def test_an_unreachable_server_ends_the_generation_with_an_error(server: str) -> None:
    gone = OpenAICompatibleGenerator(f"http://127.0.0.1:{free_port()}/v1", MODEL)
    try:
        result = generate(gone, _prompt(), max_new_tokens=8, deadline=time.monotonic() + 10)
        assert result.finish_reason == "error" and "ConnectError" in (result.error or "")
    finally:
        gone.close()
