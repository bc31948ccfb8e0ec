"""Diffusion transformer over spacetime latent patches (issue 4). Placeholder: config only, so far."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiTConfig:
    in_channels: int = 16  # latent channels (= VAEConfig.latent_channels)
    patch: tuple[int, int, int] = (1, 2, 2)  # (time, height, width) patch size in latent cells
    width: int = 256  # hidden size
    depth: int = 8  # transformer blocks
    heads: int = 4  # attention heads
    text_dim: int = 384  # width of the text encoder's token states (MiniLM-L6)
    skips: str = "none"  # "none" or "uvit" (U-ViT long skip connections)
