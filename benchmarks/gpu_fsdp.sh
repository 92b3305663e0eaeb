#!/usr/bin/env bash
# The FSDP trainer on a GPU machine: every GPU a rank (NCCL), bf16 mixed precision, the same code
# as on CPU. Each mode finishes within 5 minutes (a hard timeout of 290 s around the training).
#
#   bash benchmarks/gpu_fsdp.sh [STEPS] [BATCH_PER_GPU]          # CLIP (benchmarks/training.py)
#   bash benchmarks/gpu_fsdp.sh causal-lm [MODEL] [STEPS] [BATCH_PER_GPU] [SEQ_LEN]
#
# causal-lm: benchmarks/causal_lm_training.py with an architecture preset (default llama-3.2-1b)
# given random weights on the machine itself and random tokens (nothing to download, and
# throughput does not depend on the values): tokens/s per GPU, MFU against the GPU's bf16 peak,
# peak memory, and the scaling efficiency from 1 GPU to all of them where there are several.
# It needs only torch, transformers, pyarrow, fsspec, safetensors and tokenizers.
#
# Needs the project's Python environment (KB_PYTHON, default .venv/bin/python) and the shared
# corpus (KB_CORPUS_DIR, default ../shared/corpus, or shared/corpus inside the checkout).
# Prints the machine, the pairs, one metrics line per logged step (loss, samples/s per rank)
# and the held-out text-to-image recall of the export.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${KB_PYTHON:-.venv/bin/python}"
if [[ "${1:-}" == causal-lm ]]; then
  GPUS="$(nvidia-smi -L | wc -l)"
  RANKS=1
  ((GPUS > 1)) && RANKS="1,$GPUS"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  exec timeout 290 "$PY" benchmarks/causal_lm_training.py --model "${2:-llama-3.2-1b}" \
    --random-init --data random --ranks "$RANKS" --steps "${3:-40}" --batch "${4:-8}" \
    --seq-len "${5:-2048}" --random-docs 600 --lr 1e-4
fi
STEPS="${1:-300}"
BATCH="${2:-128}"
if [[ -z "${KB_CORPUS_DIR:-}" ]]; then
  if [[ -d ../shared/corpus ]]; then KB_CORPUS_DIR=../shared/corpus; else KB_CORPUS_DIR=shared/corpus; fi
fi
export KB_CORPUS_DIR
GPUS="$(nvidia-smi -L | wc -l)"
WORK="$(mktemp -d /tmp/kb-gpu-fsdp.XXXXXX)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "ranks: $GPUS, steps: $STEPS, batch per GPU: $BATCH, work: $WORK"

"$PY" - "$WORK" "$STEPS" "$BATCH" <<'PYTHON'
import sys
from pathlib import Path

from kb_platform.config import get_settings
from kb_platform.training.config import TrainConfig
from kb_platform.training.corpus import corpus_pdf_examples
from kb_platform.training.data import write_manifest

work, steps, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
train, held_out = corpus_pdf_examples(get_settings().corpus_dir, work)
write_manifest(work / "train.jsonl", train)
write_manifest(work / "held_out.jsonl", held_out)
TrainConfig(
    manifest=str(work / "train.jsonl"),
    out_dir=str(work / "run"),
    steps=steps,
    batch_size=batch,
    lr=1e-3,
    warmup_steps=20,
    mixed_precision="bf16",
    checkpoint_every=max(steps // 3, 1),
    log_every=20,
    num_workers=4,
    threads_per_rank=4,
).save(work / "config.json")
print(f"pairs: {len(train)} training, {len(held_out)} held out")
PYTHON

started=$(date +%s)
timeout 290 "$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" \
  -m kb_platform.training.train --config "$WORK/config.json"
echo "training wall time: $(( $(date +%s) - started )) s"
cat "$WORK/run/metrics.jsonl"

"$PY" - "$WORK" <<'PYTHON'
import sys
from pathlib import Path

from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.training.data import read_manifest
from kb_platform.training.evaluation import text_to_image_recall

work = Path(sys.argv[1])
held_out = read_manifest(work / "held_out.jsonl")
print("held-out text-to-image:", text_to_image_recall(ClipEncoder(work / "run" / "export"), held_out))
PYTHON
