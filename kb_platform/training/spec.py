"""The CLIP architecture as data, so training, export and inference build the same model.

Default (DESIGN §5): LiT style, the packaged all-MiniLM-L6-v2 as text tower (locked or partly
unlocked) and an open_clip vision transformer trained from scratch. Where a pretrained open_clip
model is available, ``open_clip_model`` (e.g. ``ViT-B-32``) with ``pretrained`` (an open_clip
tag such as ``laion2b_s34b_b79k`` or a checkpoint path) fine-tunes that instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from PIL import Image

CLIP_DIMS = 512
WEIGHTS = "model.safetensors"  # an export: the full model, unsharded
SPEC = "spec.json"  # and the spec that builds it


@dataclass(frozen=True)
class ClipSpec:
    embed_dim: int = CLIP_DIMS
    image_size: int = 128
    patch_size: int = 16
    vision_width: int = 256
    vision_layers: int = 4
    vision_head_width: int = 64
    context_length: int = 64
    text_unlocked_layers: int = 0  # top MiniLM layers trained along (0: the tower is locked)
    open_clip_model: str | None = None
    pretrained: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path) -> ClipSpec:
        return cls.from_dict(json.loads(path.read_text()))


def build_model(spec: ClipSpec, *, load_text_weights: bool = True) -> torch.nn.Module:
    """The model, with the text tower locked as the spec says. ``load_text_weights=False`` when
    a full state dict (an export) is loaded right after."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    from kb_platform.models.registry import offline, text_encoder_path

    offline()
    if spec.open_clip_model:
        model = open_clip.create_model(
            spec.open_clip_model, pretrained=spec.pretrained if load_text_weights else None
        )
    else:
        text_path = str(text_encoder_path())
        model = CustomTextCLIP(
            embed_dim=spec.embed_dim,
            vision_cfg=CLIPVisionCfg(
                layers=spec.vision_layers,
                width=spec.vision_width,
                head_width=spec.vision_head_width,
                patch_size=spec.patch_size,
                image_size=spec.image_size,
            ),
            text_cfg=CLIPTextCfg(
                hf_model_name=text_path,
                hf_tokenizer_name=text_path,
                hf_model_pretrained=load_text_weights,
                hf_proj_type="linear",
                hf_pooler_type="mean_pooler",
                context_length=spec.context_length,
            ),
        )
    model.lock_text_tower(unlocked_layers=spec.text_unlocked_layers, freeze_layer_norm=True)
    _vector_logit_scale(model)
    return model


def _vector_logit_scale(model: torch.nn.Module) -> None:
    # FSDP shards 1-d parameters only: the scalar temperature becomes a 1-element vector.
    import torch

    for name in ("logit_scale", "logit_bias"):
        value = getattr(model, name, None)
        if isinstance(value, torch.nn.Parameter) and value.dim() == 0:
            setattr(model, name, torch.nn.Parameter(value.detach().reshape(1)))


def tokenizer(spec: ClipSpec) -> Callable[[list[str]], torch.Tensor]:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from kb_platform.models.registry import text_encoder_path

    if spec.open_clip_model:
        return open_clip.get_tokenizer(spec.open_clip_model)
    return HFTokenizer(str(text_encoder_path()), context_length=spec.context_length)


def image_preprocess(spec: ClipSpec, model: torch.nn.Module) -> Callable[[Image.Image], Any]:
    """Deterministic: the whole picture squashed to the model's input size (pages are tall;
    a center crop would cut their top and bottom off)."""
    from open_clip.transform import image_transform

    size = model.visual.image_size if spec.open_clip_model else spec.image_size
    return image_transform(size, is_train=False, resize_mode="squash")
