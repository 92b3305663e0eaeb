"""Text-to-image recall@k on held-out pairs: the measure the promotion gate compares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.training.data import Example, load_image

KS = (1, 5, 10)


def text_to_image_recall(
    encoder: ClipEncoder, examples: Sequence[Example], ks: Sequence[int] = KS
) -> dict[str, float]:
    """For each text, is its own image among the k images most similar to it? Images shared by
    several texts (one photo, five captions) are ranked once."""
    if not examples:
        return {f"recall@{k}": 0.0 for k in ks}
    paths = sorted({ex.image for ex in examples})
    position = {path: i for i, path in enumerate(paths)}
    image_vectors = encoder.encode_images([load_image(p) for p in paths])
    text_vectors = encoder.encode_texts([ex.text for ex in examples])
    similarity = text_vectors @ image_vectors.T
    target = np.array([position[ex.image] for ex in examples])
    target_score = similarity[np.arange(len(examples)), target]
    # Ties count against the model: a collapsed model that scores every image alike ranks last.
    rank = (similarity >= target_score[:, None]).sum(axis=1) - 1  # 0: its own image is first
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks} | {
        "pairs": float(len(examples)),
        "images": float(len(paths)),
    }
