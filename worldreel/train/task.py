"""What the one trainer needs to know about a model: a ``Task``.

The trainer (``train/trainer.py``) is one flat loop for every model; a task supplies the
model, the data and the loss, so the autoencoder (``train/vae_task.py``) and the denoiser
(``train/dit_task.py``) share checkpointing, resume, EMA, DDP/FSDP and logging.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch
from torch import nn


class Task(Protocol):
    name: str  # "vae" or "dit": the run folder's sub-name and the weights file's stem

    def build_model(self) -> nn.Module:
        """The trainable module, freshly initialised (weights loaded by the trainer on resume)."""

    def batches(self, *, seed: int, rank: int, world_size: int, start_step: int) -> Iterator[Any]:
        """An endless iterator of training batches. Deterministic given (seed, rank, world_size);
        ``start_step`` lets a resumed run continue exactly where it stopped (the data position)."""

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise and a dict of numbers to log. Randomness (noise, timesteps,
        masks) comes from ``generator`` so resume is exact."""

    def export(self, model: nn.Module, out_dir: str) -> None:
        """Write the trained weights (half precision safetensors) and this task's part of
        ``config.json`` into a model folder."""

    # Optional: ``data_facts(self) -> dict``, facts about the training data as it is when the
    # run starts (e.g. how many items a latent cache held, since a cache can grow in place
    # later), recorded as run.json's "data" so ``train pack`` can write commands that rebuild it.
