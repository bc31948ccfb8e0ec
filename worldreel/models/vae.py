"""Causal 3-D convolutional video autoencoder: compresses time x4 and space x8 by default.

The shape of it
---------------
``video (B, 3, F, H, W) in [-1, 1]`` -> encoder -> diagonal Gaussian ``(mean, logvar)``
``(B, C, f, h, w)`` -> normalised latents ``z = (mean - latent_shift) * latent_scale`` ->
decoder -> ``video (B, 3, 1 + time_factor * (f - 1), H, W)``.

* **Causal in time.** Every temporal convolution pads only the past side (with copies of
  the first frame), so an output frame never depends on later frames. The temporal
  downsampler is a stride-2 causal convolution: output ``j`` sees inputs ``2j-2 .. 2j``, so
  latent frame 0 sees video frame 0 alone (an image is a 1-frame video) and
  ``F = 1 + 4k`` frames become ``1 + k`` latent frames. Other lengths are padded by
  repeating the last frame up to the next ``1 + 4k`` and trimmed back by ``forward``
  (``decode`` itself returns ``1 + 4(f - 1)`` frames: it cannot know the original length).
* **Chunked, constant memory.** Because every temporal operator is causal, encoding and
  decoding run chunk by chunk carrying a small cache: for each temporal convolution, the
  input frames its next output window still needs (2 frames for a kernel-3 conv). The
  chunked result equals the one-shot result (up to float rounding).
* **Fully convolutional, local normalisation.** Norms are per voxel over channels (no
  statistics over time or space), so a model trained on 33x32x32 crops applies unchanged to
  full frames, time chunks and spatial tiles. Crops must span enough time, though: a model
  trained on 9-frame crops never saw its temporal receptive field filled with real past
  frames, and decoded frames deep in a long clip markedly worse (docs/training.md, "Recipe notes").
* **Cheap at full resolution.** A 2x2 space-to-depth patchify before the first conv (and a
  depth-to-space after the last) keeps the widest layers at half resolution; this is what
  lets the default train on 2 CPU cores.

Latent normalisation ``latent_shift`` / ``latent_scale`` are per-channel numbers in the
config, measured from data when a trained model is exported (``train/vae_task.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldreel.errors import UserError


@dataclass
class VAEConfig:
    in_channels: int = 3  # RGB
    latent_channels: int = 16  # channels of the latent video
    time_factor: int = 4  # F = 1 + 4k frames -> 1 + k latent frames (1, 2, 4 or 8)
    space_factor: int = 8  # H, W -> H/8, W/8 (= patch_size * 2**(spatial downsamplings))
    base_channels: int = 32  # width of the first conv stage
    # Per-channel normalisation applied after encoding: z_norm = (z - shift) * scale.
    # The all-0 / all-1 defaults mean "identity" and broadcast to any latent_channels.
    latent_shift: list[float] = field(default_factory=lambda: [0.0] * 16)
    latent_scale: list[float] = field(default_factory=lambda: [1.0] * 16)
    patch_size: int = 2  # space-to-depth factor before the first conv (depth-to-space after the last)
    channel_mult: tuple[int, ...] = (1, 2, 4)  # width of each level = base_channels * mult; one level per downsampling + 1
    encoder_blocks: int = 1  # residual blocks per level in the encoder
    decoder_blocks: int = 2  # residual blocks per level in the decoder (decoding is the harder half)
    temporal_kernel: int = 3  # temporal kernel of the convs; 1 = frames never mix (the 2-D per-frame baseline)


def vae_presets() -> dict[str, VAEConfig]:
    """Named autoencoder layouts ``time x height x width x channels``.

    All three keep 48x fewer latent values than RGB pixels; the last two trade latent
    *positions* (the denoiser's sequence length) for channels, which is what makes longer
    videos affordable: 4x16x16x64 has 4x fewer positions than the default, 8x8x8x32 2x fewer.
    """
    return {
        "4x8x8x16": VAEConfig(),
        "4x16x16x64": VAEConfig(
            latent_channels=64, space_factor=16, channel_mult=(1, 2, 4, 4),
            latent_shift=[0.0] * 64, latent_scale=[1.0] * 64,
        ),
        "8x8x8x32": VAEConfig(
            latent_channels=32, time_factor=8, channel_mult=(1, 2, 4, 4),
            latent_shift=[0.0] * 32, latent_scale=[1.0] * 32,
        ),
    }


def level_plan(cfg: VAEConfig) -> list[tuple[bool, bool]]:
    """(downsample space?, downsample time?) for each transition between levels.

    Both kinds of downsampling happen at the coarsest transitions, where they are cheapest.
    """
    n_space = _log2(cfg.space_factor // max(cfg.patch_size, 1), "vae.space_factor")
    n_time = _log2(cfg.time_factor, "vae.time_factor")
    if cfg.space_factor % cfg.patch_size:
        raise UserError(f"space_factor {cfg.space_factor} is not a multiple of patch_size {cfg.patch_size}", param="vae.patch_size")
    steps = len(cfg.channel_mult) - 1
    if steps != max(n_space, n_time):
        raise UserError(
            f"channel_mult needs {max(n_space, n_time) + 1} levels for space x{cfg.space_factor} "
            f"(patch {cfg.patch_size}) and time x{cfg.time_factor}, got {len(cfg.channel_mult)}",
            param="vae.channel_mult",
        )
    if cfg.time_factor > 1 and cfg.temporal_kernel < 3:
        raise UserError("time compression needs temporal_kernel >= 3", param="vae.temporal_kernel")
    return [(i >= steps - n_space, i >= steps - n_time) for i in range(steps)]


def _log2(value: int, name: str) -> int:
    if value < 1 or value & (value - 1):
        raise UserError(f"{name} must be a power of two, got {value}", param=name)
    return int(math.log2(value))


# ----------------------------------------------------------------------------- layers
# Every layer takes (x, cache). ``cache`` is a dict shared by one chunked pass (one-shot =
# a single chunk): a temporal layer finds its state under its own key; no entry means
# "this is the start of the video".


class CausalConv3d(nn.Module):
    """3-D conv padded only on the past side in time; spatial padding is ordinary 'same'."""

    def __init__(self, cin: int, cout: int, kt: int = 3, ks: int = 3, st: int = 1, ss: int = 1):
        super().__init__()
        self.kt, self.st = kt, st
        self.conv = nn.Conv3d(cin, cout, (kt, ks, ks), stride=(st, ss, ss), padding=(0, ks // 2, ks // 2))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        if self.conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and self.conv.weight.shape[1] > 1:
            # channels-last weights (VideoVAE.set_channels_last): give oneDNN its preferred
            # layout, so the bf16 conv runs without reordering the activations each call.
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.kt == 1 and self.st == 1:  # per-frame conv: no temporal state
            return self.conv(x)
        prev = cache.get(self)
        if prev is None:  # start of the video: the past is copies of the first frame
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x], dim=2)  # (B, C, kt-1+T, H, W)
        else:
            x = torch.cat([prev, x], dim=2)
        n = (x.shape[2] - self.kt) // self.st + 1 if x.shape[2] >= self.kt else 0  # complete windows
        # the frames from the next window's start on are still needed by the next chunk
        cache[self] = x[:, :, n * self.st:].clone()
        if n == 0:
            ss = self.conv.stride[1]
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0, -(-x.shape[3] // ss), -(-x.shape[4] // ss))
        return self.conv(x[:, :, : (n - 1) * self.st + self.kt])


class ChannelNorm(nn.Module):
    """RMS norm over channels at each voxel: no statistics across time or space (chunk- and tile-safe)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        return x * self.weight.to(x.dtype).view(1, -1, 1, 1, 1)  # weight in x's dtype: bf16 stays bf16 under autocast


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.norm1, self.conv1 = ChannelNorm(cin), CausalConv3d(cin, cout, kt)
        self.norm2, self.conv2 = ChannelNorm(cout), CausalConv3d(cout, cout, kt)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided causal conv: x2 in space and/or time (time: output j sees inputs 2j-2..2j)."""

    def __init__(self, cin: int, cout: int, space: bool, time: bool, kt: int):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, kt, 3, st=2 if time else 1, ss=2 if space else 1)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        return self.conv(x, cache)


class Upsample(nn.Module):
    """Causal conv to (2 in time) x (2x2 in space) times the channels, then depth-to-spacetime.

    Latent frame 0 stands for video frame 0 alone, so the first of its two frames is dropped
    at the start of the video: 1 + m frames -> 1 + 2m frames.
    """

    def __init__(self, cin: int, cout: int, space: bool, time: bool, kt: int):
        super().__init__()
        self.t, self.s = (2 if time else 1), (2 if space else 1)
        self.conv = CausalConv3d(cin, cout * self.t * self.s * self.s, kt)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        first = self not in cache
        cache[self] = True  # later chunks keep both frames
        x = self.conv(x, cache)
        x = rearrange(x, "b (c t p q) f h w -> b c (f t) (h p) (w q)", t=self.t, p=self.s, q=self.s)  # (B, C, f*t, h*s, w*s)
        return x[:, :, 1:] if (first and self.t == 2) else x


class Head(nn.Module):
    """norm -> SiLU -> causal conv: the last layer of the encoder and of the decoder."""

    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.norm, self.conv = ChannelNorm(cin), CausalConv3d(cin, cout, kt)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)), cache)


def _encoder_layers(cfg: VAEConfig) -> nn.ModuleList:
    kt, p = cfg.temporal_kernel, cfg.patch_size
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    layers: list[nn.Module] = [CausalConv3d(cfg.in_channels * p * p, widths[0], kt)]
    for level, width in enumerate(widths):
        layers += [ResBlock(width, width, kt) for _ in range(cfg.encoder_blocks)]
        if level < len(widths) - 1:
            space, time = level_plan(cfg)[level]
            layers.append(Downsample(width, widths[level + 1], space, time, kt))
    layers.append(Head(widths[-1], 2 * cfg.latent_channels, kt))  # -> (mean, logvar)
    return nn.ModuleList(layers)


def _decoder_layers(cfg: VAEConfig) -> nn.ModuleList:
    kt, p = cfg.temporal_kernel, cfg.patch_size
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    plan = level_plan(cfg)
    layers: list[nn.Module] = [CausalConv3d(cfg.latent_channels, widths[-1], kt)]
    for level in range(len(widths) - 1, -1, -1):
        layers += [ResBlock(widths[level], widths[level], kt) for _ in range(cfg.decoder_blocks)]
        if level > 0:
            space, time = plan[level - 1]
            layers.append(Upsample(widths[level], widths[level - 1], space, time, kt))
    layers.append(Head(widths[0], cfg.in_channels * p * p, kt))
    return nn.ModuleList(layers)


# ----------------------------------------------------------------------------- model


class VideoVAE(nn.Module):
    """Causal video autoencoder with a diagonal Gaussian latent (see the module docstring)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        level_plan(cfg)  # validates the layout
        self.cfg = cfg
        self.encoder = _encoder_layers(cfg)
        self.decoder = _decoder_layers(cfg)
        shift, scale = _latent_norm(cfg)
        # not persistent: the numbers live in config.json, the weights file holds weights only
        self.register_buffer("latent_shift", shift.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latent_scale", scale.view(1, -1, 1, 1, 1), persistent=False)

    def set_channels_last(self, enabled: bool = True) -> "VideoVAE":
        """Store the conv weights channels-last (``torch.channels_last_3d``) and run the convs
        on channels-last activations: with bf16 on a CPU, oneDNN's fast layout (issue 31).
        Results are the same up to rounding; the state dict's values do not change."""
        layout = torch.channels_last_3d if enabled else torch.contiguous_format
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
        return self

    # -- shapes and checks
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, f, h, w) of the latents of a (frames, height, width) video."""
        c = self.cfg
        return (c.latent_channels, 1 + -(-(frames - 1) // c.time_factor), height // c.space_factor, width // c.space_factor)

    def set_latent_stats(self, shift: list[float], scale: list[float]) -> None:
        """Install measured per-channel latent statistics (config and buffers)."""
        self.cfg.latent_shift, self.cfg.latent_scale = [float(v) for v in shift], [float(v) for v in scale]
        s, k = _latent_norm(self.cfg)
        self.latent_shift.copy_(s.view(1, -1, 1, 1, 1))
        self.latent_scale.copy_(k.view(1, -1, 1, 1, 1))

    def _check_video(self, video: torch.Tensor) -> None:
        _check_tensor(video, "video", "(B, 3, F, H, W)")
        if video.shape[1] != self.cfg.in_channels:
            raise UserError(f"video must have {self.cfg.in_channels} channels (B, 3, F, H, W), got shape {tuple(video.shape)}", param="video")
        sf = self.cfg.space_factor
        if video.shape[3] % sf or video.shape[4] % sf:
            raise UserError(f"video height and width must be multiples of {sf}, got {video.shape[3]}x{video.shape[4]}", param="video")
        lo, hi = float(video.min()), float(video.max())
        if lo < -1.5 or hi > 1.5:  # a little overshoot is fine; 0..255 or 0..1-with-offset inputs are not
            raise UserError(f"video values must be in [-1, 1] (pixel / 127.5 - 1), got [{lo:.3g}, {hi:.3g}]", param="video")

    def _check_latents(self, z: torch.Tensor) -> None:
        _check_tensor(z, "z", "(B, C, f, h, w)")
        if z.shape[1] != self.cfg.latent_channels:
            raise UserError(f"z must have {self.cfg.latent_channels} channels, got shape {tuple(z.shape)}", param="z")

    def _pad_time(self, video: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame up to the next 1 + time_factor * k frames."""
        extra = (-(video.shape[2] - 1)) % self.cfg.time_factor
        if extra:
            video = torch.cat([video, video[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)
        return video

    # -- raw networks (no checks, no normalisation)
    def _encode_raw(self, video: torch.Tensor, cache: dict) -> torch.Tensor:
        p = self.cfg.patch_size
        x = rearrange(video, "b c f (h p) (w q) -> b (c p q) f h w", p=p, q=p)  # space-to-depth
        for layer in self.encoder:
            x = layer(x, cache)
        return x  # (B, 2C, f, h, w) = mean ++ logvar

    def _decode_raw(self, z: torch.Tensor, cache: dict) -> torch.Tensor:
        p = self.cfg.patch_size
        x = z
        for layer in self.decoder:
            x = layer(x, cache)
        return rearrange(x, "b (c p q) f h w -> b c f (h p) (w q)", p=p, q=p)  # depth-to-space

    def _to_latents(self, moments: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        mean, logvar = moments.chunk(2, dim=1)
        z = mean
        if sample:
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * _noise_like(mean, generator)
        return (z - self.latent_shift) * self.latent_scale

    # -- public API
    def moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, logvar), unnormalised, each (B, C, f, h, w)."""
        self._check_video(video)
        mean, logvar = self._encode_raw(self._pad_time(video), {}).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, C, 1 + ceil((F-1)/tf), H/sf, W/sf)."""
        self._check_video(video)
        return self._to_latents(self._encode_raw(self._pad_time(video), {}), sample, generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, f, h, w) -> video (B, 3, 1 + tf*(f-1), h*sf, w*sf), about [-1, 1]."""
        self._check_latents(z)
        return self._decode_raw(z / self.latent_scale + self.latent_shift, {})

    def encode_chunked(self, video: torch.Tensor, chunk_frames: int = 17, *, sample: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """``encode`` in time chunks with a causal cache; equal to ``encode`` for sample=False.

        Chunks are aligned to the latent grid: the first holds 1 + tf*m frames and the others
        tf*m, m = max(1, chunk_frames // tf), so each chunk yields whole latent frames.
        """
        self._check_video(video)
        tf, frames = self.cfg.time_factor, video.shape[2]
        m = max(1, int(chunk_frames) // tf) * tf
        cache: dict = {}
        out, start = [], 0
        while start < frames:
            stop = min(frames, start + m + (1 if start == 0 else 0))
            chunk = video[:, :, start:stop]
            if stop == frames:  # the last chunk: repeat the last frame up to the latent grid
                extra = (-(frames - 1)) % tf
                chunk = torch.cat([chunk, chunk[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2) if extra else chunk
            out.append(self._to_latents(self._encode_raw(chunk, cache), sample, generator))
            start = stop
        return torch.cat(out, dim=2)

    def decode_stream(self, z: torch.Tensor, chunk_latents: int = 4) -> Iterator[torch.Tensor]:
        """Decode ``chunk_latents`` latent frames at a time, yielding pixel chunks in order
        (the first has 1 + tf*(n-1) frames, the others tf*n); memory does not grow with length."""
        self._check_latents(z)
        cache: dict = {}
        for start in range(0, z.shape[2], max(1, int(chunk_latents))):
            chunk = z[:, :, start:start + max(1, int(chunk_latents))]
            yield self._decode_raw(chunk / self.latent_scale + self.latent_shift, cache)

    def decode_chunked(self, z: torch.Tensor, chunk_latents: int = 4) -> torch.Tensor:
        """``decode`` in time chunks with a causal cache; equal to ``decode``."""
        return torch.cat(list(self.decode_stream(z, chunk_latents)), dim=2)

    def decode_tiled(self, z: torch.Tensor, tile_latents: int = 8, overlap_latents: int = 2, chunk_latents: int = 4) -> torch.Tensor:
        """Decode large frames as overlapping spatial tiles (each chunked in time), blended
        with linear ramps across the overlaps. Equals ``decode`` when one tile covers the frame;
        otherwise differs only near tile seams (the decoder's receptive field crosses them)."""
        self._check_latents(z)
        if overlap_latents < 0 or tile_latents <= overlap_latents:
            raise UserError(f"tile_latents ({tile_latents}) must exceed overlap_latents ({overlap_latents}) >= 0", param="tile_latents")
        sf, (b, _, f, h, w) = self.cfg.space_factor, z.shape
        out = torch.zeros(b, self.cfg.in_channels, 1 + self.cfg.time_factor * (f - 1), h * sf, w * sf, dtype=z.dtype, device=z.device)
        weight = torch.zeros(1, 1, 1, h * sf, w * sf, dtype=z.dtype, device=z.device)
        for y0 in _tile_starts(h, tile_latents, overlap_latents):
            for x0 in _tile_starts(w, tile_latents, overlap_latents):
                y1, x1 = min(h, y0 + tile_latents), min(w, x0 + tile_latents)
                tile = self.decode_chunked(z[:, :, :, y0:y1, x0:x1], chunk_latents)
                ramp = _ramp(y1 - y0, y0 > 0, y1 < h, overlap_latents * sf, sf, z).view(-1, 1) * \
                    _ramp(x1 - x0, x0 > 0, x1 < w, overlap_latents * sf, sf, z).view(1, -1)  # (th, tw)
                out[..., y0 * sf:y1 * sf, x0 * sf:x1 * sf] += tile * ramp
                weight[..., y0 * sf:y1 * sf, x0 * sf:x1 * sf] += ramp
        return out / weight

    def forward(self, video: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
                latent_map: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """Training pass: (reconstruction trimmed to F frames, posterior mean, posterior logvar).

        ``latent_map``: optional, normalised latents (B, C, f, h, w) -> the normalised latents
        to decode instead (training the decoder on latents such as a denoiser makes)."""
        mean, logvar = self.moments(video)
        z = mean
        if sample:
            z = mean + torch.exp(0.5 * logvar) * _noise_like(mean, generator)
        if latent_map is not None:
            z = latent_map((z - self.latent_shift) * self.latent_scale) / self.latent_scale + self.latent_shift
        recon = self._decode_raw(z, {})[:, :, : video.shape[2]]
        return recon, mean, logvar


# ----------------------------------------------------------------------------- helpers


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise shaped like ``x``, drawn on the generator's device (so a CPU generator
    drives a GPU model reproducibly)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _latent_norm(cfg: VAEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    c = cfg.latent_channels
    shift, scale = list(cfg.latent_shift), list(cfg.latent_scale)
    if len(shift) != c and all(v == 0.0 for v in shift):
        shift = [0.0] * c  # identity default broadcasts
    if len(scale) != c and all(v == 1.0 for v in scale):
        scale = [1.0] * c
    for name, values in (("latent_shift", shift), ("latent_scale", scale)):
        if len(values) != c:
            raise UserError(f"vae.{name} has {len(values)} values for {c} latent channels", param=f"vae.{name}")
    if any(not math.isfinite(v) or v == 0.0 for v in scale):
        raise UserError("vae.latent_scale values must be finite and non-zero", param="vae.latent_scale")
    return torch.tensor(shift, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)


def _check_tensor(x, name: str, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{name} must be a torch tensor {layout}, got {type(x).__name__}", param=name)
    if x.ndim != 5:
        raise UserError(f"{name} must be 5-D {layout}, got shape {tuple(x.shape)}", param=name)
    if x.numel() == 0:
        raise UserError(f"{name} is empty: shape {tuple(x.shape)}", param=name)
    if not x.is_floating_point():
        raise UserError(f"{name} must be a float tensor, got {x.dtype}", param=name)
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{name} contains NaN or infinite values", param=name)


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, tile - overlap))
    return starts + [n - tile]


def _ramp(n_lat: int, before: bool, after: bool, overlap_px: int, sf: int, like: torch.Tensor) -> torch.Tensor:
    """Blend weights along one axis of a tile: linear 0->1 over the overlap on sides shared with a neighbour."""
    w = torch.ones(n_lat * sf, dtype=like.dtype, device=like.device)
    if overlap_px:
        ramp = (torch.arange(overlap_px, dtype=like.dtype, device=like.device) + 0.5) / overlap_px
        if before:
            w[:overlap_px] = torch.minimum(w[:overlap_px], ramp)
        if after:
            w[-overlap_px:] = torch.minimum(w[-overlap_px:], ramp.flip(0))
    return w

