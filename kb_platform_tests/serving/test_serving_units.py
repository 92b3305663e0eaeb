"""The service's pure parts: keys, rate limits, prompts and citations, extractive answers,
image limits, multipart checks. No services, no models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kb_platform.index.retriever import Hit
from kb_platform.serving.auth import ApiKeys, hash_key, new_key, presented_key, read_keys_file
from kb_platform.serving.error_bodies import uniform_error
from kb_platform.serving.errors import ServingError
from kb_platform.serving.extractive import extractive_answer, sentences
from kb_platform.serving.limits import load_image
from kb_platform.serving.middleware import url_file_fields
from kb_platform.serving.prompt import (
    ANSWER_PREFIX,
    build_prompt,
    cited_numbers,
    clip_text,
    number_sources,
)
from kb_platform.serving.ratelimit import RateLimiter
from kb_platform.serving.schemas import AskRequest, AskResponse
from kb_platform.serving.settings import ApiKeyEntry

WING = (
    "an experimental study of a wing in a propeller slipstream was made in order to determine "
    "the spanwise distribution of the lift increase due to slipstream at different angles of "
    "attack of the wing. The wing was mounted in a wind tunnel."
)
SHOCK = "the interaction of a shock wave with a sound wave was studied. Reflection was measured."


def hits() -> list[Hit]:
    return [
        Hit("c-1", 2.0, {"doc_id": "d1", "text": WING, "title": "wing in a slipstream", "page": 3}),
        Hit("c-2", 1.0, {"doc_id": "d2", "text": SHOCK, "title": "shock-sound interaction"}),
    ]


def test_keys_are_known_by_hash_only(tmp_path: Path) -> None:
    key = new_key()
    assert key.startswith("kb_") and len(key) > 40
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"sha256": hash_key(key), "name": "app", "rate_per_s": 5}]))
    keys = ApiKeys(read_keys_file(path))
    principal = keys.verify(key)
    assert principal is not None and principal.name == "app" and principal.rate_per_s == 5
    assert principal.key_id == hash_key(key)[:8]
    assert keys.verify(key + "x") is None
    assert key not in path.read_text()

    lines = tmp_path / "keys.txt"
    lines.write_text(f"# comment\n{hash_key('a')}\n\n{hash_key('b')}  ops\n")
    assert len(ApiKeys(read_keys_file(lines))) == 2
    with pytest.raises(ValueError):
        ApiKeyEntry(sha256="not-a-hash")


def test_key_is_read_from_bearer_or_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"x-api-key": "abc"}) == "abc"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({}) is None


def test_token_bucket_refuses_past_the_burst_and_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.check("k").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.check("k")
    assert refused.retry_after_s == pytest.approx(0.5) and refused.retry_after_header == "1"
    assert limiter.check("other").allowed  # buckets are per key
    now[0] += 0.5
    assert limiter.check("k").allowed
    assert not limiter.check("k").allowed
    # a key with limits of its own
    assert all(limiter.check("vip", rate_per_s=1.0, burst=10).allowed for _ in range(10))
    assert not limiter.check("vip", rate_per_s=1.0, burst=10).allowed


def test_prompt_numbers_sources_and_starts_the_cited_answer() -> None:
    prompt = build_prompt(
        "What does slipstream do to lift?", number_sources(hits()), max_source_chars=60
    )
    assert prompt.completion.endswith("Answer: " + ANSWER_PREFIX)
    assert "[1] (wing in a slipstream, page 3) an experimental study" in prompt.completion
    assert "[2] (shock-sound interaction) the interaction" in prompt.user
    assert "Question: What does slipstream do to lift?" in prompt.user
    assert len(clip_text(WING, 60)) <= 64


def test_citations_are_read_back_in_order_and_bounded() -> None:
    assert cited_numbers("According to [2] x, and [1, 2] y [7] [0]", 3) == [2, 1]
    assert cited_numbers("no citation here", 3) == []


def test_extractive_answer_quotes_the_matching_sentence_with_its_number() -> None:
    extract = extractive_answer(
        "what is the lift increase due to slipstream", number_sources(hits())
    )
    assert extract.numbers == [1]
    assert "spanwise distribution of the lift increase due to slipstream" in extract.answer
    assert extract.answer.endswith("[1]")
    assert sentences("One. Two three! Four?") == ["One.", "Two three!", "Four?"]


def _image(tmp_path: Path, size: tuple[int, int], name: str = "x.png") -> Path:
    path = tmp_path / name
    Image.new("RGB", size, "white").save(path)
    return path


def test_image_limits_say_what_was_wrong(tmp_path: Path) -> None:
    ok = load_image(_image(tmp_path, (64, 48)), max_bytes=10**6, max_pixels=10_000)
    assert ok.size == (64, 48) and ok.mode == "RGB"
    with pytest.raises(ServingError) as pixels:
        load_image(_image(tmp_path, (200, 100)), max_bytes=10**6, max_pixels=10_000)
    assert pixels.value.status == 413 and "200x100 = 20,000 pixels" in pixels.value.message
    with pytest.raises(ServingError) as size:
        load_image(_image(tmp_path, (64, 48)), max_bytes=10, max_pixels=10_000)
    assert size.value.status == 413 and "limit is 10 bytes" in size.value.message
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ServingError) as wrong:
        load_image(text, max_bytes=10**6, max_pixels=10_000)
    assert wrong.value.status == 415
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_image(tmp_path, (64, 48), "full.png").read_bytes()[:80])
    with pytest.raises(ServingError) as corrupt:
        load_image(truncated, max_bytes=10**6, max_pixels=10_000)
    assert corrupt.value.status in (415, 422)


def test_decompression_bomb_from_the_corpus_is_refused(corpus_dir: Path) -> None:
    bombs = sorted((corpus_dir / "bad-inputs" / "pillow").glob("*bomb*"))
    assert bombs, "the corpus carries Pillow's decompression-bomb test images"
    for bomb in bombs:
        with pytest.raises(ServingError) as refused:
            load_image(bomb, max_bytes=10**8, max_pixels=16_000_000)
        assert refused.value.status in (413, 415, 422)


def test_file_fields_sent_as_values_are_found() -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\nlift\r\n'
        b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://x/a.png\r\n--b--\r\n'
    )
    assert url_file_fields(body) == ["image"]
    upload = b'--b\r\ncontent-disposition: form-data; name="image"; filename="a.png"\r\n\r\n..'
    assert url_file_fields(upload) == []


def test_errors_from_bentoml_are_rewritten_in_the_service_shape() -> None:
    pydantic = json.dumps(
        {
            "error": "1 validation error for SearchRequestIODescriptor",
            "detail": [{"type": "extra_forbidden", "loc": ["limit"], "msg": "Extra inputs"}],
        }
    ).encode()
    body = json.loads(uniform_error(400, pydantic, "req-1") or b"")
    assert body == {"error": "limit: Extra inputs", "code": "bad_request", "request_id": "req-1"}
    plain = json.loads(uniform_error(500, b"Internal Server Error", "req-2") or b"")
    assert plain["error"] == "Internal Server Error" and plain["request_id"] == "req-2"
    assert json.loads(uniform_error(404, b"", "r") or b"")["error"] == "Not Found"
    ours = json.dumps(ServingError(429, "slow down").body("req-3")).encode()
    assert uniform_error(429, ours, "req-3") is None  # the front door's own: left as it is


def test_openapi_30_nullables_and_strict_bounds() -> None:
    schema = AskRequest.model_json_schema()["properties"]["timeout_s"]
    assert schema["nullable"] is True
    assert schema["anyOf"][0] == {"exclusiveMinimum": True, "minimum": 0, "type": "number"}
    image = AskResponse.model_json_schema()["properties"]["question_image"]
    assert image["nullable"] is True
    assert "nullable" not in AskResponse.model_json_schema()["properties"]["answer"]
