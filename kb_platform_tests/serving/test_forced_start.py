"""Constrained decoding with the real gemma-3-270m: an answer that starts "According to [" goes
on with one of the allowed source numbers, on any CPU, whatever the model would prefer."""

from __future__ import annotations

import time

import pytest
import torch

from kb_platform.models.forced_start import ForcedStart
from kb_platform.models.generator import LocalGenerator
from kb_platform.models.registry import generator as load_generator

pytestmark = pytest.mark.numerics

PROMPT = (
    "Sources:\n[1] The wing was tested in a slipstream.\n[2] Heat transfer in hypersonic flow.\n"
    "[3] Cake recipes.\n\nQuestion: what happens to the lift of a wing in a slipstream?\n"
    "Answer: According to ["
)


@pytest.fixture(scope="module")
def model() -> LocalGenerator:
    return load_generator()


@pytest.mark.parametrize("allowed", [("3]",), ("2]", "3]"), ("10]", "1]")])
def test_the_continuation_starts_with_an_allowed_start(
    model: LocalGenerator, allowed: tuple[str, ...]
) -> None:
    out = model.generate(
        PROMPT, max_new_tokens=6, stop=[], deadline=time.monotonic() + 60, starts=allowed
    )
    assert out.tokens > 0
    assert any(out.text.startswith(start) for start in allowed), out.text


def test_scores_outside_every_allowed_start_are_masked(model: LocalGenerator) -> None:
    forced = ForcedStart(model.tokenizer, prompt_tokens=2, starts=["1]", "12]"])
    one = model.tokenizer.encode("1", add_special_tokens=False).ids
    assert forced.allowed([]) == {one[0]}
    after_one = forced.allowed(one)
    assert after_one is not None and len(after_one) == 2  # "]" or "2"
    assert forced.allowed(model.tokenizer.encode("1]", add_special_tokens=False).ids) is None
    masked = forced(torch.tensor([[0, 0, *one]]), torch.zeros(1, model.tokenizer.get_vocab_size()))
    assert torch.isfinite(masked[0]).sum() == 2
    assert ForcedStart(model.tokenizer, 2, []).allowed([]) is None  # no starts: no constraint


def test_a_start_the_tokenizer_cannot_spell_is_refused(model: LocalGenerator) -> None:
    with pytest.raises(ValueError, match="round-trip"):
        ForcedStart(model.tokenizer, prompt_tokens=0, starts=[""])
