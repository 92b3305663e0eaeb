"""Whether the retrieved sources can hold an answer at all, judged before any generation: the
best cosine between the question's MiniLM vector and the sources' own (computed from the same
title-headed text the index embeds). Below the threshold /ask refuses ("the sources do not
contain the answer") instead of letting a model write around unrelated sources.

The threshold comes from benchmarks/answers.py: on the Cranfield index the best source of every
one of the 225 questions is at 0.338 or more (median 0.678), while general questions the
collection cannot answer (kb_platform.evaluation.off_topic) reach at most 0.238.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kb_platform.index.analysis import embedding_input
from kb_platform.serving.prompt import Source

EncodeMany = Callable[[Sequence[str]], np.ndarray]


def best_similarity(encode: EncodeMany, question: str, sources: Sequence[Source]) -> float:
    """The highest cosine between the question and any source (unit vectors), or 0.0 when no
    source has text (an image-only hit says nothing the model could quote)."""
    texts = [embedding_input(s.title, s.text) for s in sources if s.text.strip()]
    if not texts:
        return 0.0
    vectors = encode([question, *texts])
    return float(np.max(vectors[1:] @ vectors[0]))
