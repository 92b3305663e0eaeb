"""The CLIP encoder inference uses: an exported checkpoint (spec + safetensors) loaded into the
same model the training built, images and texts to unit-length 512-d vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kb_platform.training.promotion import checkpoint_version
from kb_platform.training.spec import (
    SPEC,
    WEIGHTS,
    ClipSpec,
    build_model,
    image_preprocess,
    tokenizer,
)


class ClipEncoder:
    def __init__(self, export_dir: Path, batch_size: int = 32) -> None:
        from safetensors.torch import load_file

        self.export_dir = Path(export_dir)
        self.spec = ClipSpec.load(self.export_dir / SPEC)
        weights = self.export_dir / WEIGHTS
        self.model = build_model(self.spec, load_text_weights=False)
        self.model.load_state_dict(load_file(str(weights)))
        self.model.eval()
        self.preprocess = image_preprocess(self.spec, self.model)
        self.tokenize = tokenizer(self.spec)
        self.batch_size = batch_size
        self.version = checkpoint_version(self.export_dir)  # which checkpoint made the vectors

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack(
                [self.preprocess(i.convert("RGB")) for i in images[start : start + self.batch_size]]
            )
            out.append(self.model.encode_image(batch, normalize=True).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.embed_dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenize(list(texts[start : start + self.batch_size]))
            out.append(self.model.encode_text(tokens, normalize=True).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.embed_dim), np.float32)

    def warmup(self) -> None:
        self.encode_images([Image.new("RGB", (64, 64), "white")])
        self.encode_texts(["warm-up"])
