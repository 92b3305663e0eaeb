"""Contrastive image-text training of the knowledge base's CLIP model with PyTorch FSDP.

Launched with ``torchrun -m kb_platform.training.train --config <file>`` (by the
``clip_checkpoint`` asset through Dagster Pipes, by the benchmarks, or by hand); the modules here
hold the pieces: the model spec, the training pairs, sharded data, FSDP wrapping, distributed
checkpoints and the evaluation the promotion gate uses.
"""
