"""Causal-LM architectures by name or config file, built on the meta device (shapes, no weights).

The presets are the published architecture hyperparameters (no weights can be had here, and
none are needed to plan memory or to test the trainer on a tiny config); any Hugging Face
``config.json`` on disk works as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kb_platform.training.memory_plan import ModelShape

if TYPE_CHECKING:  # torch loads with the first model built, not with the command line
    import torch

PRESETS: dict[str, dict[str, Any]] = {
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
    },
    "llama-3-70b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
    },
    "llama-3.1-405b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "num_hidden_layers": 126,
        "num_attention_heads": 128,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
    },
    # the answer generator of the model store (kb_platform/models/generator.py)
    "gemma-3-270m": {
        "model_type": "gemma3_text",
        "vocab_size": 262144,
        "hidden_size": 640,
        "intermediate_size": 2048,
        "num_hidden_layers": 18,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    },
    # a random model small enough for two CPU ranks in the tests
    "tiny-llama": {
        "model_type": "llama",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
}


class UnknownArchitecture(ValueError):
    pass


def load_config(model: str) -> Any:
    """A transformers config from a preset name, a config.json, or a folder holding one."""
    from transformers import AutoConfig

    if model in PRESETS:
        settings = dict(PRESETS[model])
        return AutoConfig.for_model(settings.pop("model_type"), **settings)
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UnknownArchitecture(
            f"{model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a config.json"
        )
    return AutoConfig.from_pretrained(str(path), local_files_only=True)  # nosec B615 # local file


def meta_model(config: Any) -> torch.nn.Module:
    """The causal LM with every tensor on the meta device: the real module tree, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Llama/Gemma/Qwen-style causal LM (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise UnknownArchitecture(f"{type(model).__name__} has no model.layers")
    return list(layers)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shape_of(name: str, model: torch.nn.Module, config: Any) -> ModelShape:
    """What the memory plan needs, counted from the module tree itself."""
    text = getattr(config, "text_config", None) or config
    layers = decoder_layers(model)
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        name=name,
        total_params=_numel(model),
        layer_params=max(_numel(layer) for layer in layers),
        num_layers=len(layers),
        embedding_params=_numel(embedding),
        head_params=0 if tied or head is None else _numel(head),
        hidden=text.hidden_size,
        q_dim=heads * head_dim,
        kv_dim=text.num_key_value_heads * head_dim,
        ffn=text.intermediate_size,
        vocab=text.vocab_size,
    )


def model_shape(model: str) -> ModelShape:
    config = load_config(model)
    return shape_of(model, meta_model(config), config)
