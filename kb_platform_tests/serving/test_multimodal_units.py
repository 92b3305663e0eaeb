"""The multimodal pieces of /ask without services: the image+text prompt, the vision request's
image parts, typed answer parts, fusing with a cap on images, and a failed generator's
fallback."""

from __future__ import annotations

import base64
import io

from PIL import Image

from kb_platform.index.retriever import Hit
from kb_platform.models.generator import Generation
from kb_platform.serving.answer import citations_for, settle
from kb_platform.serving.images import image_url
from kb_platform.serving.multimodal import fuse_sources, png_for_vision
from kb_platform.serving.parts import answer_parts
from kb_platform.serving.prompt import (
    IMAGE_SOURCES_NOTE,
    PromptImage,
    build_prompt,
    chat_messages,
    number_sources,
)
from kb_platform_tests.serving.test_serving_units import hits

QUESTION = "What does the wing in the slipstream look like?"
FIGURE = Hit(
    "d1:image:page-0003-img-00",
    1.5,
    {
        "doc_id": "d1",
        "kind": "image",
        "text": "Figure 2: the wing model in the wind tunnel",
        "title": "wing in a slipstream",
        "page": 3,
        "image_key": "images/d1/page-0003-img-00.png",
        "page_text": "Measurements of lift on a wing immersed in a propeller slipstream.",
    },
)


def _sources():
    return number_sources([*hits(), FIGURE])


def test_image_sources_are_described_with_their_caption_and_page_text() -> None:
    prompt = build_prompt(QUESTION, _sources(), max_source_chars=400)
    assert prompt.user.startswith(IMAGE_SOURCES_NOTE)
    line = next(line for line in prompt.user.splitlines() if line.startswith("[3]"))
    assert line.startswith("[3] (image: figure, wing in a slipstream, page 3)")
    assert "Shown with it: Figure 2: the wing model" in line
    assert "Its page says: Measurements of lift" in line
    assert prompt.starts == ("1]", "2]", "3]")


def test_a_text_only_prompt_is_unchanged_by_the_multimodal_template() -> None:
    prompt = build_prompt(QUESTION, number_sources(hits()), max_source_chars=400)
    assert IMAGE_SOURCES_NOTE not in prompt.user and "image" not in prompt.user


def test_the_question_image_text_goes_into_the_prompt() -> None:
    prompt = build_prompt(
        QUESTION, _sources(), max_source_chars=400, question_image_text="NACA 0012 at 4 deg"
    )
    assert "Text read from that image: NACA 0012 at 4 deg\nQuestion:" in prompt.user
    empty = build_prompt(QUESTION, _sources(), max_source_chars=400, question_image_text="")
    assert "(no text was found in it)" in empty.user


def test_a_vision_request_carries_each_image_as_a_labelled_data_url() -> None:
    png = png_for_vision(Image.new("RGB", (2000, 1000), "white"))
    assert Image.open(io.BytesIO(png)).size == (768, 384)
    prompt = build_prompt(
        QUESTION,
        _sources(),
        max_source_chars=400,
        images=(PromptImage("Image of source [3]", png),),
    )
    text_only = chat_messages(prompt)
    assert isinstance(text_only[1]["content"], str)  # a text model gets no image parts
    content = chat_messages(prompt, vision=True)[1]["content"]
    assert [part["type"] for part in content] == ["text", "text", "image_url"]
    assert content[1]["text"] == "Image of source [3]:"
    url = content[2]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


def test_answer_parts_put_each_cited_image_after_the_text_citing_it() -> None:
    sources = _sources()
    given = citations_for(QUESTION, sources)
    assert given[2].kind == "image" and given[2].image_url == "/images/d1/page-0003-img-00.png"
    assert given[0].kind == "text" and given[0].image_url is None
    text = "The wing sits in the slipstream [1]. Its model is shown [3]. Shocks differ [2]."
    parts = answer_parts(text, [given[0], given[2], given[1]])
    assert [p.type for p in parts] == ["text", "image", "text"]
    assert parts[0].text.endswith("shown [3].") and parts[0].citations == [1, 3]
    assert parts[1].number == 3 and parts[1].url == given[2].image_url and parts[1].page == 3
    assert parts[2].citations == [2]
    assert answer_parts("Nothing cited.", []) == [answer_parts("Nothing cited.", [])[0]]
    assert len(answer_parts("Nothing cited.", [])) == 1


def test_fused_sources_hold_at_most_the_allowed_images() -> None:
    text = [Hit(f"t{i}", 1.0, {"doc_id": "d", "kind": "text"}, {"bm25": i}) for i in range(1, 6)]
    images = [
        Hit(f"i{i}", 1.0, {"doc_id": "d", "kind": "image"}, {"clip_image": i}) for i in range(1, 6)
    ]
    fused = fuse_sources([text, images], 5, max_images=2, rrf_k=60)
    kinds = [h.source["kind"] for h in fused]
    assert len(fused) == 5 and kinds.count("image") == 2
    assert [h.chunk_id for h in fused if h.source["kind"] == "image"] == ["i1", "i2"]
    assert fuse_sources([text, images], 4, max_images=0, rrf_k=60)[0].chunk_id == "t1"


def test_only_pipeline_image_keys_get_urls() -> None:
    assert image_url("images/doc-1/page-0001.png") == "/images/doc-1/page-0001.png"
    for key in ("raw/doc-1", "images/../raw.png", "images/d/../../raw.png", "images/a/b.jpg", None):
        assert image_url(key) is None


def test_a_failed_generator_falls_back_to_quotes_and_says_why() -> None:
    sources = _sources()
    given = citations_for(QUESTION, sources)
    failed = Generation("", 0, "error", 0.1, "status 500: the model cannot take images")
    answer = settle(QUESTION, sources, given, failed, 0.1)
    assert answer.extractive and answer.finish_reason == "error"
    assert answer.fallback_reason == (
        "the generator failed: status 500: the model cannot take images"
    )
