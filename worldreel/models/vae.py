"""Causal 3-D convolutional video autoencoder (issue 3). Placeholder: config only, so far."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VAEConfig:
    in_channels: int = 3  # RGB
    latent_channels: int = 16  # channels of the latent video
    time_factor: int = 4  # F = 1 + 4k frames -> 1 + k latent frames
    space_factor: int = 8  # H, W -> H/8, W/8
    base_channels: int = 32  # width of the first conv stage
    # Per-channel normalisation applied after encoding: z_norm = (z - shift) * scale.
    latent_shift: list[float] = field(default_factory=lambda: [0.0] * 16)
    latent_scale: list[float] = field(default_factory=lambda: [1.0] * 16)
