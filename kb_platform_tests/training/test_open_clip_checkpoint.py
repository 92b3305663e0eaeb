"""A pretrained open_clip model given as a checkpoint path (DESIGN §5: where one can be had) is
built by the same spec code, loads its weights, and its export is what the encoder loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.training.spec import SPEC, WEIGHTS, ClipSpec, build_model

pytestmark = pytest.mark.numerics

MODEL = "ViT-S-32-alt"  # a small open_clip architecture; weights made here, not downloaded


def test_an_open_clip_checkpoint_path_is_loaded_and_exported(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = open_clip.create_model(MODEL, pretrained=None)
    checkpoint = tmp_path / "pretrained.pt"
    torch.save({"state_dict": source.state_dict()}, checkpoint)

    spec = ClipSpec(open_clip_model=MODEL, pretrained=str(checkpoint))
    model = build_model(spec)
    loaded = model.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded[name].reshape(tensor.shape), tensor), name
    assert not any(p.requires_grad for p in model.transformer.parameters())  # text tower locked

    export = tmp_path / "export"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in loaded.items()}, str(export / WEIGHTS))
    (export / SPEC).write_text(spec.to_json())
    encoder = ClipEncoder(export)
    images = encoder.encode_images([Image.new("RGB", (300, 200), "red")])
    texts = encoder.encode_texts(["a red picture"])
    assert images.shape == (1, model.visual.output_dim) == texts.shape
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-5)
