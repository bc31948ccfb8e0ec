"""Training recipe config (issue 5). Placeholder so far."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    steps: int = 1000  # optimiser steps
    batch_size: int = 8  # per process
    lr: float = 3e-4  # peak learning rate
    warmup: int = 100  # linear warmup steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.999  # EMA decay (0 disables)
    seed: int = 0
