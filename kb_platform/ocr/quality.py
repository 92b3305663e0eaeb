"""OCR quality measures against ground truth."""

from __future__ import annotations

import re

from rapidfuzz.distance import Levenshtein

_WHITESPACE = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Collapses every run of whitespace to one space, so layout differences are not errors."""
    return _WHITESPACE.sub(" ", text).strip()


def character_error_rate(hypothesis: str, reference: str) -> float:
    """Edit distance between the texts divided by the reference length (0.0 is perfect)."""
    ref = normalize_whitespace(reference)
    hyp = normalize_whitespace(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return Levenshtein.distance(hyp, ref) / len(ref)
