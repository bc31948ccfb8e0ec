"""The per-frame 2-D autoencoder baseline: compresses space only, frames never mix.

It answers one question for the benchmark (``eval/vae_bench.py``): at the *same number of
latent values per clip*, does compressing time as well as space (``VideoVAE``) beat
compressing each frame on its own, as early image-autoencoder video systems did?

Same building blocks, widths, losses and training recipe as the spacetime model; the only
differences are that every temporal kernel is 1 (a 3-D conv with kernel (1, 3, 3) is a 2-D
conv applied frame by frame) and that, keeping all F frames, it must compress space harder.

The budget arithmetic (``frame_vae_config``), for the default 4x8x8x16 model on the world's
native 33x64x64 clip:
  spacetime: 16 channels x (1 + 32/4 = 9) frames x 8 x 8   = 9216 values (44x fewer than 405,504 pixels)
  per-frame at x16 space: c channels x 33 frames x 4 x 4   = 528 c values
  the smallest c with 528 c >= 9216 is c = 18 -> 9504 values (+3.1 %, in the baseline's favour;
  c = 17 would be 8976, -2.6 %). Asymptotically (long clips) the spacetime model spends
  16 x 8 x 8 / 4 = 256 values per frame and the baseline 18 x 4 x 4 = 288.
"""
from __future__ import annotations

import dataclasses

from worldreel.errors import UserError
from worldreel.models.vae import VAEConfig, VideoVAE


def frame_vae_config(spacetime: VAEConfig, *, frames: int = 33, height: int = 64, width: int = 64,
                     space_factor: int | None = None) -> VAEConfig:
    """A per-frame config with at least ``spacetime``'s latent values on a (frames, height,
    width) clip, using the fewest channels that reach it.

    ``space_factor`` defaults to twice the spacetime model's (one more x2 level, whose width
    repeats the last level's), which keeps the channel count near the spacetime model's.
    """
    sf = space_factor or 2 * spacetime.space_factor
    if height % sf or width % sf:
        raise UserError(f"height and width must be multiples of {sf}", param="space_factor")
    f = 1 + -(-(frames - 1) // spacetime.time_factor)
    values = spacetime.latent_channels * f * (height // spacetime.space_factor) * (width // spacetime.space_factor)
    per_channel = frames * (height // sf) * (width // sf)  # values one latent channel adds
    channels = -(-values // per_channel)  # ceil: never fewer values than the spacetime model
    # one level per x2 in space after the patchify: the spacetime model's widths, the last
    # one repeated for the extra level(s)
    n_space = _log2(sf // spacetime.patch_size)
    mult = tuple(spacetime.channel_mult) + (spacetime.channel_mult[-1],) * (n_space + 1)
    mult = mult[: n_space + 1]
    return dataclasses.replace(
        spacetime, time_factor=1, temporal_kernel=1, space_factor=sf, latent_channels=channels,
        channel_mult=mult, latent_shift=[0.0] * channels, latent_scale=[1.0] * channels,
    )


def _log2(value: int) -> int:
    return value.bit_length() - 1


class FrameVAE(VideoVAE):
    """``VideoVAE`` with time_factor 1 and temporal kernels of 1: an image autoencoder applied
    to each frame; same API (encode/decode/chunked/tiled), latents (B, C, F, H/sf, W/sf)."""

    def __init__(self, cfg: VAEConfig):
        if cfg.time_factor != 1 or cfg.temporal_kernel != 1:
            raise UserError("a per-frame autoencoder needs time_factor=1 and temporal_kernel=1", param="vae")
        super().__init__(cfg)
