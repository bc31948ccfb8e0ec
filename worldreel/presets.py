"""Named presets: the name is the CLI choice, the run folder and the checkpoint's metadata.

A preset is a small function returning a ``Preset`` (model architecture + training
recipes), registered in ``PRESETS`` (as DiT registers ``DiT_models['DiT-XL/2']``).
A trained model on disk is a folder holding ``config.json`` (a ``ModelConfig``), the
weights as safetensors and a ``README.md`` model card (``worldreel/model_folder.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from worldreel.diffusion.guidance import DEFAULT_INTERVAL
from worldreel.errors import UserError
from worldreel.models.dit import DiTConfig
from worldreel.models.text import TextConfig
from worldreel.models.vae import VAEConfig
from worldreel.train.config import TrainConfig


@dataclass
class SamplingDefaults:
    """How a model samples when a call leaves these out: config.json's "sampling" section.

    They belong to the weights (a model may sample best with its own shift or guidance), are
    chosen by world-bench (docs/worldbench.md, "Tuning the sampler"), and a model folder
    without the section gets the values below.
    """

    steps: int = 20  # sampler steps per window
    guidance: float = 4.0  # classifier-free guidance scale (1 = off: no unconditional pass)
    sampler: str = "euler"  # "euler" or "heun" (diffusion/samplers.py)
    shift: float = 1.0  # timestep shift at the native clip, scaled with sqrt(tokens) (diffusion/flow.py)
    guidance_mode: str = "cfg"  # how guidance combines the two passes: cfg, interval, zero-star, apg (diffusion/guidance.py)
    guidance_interval: tuple[float, float] = DEFAULT_INTERVAL  # noise levels t (1 = noise) where guidance_mode "interval" guides
    stagger: float = 0.0  # lead of the first latent frame over the last (diffusion/flow.py stagger_timesteps); 0 = all together
    refine: int = 0  # latent frames 1..refine made again given all the others after each window (pipelines/generate.py); 0 = off
    steer: float = 0.0  # push each stated object its stated way with the folder's state probe (diffusion/steer.py); 0 = off
    best_of: int = 1  # start noises the folder's state probe picks from by the prompt (diffusion/steer.py rank_starts); 1 = the seed's own
    finalists: int = 1  # of the best_of starts, how many are made to the end and read again by the probe; 1 = the best start's only
    likelihood: float = 0.0  # weight of the denoiser's own flow error against the probe's fit when reading the finalists; 0 = the probe's only
    judge: float = 0.0  # weight of the folder's judge (diffusion/judge.py) when reading the finalists; 0 = not read


PROBE_OPTIONS = ("steer", "best_of", "finalists", "likelihood", "judge")  # the sampling options that read the state probe


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model; saved as the model folder's config.json."""

    name: str = "world-tiny"  # preset name this model was built from
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fps: int = 8  # frames per second of the training clips
    default_size: tuple[int, int] = (64, 64)  # (width, height) when --size is not given
    default_seconds: float = 4.0  # clip length when --seconds is not given
    max_side: int = 256  # largest supported width or height (multiples of 16)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)  # sampler settings when a call gives none


@dataclass
class Preset:
    model: ModelConfig
    train_vae: TrainConfig = field(default_factory=TrainConfig)
    train_dit: TrainConfig = field(default_factory=TrainConfig)


def world_tiny() -> Preset:
    """~10M-parameter denoiser and a small 4x8x8x16 autoencoder: trains on 2 CPU cores."""
    model = ModelConfig(
        name="world-tiny",
        vae=VAEConfig(latent_channels=16, time_factor=4, space_factor=8, base_channels=32),
        dit=DiTConfig(width=256, depth=8, heads=4, mlp_ratio=3.0, patch=(1, 2, 2)),
    )
    return Preset(
        model=model,
        train_vae=TrainConfig(steps=3000, batch_size=4, lr=1e-3, warmup=100),  # 4 crops of 33x32x32: ~1 step/s on 2 cores
        train_dit=TrainConfig(steps=4000, batch_size=32, lr=5e-4, warmup=200),
    )


def world_base() -> Preset:
    """A GPU-sized denoiser (~130M parameters) on the same autoencoder."""
    model = ModelConfig(
        name="world-base",
        vae=VAEConfig(latent_channels=16, time_factor=4, space_factor=8, base_channels=64),
        dit=DiTConfig(width=640, depth=14, heads=10, patch=(1, 2, 2)),
        max_side=512,
    )
    return Preset(
        model=model,
        train_vae=TrainConfig(steps=50_000, batch_size=16, lr=5e-4, warmup=1000),
        train_dit=TrainConfig(steps=200_000, batch_size=64, lr=2e-4, warmup=2000),
    )


def world_micro() -> Preset:
    """world-tiny's shape at a few hundred thousand parameters: for tests and smoke runs (seconds on a CPU)."""
    model = ModelConfig(
        name="world-micro",
        vae=VAEConfig(latent_channels=16, time_factor=4, space_factor=8, base_channels=8),
        dit=DiTConfig(width=32, depth=2, heads=2, mlp_ratio=3.0, patch=(1, 2, 2)),
    )
    return Preset(
        model=model,
        train_vae=TrainConfig(steps=20, batch_size=2, lr=1e-3, warmup=2),
        train_dit=TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup=2),
    )


PRESETS: dict[str, Callable[[], Preset]] = {
    "world-tiny": world_tiny,
    "world-base": world_base,
    "world-micro": world_micro,
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}", param="preset")
    return PRESETS[name]()

