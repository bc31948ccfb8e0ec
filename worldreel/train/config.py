"""Training recipe config: one ``TrainConfig`` for every task.

A preset holds one recipe per task (``Preset.train_vae``, ``Preset.train_dit``); the CLI
overrides single keys with ``--set train.lr=1e-3``. The trainer (``train/trainer.py``)
reads the optimisation, precision, parallelism and bookkeeping keys; the tasks read the
data keys (``batch_size``, ``data``, ``workers``, ``sizes``, ``seconds``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    # --- optimisation -------------------------------------------------------------------
    steps: int = 1000  # optimiser steps of the whole run (the LR schedule spans these)
    batch_size: int = 8  # items per process per micro-batch
    accum: int = 1  # micro-batches per optimiser step (gradient accumulation)
    lr: float = 3e-4  # peak learning rate (AdamW)
    warmup: int = 100  # linear warmup steps from 0 to ``lr``
    min_lr: float = 0.1  # cosine decay ends at ``min_lr * lr`` on the last step
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas; 0.99 rather than 0.999 suits short runs
    weight_decay: float = 0.0  # AdamW decoupled weight decay (applied to every parameter)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables)
    ema: float = 0.999  # EMA decay of the exported weights (0 disables: the raw weights are exported)
    seed: int = 0  # seeds model init, data order and the loss generator (per rank)

    # --- precision, memory and parallelism -----------------------------------------------
    device: str = "auto"  # "auto" (CUDA if present, else CPU), "cpu" or "cuda"
    precision: str = "auto"  # "auto" (bf16 autocast on a GPU or a CPU with AMX / AVX512-BF16, else fp32), "fp32" or "bf16" (worldreel/precision.py)
    compile: bool = False  # torch.compile the model (minutes of compiling on a 2-core CPU first; see `worldreel bench speed --train`)
    grad_checkpointing: bool = False  # trade compute for memory; passed to model.set_grad_checkpointing
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated weights) or "fsdp" (sharded, large presets)
    find_unused: bool = False  # DDP find_unused_parameters, for tasks that skip parameters on some batches

    # --- bookkeeping ---------------------------------------------------------------------
    log_every: int = 10  # steps between TensorBoard / log.jsonl points (loss averaged over them)
    save_every: int = 250  # steps between checkpoints (also saved at the end and on SIGTERM/SIGINT)
    keep: int = 3  # checkpoints kept in <run>/checkpoints (older ones are deleted)
    eval_every: int = 500  # steps between the task's evaluate() hook (samples, quick score); 0 = at the end only
    progress: bool = True  # tqdm bar on rank 0 (loss, steps/s, ETA)

    # --- data (read by the tasks) ----------------------------------------------------------
    data: str = "world"  # "world" (on-the-fly reel-world clips), a latent cache folder, or a video folder / JSONL
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(64, 64)])  # (W, H) buckets for on-the-fly clips
    seconds: list[float] = field(default_factory=lambda: [4.0])  # clip length buckets (0 = single images)
