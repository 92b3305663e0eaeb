"""Constrained start of a greedy generation: the first tokens must spell one of a few allowed
strings (for an answer that begins "According to [", a given source's number and "]").

Without it, which number a small model writes first depends on near-tied logits, and those
depend on the kernels the CPU picks: on one machine it cites a source, on another a number that
was never given. With it, a valid citation is there by construction and the model still chooses
which one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer


class ForcedStart:
    """A transformers logits processor (batch of one): while the generated tokens are a proper
    prefix of some allowed start, every token that leaves all of them is masked out; once one
    start is complete (or none was given), the scores pass through unchanged."""

    def __init__(self, tokenizer: Tokenizer, prompt_tokens: int, starts: Sequence[str]):
        self.prompt_tokens = prompt_tokens
        self.choices: list[list[int]] = []
        for start in starts:
            ids = tokenizer.encode(start, add_special_tokens=False).ids
            if not ids or tokenizer.decode(ids) != start:
                raise ValueError(f"allowed start {start!r} does not round-trip the tokenizer")
            self.choices.append(ids)

    def allowed(self, generated: list[int]) -> set[int] | None:
        """The token ids allowed next, or None when the start is complete (no constraint)."""
        if not self.choices or generated in self.choices:
            return None
        n = len(generated)
        allowed = {c[n] for c in self.choices if len(c) > n and c[:n] == generated}
        return allowed or None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed(input_ids[0, self.prompt_tokens :].tolist())
        if allowed is None:
            return scores
        masked = torch.full_like(scores, float("-inf"))
        index = torch.tensor(sorted(allowed), dtype=torch.long)
        masked[:, index] = scores[:, index]
        return masked
