"""The autoencoder as a trainer ``Task`` (see ``train/task.py``): model, data, loss, export.

Data: random spacetime crops (default 33x32x32: the whole 4 s in time, a busy quarter of
the frame in space) of reel-world clips (64x64x33), with a
fraction of batches made of whole 1-frame images, so the same weights learn images and
clips. Clips come from the reel world (``data/world.py``: ``sample_scene`` + ``render_clip``,
held-out combinations excluded) through a pool that cuts many crops from each rendered clip
(``ClipPool``); with ``data="synthetic"`` (or while data/world.py is absent) a built-in
renderer of moving flat-coloured shapes on the world's sky, floor, ticks and pillar stands
in (``synthetic_clip``). Each step's batch is a pure function of (seed, rank, step), so a
resumed run sees exactly the batches it would have seen.

Loss: L1 + MSE (optionally weighted towards "detail" pixels, ``detail_weight``, and
moving ones, ``motion_weight``) + L1 of
spatial/temporal finite differences (a gradient loss: sharp edges without a downloaded
perceptual network) + a small KL; an optional L1 between each frame's spatial amplitude
spectra (``spectral_weight``: blind to where a pattern sits, so it penalises fading a
pattern the decoder cannot place, e.g. a pan's 1-px floor ticks, rather than averaging it
away); an optional hinge-GAN term from a small 3-D patch critic (``adversarial=True``,
off by default).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldreel.data import facts as W
from worldreel.diffusion import flow
from worldreel.models.vae import VAEConfig, VideoVAE, save_vae
from worldreel.train.vae_losses import detail_mask, gradient_loss, motion_mask, psnr, spectral_loss
from worldreel.errors import UserError


@dataclass
class VAETaskConfig:
    # (frames, height, width) of a training crop. Whole 4 s clips in time: a causal model
    # trained on 9-frame crops decoded frames deep in a 33-frame clip ~6 dB worse than the
    # same frames encoded as a short clip (its temporal receptive field never saw that much
    # real past); trained on 33-frame crops, a frame's quality no longer depends on how much
    # of the clip came before it (docs/training.md "The shipped autoencoder").
    crop: tuple[int, int, int] = (33, 32, 32)
    image_prob: float = 0.25  # fraction of batches that are whole 1-frame images instead of crops
    clip_size: tuple[int, int] = (64, 64)  # (width, height) of the clips crops are taken from
    clip_frames: int = 33  # frames of those clips (the world's native 4 s)
    # When train.data is "world": "world" (data/world.py), "synthetic" (built-in stand-in shapes)
    # or "auto" (world if installed). Otherwise train.data is a folder / JSONL of the user's videos.
    data: str = "auto"
    pool_clips: int = 512  # whole clips kept per process (uint8, ~200 MB at 64x64x33) that crops are cut from
    pool_refresh: int = 500  # steps after which each pool slot holds a fresh clip
    crop_tries: int = 4  # candidate positions per crop; the busiest (highest pixel std) is kept, so fewer crops are empty sky
    l1_weight: float = 1.0  # weight of the L1 pixel loss (sharp, but its per-pixel sign gradient under-weights small objects)
    mse_weight: float = 10.0  # weight of the squared pixel loss: large errors (a missing object) dominate its gradient
    grad_weight: float = 1.0  # weight of the finite-difference (gradient) L1 loss
    kl_weight: float = 1e-6  # weight of the per-element mean KL to N(0, 1): small, keeps latents bounded
    # Extra weight of "detail" pixels in the L1 and squared losses: pixels (and their 1-px
    # ring) whose colour is far from their frame's dominant (median) colour, i.e. objects,
    # floor, ticks and pillar rather than empty sky. Objects are ~4 % of a reel-world frame
    # yet carry most of the reconstruction error; 0 weighs every pixel alike.
    detail_weight: float = 0.0
    detail_threshold: float = 0.1  # colour distance (max over RGB, on the [-1, 1] scale) that makes a pixel "detail"
    # Extra weight of moving pixels (clips only): pixels whose colour changes by more than
    # detail_threshold from the frame before or to the frame after, and their 1-px ring, so
    # what moves (a pan's 1-px floor ticks, a falling ball) is not outvoted by what stays.
    # 0 weighs them alike. (docs/training.md: on world-tiny's decoder it did not, in 400
    # steps, teach the decoder to move the ticks of a pan.)
    motion_weight: float = 0.0
    # Weight of the spectral amplitude loss: L1 between |FFT| of each frame of the
    # reconstruction and of the input (``spectral_loss``). Pixel losses are minimised by
    # the average of the places a detail could be, i.e. by fading it; this term is not
    # (a pattern's amplitude spectrum does not depend on where it sits). 0 = off. (docs/training.md:
    # at 2 on world-tiny's decoder, pan ticks stayed readable in 33 % of frame pairs against 24 %
    # without it, but a pan's camera check still failed.)
    spectral_weight: float = 0.0
    adversarial: bool = False  # add a hinge-GAN term from a 3-D patch critic
    adv_weight: float = 0.05  # weight of the generator's adversarial term
    adv_start: int = 1000  # step from which the adversarial term is on (the critic trains from step 0)
    init: str = ""  # model folder (or shipped name) whose autoencoder weights the run starts from; "" = random
    # Train the decoder only: the encoder (and so every latent it makes, e.g. a denoiser's
    # latent cache) stays exactly as ``init`` left it, while decoding keeps improving.
    freeze_encoder: bool = False
    # Decode what a denoiser makes, not only what the encoder makes (needs freeze_encoder):
    # for a share ``denoised_prob`` of the samples, the clean latents are noised to a time
    # t ~ U(0, denoised_t) and replaced by this model's denoiser's one-step estimate of them,
    # x_t - t * v (empty prompt), while the target stays the real clip. A denoiser's estimates
    # are off the encoder's manifold (smoothed, errors spread over a clip); a decoder that has
    # seen them learns to render them as the clips they stand for. "" = off.
    denoiser: str = ""
    denoised_prob: float = 0.5
    denoised_t: float = 0.5
    stats_clips: int = 32  # full clips encoded at export to measure latent_shift / latent_scale
    stats_seed: int = 1234  # seed of those clips


# ----------------------------------------------------------------------------- data


def synthetic_clip(rng: np.random.Generator, frames: int = 33, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A reel-world-like clip, uint8 (n, h, w, 3): 1-3 flat-coloured balls/boxes falling,
    rolling, thrown or resting over the sky/floor/ticks, an optional pillar in front, an
    optional camera pan. Anti-aliased by 4x4 supersampling.

    A stand-in until ``data/world.py`` exists: its motion is simple kinematics, not pymunk.
    """
    width, height = size
    ss, fps, g = 4, W.FPS, W.GRAVITY
    # 1. scene
    cam_speed = float(rng.choice([0.0, 0.0, -0.2, 0.2]))  # world units / s
    pillar_x = float(rng.uniform(0.3, 0.7) * width / height) if rng.random() < 0.3 else None
    objects = []
    for _ in range(int(rng.integers(1, W.MAX_OBJECTS + 1))):
        shape = str(rng.choice(W.SHAPES))
        r = float(rng.uniform(*W.BALL_RADIUS)) if shape == "ball" else float(rng.uniform(*W.BOX_SIDE)) / 2
        motion = str(rng.choice(["falls", "rolls", "thrown", "rests"]))
        x, y = float(rng.uniform(0.15, 0.85) * width / height), W.FLOOR_TOP + r
        vx = vy = 0.0
        if motion == "falls":
            y = float(rng.uniform(0.7, 0.9))
        elif motion == "rolls":
            vx = float(rng.choice([-1, 1]) * rng.uniform(0.15, 0.5))
        elif motion == "thrown":
            side = rng.choice([-1, 1])
            x, y = (0.1 if side > 0 else width / height - 0.1), float(rng.uniform(0.35, 0.55))
            vx, vy = float(side * rng.uniform(0.3, 0.6)), float(rng.uniform(0.8, 1.5))
        color = np.array(W.PALETTE[str(rng.choice(W.COLORS))], dtype=np.float32)
        objects.append(dict(shape=shape, r=r, x=x, y=y, vx=vx, vy=vy, a=float(rng.uniform(0, np.pi)),
                            spin=float(rng.uniform(-2, 2)) if shape == "box" and motion != "rests" else 0.0, color=color))
    # 2. motion: small-step kinematics with a bouncy floor, sampled at each frame
    tracks = np.zeros((frames, len(objects), 3), dtype=np.float64)  # (F, objects, x/y/angle)
    for k, o in enumerate(objects):
        x, y, vx, vy, a = o["x"], o["y"], o["vx"], o["vy"], o["a"]
        for f in range(frames):
            tracks[f, k] = (x, y, a)
            for _ in range(8):
                dt = 1.0 / (8 * fps)
                airborne = y > W.FLOOR_TOP + o["r"] + 1e-4 or vy > 0
                vy = vy - g * dt if airborne else 0.0
                x, y, a = x + vx * dt, y + vy * dt, a + o["spin"] * dt
                if y < W.FLOOR_TOP + o["r"]:
                    y, vy = W.FLOOR_TOP + o["r"], (-0.55 * vy if vy < -0.3 else 0.0)
    # 3. rasterise the window with 4x4 supersampling; world y is up, 1 unit = frame height
    h, w = height, width
    py = (np.arange(h * ss) + 0.5) / (ss * height)
    px = (np.arange(w * ss) + 0.5) / (ss * height)
    yy, xx = 1.0 - py[:, None], px[None, :]  # (h*ss, 1), (1, w*ss) world coordinates
    out = np.empty((frames, h, w, 3), dtype=np.uint8)
    for f in range(frames):
        cam = cam_speed * f / fps
        img = np.broadcast_to(np.array(W.BACKGROUND, np.float32), (h * ss, w * ss, 3)).copy()
        floor = np.broadcast_to(yy < W.FLOOR_TOP, img.shape[:2])
        img[floor] = W.FLOOR
        tick = (np.mod(xx + cam, W.TICK_SPACING) < 1.0 / height) & (yy < W.FLOOR_TOP)
        img[np.broadcast_to(tick, img.shape[:2])] = W.TICK
        for k, o in enumerate(objects):
            ox, oy, a = tracks[f, k]
            dx, dy = xx - (ox - cam), yy - oy
            if o["shape"] == "ball":
                mask = dx * dx + dy * dy < o["r"] ** 2
            else:
                u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
                mask = (np.abs(u) < o["r"]) & (np.abs(v) < o["r"])
            img[mask] = o["color"]
        if pillar_x is not None:
            pil = (np.abs(xx - (pillar_x - cam)) < W.PILLAR_WIDTH / 2) & (yy < W.FLOOR_TOP + W.PILLAR_HEIGHT)
            img[np.broadcast_to(pil, img.shape[:2])] = W.PILLAR
        img = img.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))  # (h*ss, w*ss, 3) -> (h, w, 3) box filter
        out[f] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (F, H, W, 3) -> (3, F, H, W)


def world_available() -> bool:
    try:
        from worldreel.data.world import render_clip, sample_scene  # noqa: F401
    except ImportError:
        return False
    return True


def data_source(cfg: VAETaskConfig, train_data: str = "world") -> str:
    """"world", "synthetic", or the folder / JSONL path the clips come from."""
    from worldreel.errors import UserError

    if cfg.data not in ("auto", "world", "synthetic"):
        raise UserError(f"must be auto, world or synthetic, got {cfg.data!r}", param="task.data")
    if train_data != "world":
        if not Path(train_data).exists():
            raise UserError(f"{train_data!r} is neither 'world' nor an existing folder or JSONL file", param="train.data")
        return train_data
    if cfg.data == "auto":
        return "world" if world_available() else "synthetic"
    return cfg.data


def render(source: str, seed: int, *, frames: int = 33, size: tuple[int, int] = (64, 64), holdout: str = "exclude") -> np.ndarray:
    """One whole clip, uint8 (F, H, W, 3), a pure function of its arguments."""
    if source == "world":
        from worldreel.data.world import render_clip, sample_scene

        # shorter clips are the start of a 4 s scene, as in WorldClips
        clip = render_clip(sample_scene(seed, size=size, seconds=max(4.0, (frames - 1) / W.FPS), holdout=holdout))
        return clip[:frames]
    return synthetic_clip(np.random.default_rng(seed), frames, size)


def sample_videos(source: str, seed: int, count: int, *, frames: int = 33, size: tuple[int, int] = (64, 64),
                  holdout: str = "exclude") -> torch.Tensor:
    """``count`` whole clips (count, 3, F, H, W) in [-1, 1] from seeds seed, seed+1, ..."""
    return torch.stack([to_video(render(source, seed + i, frames=frames, size=size, holdout=holdout)) for i in range(count)])


class ClipPool:
    """Whole clips that training crops are cut from, so one simulated and rendered clip
    serves many crops (rendering a clip costs about as much as a training step's worth of
    crops). Slot i holds the clip seeded by (seed, i, step // refresh): the content at any
    step is a pure function of the step, so a resumed run sees the same data."""

    def __init__(self, source: str, seed: int, cfg: VAETaskConfig, sizes: list[tuple[int, int]] | None = None):
        self.source, self.seed, self.cfg = source, seed, cfg
        self.slots: dict[int, tuple[int, np.ndarray]] = {}  # slot -> (version, uint8 (F, H, W, 3))
        self.items: list[np.ndarray] | None = None  # a folder's clips, all decoded once
        if source not in ("world", "synthetic"):
            self.items = _folder_clips(source, sizes or [cfg.clip_size], cfg.crop[0])

    def clip(self, slot: int, step: int) -> np.ndarray:
        version = step // max(1, self.cfg.pool_refresh)
        held = self.slots.get(slot)
        if held is None or held[0] != version:
            clip_seed = int(np.random.SeedSequence([self.seed, slot, version]).generate_state(1)[0] & 0x7FFFFFFF)
            if self.items is not None:
                clip = self.items[clip_seed % len(self.items)]
            else:
                clip = render(self.source, clip_seed, frames=self.cfg.clip_frames, size=self.cfg.clip_size)
            held = (version, clip)
            self.slots[slot] = held
        return held[1]

    def batch(self, step: int, count: int, rng: np.random.Generator, crop: tuple[int, int, int]) -> torch.Tensor:
        """(count, 3, f, h, w) in [-1, 1]: random spacetime crops of random slots (slots whose
        clip is too small for the crop, possible with a folder's images, are passed over)."""
        cf, ch, cw = crop
        out = []
        while len(out) < count:
            clip = self.clip(int(rng.integers(self.cfg.pool_clips)), step)
            if clip.shape[0] < cf or clip.shape[1] < ch or clip.shape[2] < cw:
                continue
            best, best_std = None, -1.0
            for _ in range(max(1, self.cfg.crop_tries)):
                t0 = int(rng.integers(clip.shape[0] - cf + 1))
                y0, x0 = int(rng.integers(clip.shape[1] - ch + 1)), int(rng.integers(clip.shape[2] - cw + 1))
                piece = clip[t0:t0 + cf, y0:y0 + ch, x0:x0 + cw]
                std = float(piece[::2, ::2, ::2].std())  # a subsample is enough to tell sky from objects
                if std > best_std:
                    best, best_std = piece, std
            out.append(to_video(np.ascontiguousarray(best)))
        return torch.stack(out)


def _folder_clips(source: str, sizes: list[tuple[int, int]], min_frames: int) -> list[np.ndarray]:
    """Every clip and image of a folder / JSONL of the user's videos (``data/datasets.py``),
    uint8 (F, H, W, 3), decoded once; clips of at least ``min_frames`` frames."""
    from worldreel.data.datasets import VideoDataConfig, iter_clips
    from worldreel.errors import UserError

    lengths = sorted({max(2, min_frames), 17, 33})
    items = [item["video"] for item in iter_clips(source, VideoDataConfig(sizes=list(sizes), frames=lengths), progress=True)]
    if not items:
        raise UserError(f"no usable videos or images in {source}", param="train.data")
    return items


# ----------------------------------------------------------------------------- adversarial switch


class PatchCritic(nn.Module):
    """A small 3-D conv critic scoring spacetime patches (hinge GAN), used only with adversarial=True."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2),
            nn.Conv3d(width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2),
            nn.Conv3d(2 * width, 1, 3, padding=1),
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)  # (B, 1, F, H/4, W/4) patch scores


class VAEWithCritic(nn.Module):
    """The autoencoder plus its critic as one module, so the one trainer's one optimiser
    trains both: the generator term sees the critic through detached weights (it cannot
    move them) and the critic term sees a detached reconstruction."""

    def __init__(self, vae: VideoVAE):
        super().__init__()
        self.vae, self.critic = vae, PatchCritic()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # saved in checkpoints: exact resume

    def forward(self, video: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
                latent_map=None):
        recon, mean, logvar = self.vae(video, sample=sample, generator=generator, latent_map=latent_map)
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        gen_adv = -torch.func.functional_call(self.critic, frozen, (recon,)).mean()
        critic = F.relu(1 - self.critic(video)).mean() + F.relu(1 + self.critic(recon.detach())).mean()
        self.step += 1
        return recon, mean, logvar, gen_adv, critic


def unwrap_vae(model: nn.Module) -> VideoVAE:
    """The VideoVAE inside a DDP/FSDP wrapper and/or a VAEWithCritic."""
    model = getattr(model, "module", model)
    return model.vae if isinstance(model, VAEWithCritic) else model


class DenoisedLatents:
    """``task.denoiser``: a frozen denoiser's one-step estimates of clean latents, to train
    the decoder on (``VAETaskConfig.denoiser``). Not a module of the trained model: it is
    neither optimised nor saved in checkpoints."""

    def __init__(self, cfg: VAETaskConfig, vae_cfg: VAEConfig):
        from worldreel.models.dit import DiT
        from worldreel.pipelines.loading import DIT_FILE, _load_weights, read_config, text_encoder_for
        from worldreel.presets import model_dir

        if not cfg.freeze_encoder:
            raise UserError("task.denoiser needs task.freeze_encoder=true: the denoiser knows only the latents "
                            "of the encoder it was trained on", param="task.denoiser")
        if not 0.0 <= cfg.denoised_prob <= 1.0:
            raise UserError(f"task.denoised_prob must be in [0, 1], got {cfg.denoised_prob}", param="task.denoised_prob")
        if not 0.0 < cfg.denoised_t <= 1.0:
            raise UserError(f"task.denoised_t must be in (0, 1], got {cfg.denoised_t}", param="task.denoised_t")
        try:
            folder = model_dir(cfg.denoiser)
            config = read_config(folder)
        except UserError as err:
            raise UserError(f"task.denoiser: {err}", param="task.denoiser") from None
        if config.dit.in_channels != vae_cfg.latent_channels:
            raise UserError(f"task.denoiser {cfg.denoiser} denoises {config.dit.in_channels}-channel latents, "
                            f"the autoencoder makes {vae_cfg.latent_channels}", param="task.denoiser")
        same = [list(map(float, a)) == list(map(float, b)) for a, b in
                ((config.vae.latent_shift, vae_cfg.latent_shift), (config.vae.latent_scale, vae_cfg.latent_scale))]
        if not all(same):
            raise UserError(f"task.denoiser {cfg.denoiser} was trained on latents normalised differently from "
                            f"task.init's (latent_shift / latent_scale differ)", param="task.denoiser")
        self.dit = DiT(config.dit)
        try:
            _load_weights(self.dit, folder / DIT_FILE)
        except UserError as err:
            raise UserError(f"task.denoiser: {err}", param="task.denoiser") from None
        self.dit.eval().requires_grad_(False)
        self.text = text_encoder_for(config.text).encode([""])  # the unconditional input, (1, L, D) and (1, L)
        self.prob, self.t_max = float(cfg.denoised_prob), float(cfg.denoised_t)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Normalised latents (B, C, f, h, w) -> the same, a ``prob`` share of the samples
        replaced by the denoiser's estimate from x_t, t ~ U(0, t_max)."""
        b, f = z.shape[0], z.shape[2]
        gen_device = generator.device
        pick = (torch.rand(b, generator=generator, device=gen_device) < self.prob).to(z.device)
        t = (torch.rand(b, generator=generator, device=gen_device) * self.t_max).to(z.device)
        noise = torch.randn(z.shape, generator=generator, device=gen_device).to(z.device, z.dtype)
        dit = self.dit.to(z.device)
        t_frames = t[:, None].expand(b, f)
        x_t = flow.noisy(z, noise, t_frames)
        states, mask = (x.to(z.device).expand(b, *x.shape[1:]) for x in self.text)
        estimate = x_t - t.view(b, 1, 1, 1, 1).to(z.dtype) * dit(x_t, t_frames, states, mask).to(z.dtype)
        return torch.where(pick.view(b, 1, 1, 1, 1), estimate, z)


# ----------------------------------------------------------------------------- the task


class VAETask:
    """Trainer task for the video autoencoder (``worldreel train vae --preset NAME``)."""

    name = "vae"

    def __init__(self, model_cfg: Any, train_cfg: Any = None, cfg: VAETaskConfig | None = None):
        """``model_cfg``: the ``ModelConfig`` (its ``.vae`` is built; the whole is written to
        config.json when the export folder has none); ``train_cfg``: the ``TrainConfig``
        (``batch_size``, ``data``: "world" or a folder / JSONL of videos, ``sizes``);
        ``cfg``: this task's data and loss options."""
        from worldreel.train.config import TrainConfig

        self.model_config, self.train_cfg = model_cfg, train_cfg or TrainConfig()
        self.vae_cfg, self.batch_size = model_cfg.vae, int(self.train_cfg.batch_size)
        self.cfg = cfg or VAETaskConfig()
        self.source = data_source(self.cfg, self.train_cfg.data)

    @classmethod
    def for_vae(cls, vae: VAEConfig, batch_size: int = 8, cfg: VAETaskConfig | None = None) -> "VAETask":
        """A task for a bare autoencoder config (benchmarks, tests)."""
        from worldreel.presets import ModelConfig
        from worldreel.train.config import TrainConfig

        return cls(ModelConfig(vae=vae), TrainConfig(batch_size=batch_size), cfg)

    @classmethod
    def from_preset(cls, preset: str, cfg: VAETaskConfig | None = None) -> "VAETask":
        from worldreel.presets import get_preset

        p = get_preset(preset)
        return cls(p.model, p.train_vae, cfg)

    def build_model(self) -> nn.Module:
        vae = VideoVAE(copy.deepcopy(self.vae_cfg))  # own config copy: export writes measured stats into it
        if self.cfg.init:
            from worldreel.models.vae import load_vae

            start = load_vae(self.cfg.init)
            if start.cfg.latent_channels != vae.cfg.latent_channels or start.cfg.channel_mult != vae.cfg.channel_mult:
                raise UserError(f"task.init {self.cfg.init} is a different autoencoder layout than the preset's", param="task.init")
            vae.load_state_dict(start.state_dict())
            vae.set_latent_stats(list(start.cfg.latent_shift), list(start.cfg.latent_scale))
        if self.cfg.freeze_encoder:
            if not self.cfg.init:
                raise UserError("task.freeze_encoder needs task.init (a trained encoder to keep)", param="task.freeze_encoder")
            vae.encoder.requires_grad_(False)
        if self.cfg.denoiser:
            self._denoiser = DenoisedLatents(self.cfg, vae.cfg)
        return VAEWithCritic(vae) if self.cfg.adversarial else vae

    def batches(self, *, seed: int, rank: int, world_size: int, start_step: int) -> Iterator[torch.Tensor]:
        """Endless (B, 3, f, h, w) batches in [-1, 1]: spacetime crops, or (image_prob of the
        time) whole single frames. Batch s depends only on (seed, rank, s): exact resume."""
        cfg, step = self.cfg, start_step
        pool = ClipPool(self.source, int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]), cfg,
                        [tuple(size) for size in self.train_cfg.sizes])
        while True:
            rng = np.random.default_rng([seed, rank, step])
            image = rng.random() < cfg.image_prob
            crop = (1, cfg.clip_size[1], cfg.clip_size[0]) if image else cfg.crop
            yield pool.batch(step, self.batch_size, rng, crop)
            step += 1

    def loss(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        device = next(model.parameters()).device
        video = batch.to(device)
        # task.denoiser: some samples decode the denoiser's estimates (made in build_model)
        extra = {"latent_map": lambda z: self._denoiser(z, generator)} if cfg.denoiser else {}
        out = model(video, sample=True, generator=generator, **extra)
        recon, mean, logvar = out[:3]
        if cfg.detail_weight > 0 or cfg.motion_weight > 0:
            weight = 1.0 + cfg.detail_weight * detail_mask(video, cfg.detail_threshold)
            if cfg.motion_weight > 0:  # an image (1 frame) has no moving pixels: its weight stays
                weight = weight + cfg.motion_weight * motion_mask(video, cfg.detail_threshold)
            weight = weight / weight.mean()  # the same loss scale as unweighted, more of it on detail
            l1 = ((recon - video).abs() * weight).mean()
            mse = ((recon - video).pow(2) * weight).mean()
        else:
            l1 = (recon - video).abs().mean()
            mse = (recon - video).pow(2).mean()
        grad = gradient_loss(recon, video)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        total = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.grad_weight * grad + cfg.kl_weight * kl
        logs = {"l1": l1.item(), "mse": mse.item(), "grad": grad.item(), "kl": kl.item(),
                "psnr": psnr(recon.detach(), video).mean().item()}
        if cfg.spectral_weight > 0:
            spec = spectral_loss(recon, video)
            total = total + cfg.spectral_weight * spec
            logs["spectral"] = spec.item()
        if len(out) == 5:  # adversarial: generator term after adv_start, critic always
            gen_adv, critic = out[3], out[4]
            on = float(int(getattr(model, "module", model).step) > cfg.adv_start)
            total = total + on * cfg.adv_weight * gen_adv + critic
            logs.update(gen_adv=gen_adv.item(), critic=critic.item())
        return total, logs

    def _fixed_videos(self, seed: int, count: int, holdout: str) -> list[torch.Tensor]:
        """Whole clips (1, 3, F, H, W) for statistics and evaluation: seeded world/synthetic
        clips, or the first ``count`` clips of a folder."""
        cfg = self.cfg
        if self.source in ("world", "synthetic"):
            return list(sample_videos(self.source, seed, count, frames=cfg.clip_frames, size=cfg.clip_size, holdout=holdout)[:, None])
        items = _folder_clips(self.source, [tuple(size) for size in self.train_cfg.sizes], 1)
        return [to_video(clip)[None] for clip in items[:count]]

    @torch.no_grad()
    def latent_stats(self, vae: VideoVAE) -> tuple[list[float], list[float]]:
        """Per-channel (shift, scale) = (mean, 1/std) of the posterior means over
        ``stats_clips`` whole clips, so normalised latents have zero mean and unit variance."""
        device = next(vae.parameters()).device
        values = []
        for video in self._fixed_videos(self.cfg.stats_seed, self.cfg.stats_clips, "exclude"):
            mean, _ = vae.moments(video.to(device))
            values.append(mean.transpose(0, 1).flatten(1).float().cpu())  # (1, C, f, h, w) -> (C, f*h*w)
        values = torch.cat(values, dim=1)
        std = values.std(dim=1).clamp_min(1e-6)
        return values.mean(dim=1).tolist(), (1.0 / std).tolist()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str) -> dict[str, float]:
        """PSNR / SSIM of whole-clip reconstructions of 8 fixed held-out clips (the trainer's
        eval hook; comparable across steps)."""
        from worldreel.eval.vae_bench import ssim_per_clip

        vae = unwrap_vae(model)
        device = next(vae.parameters()).device
        scores = []
        for video in self._fixed_videos(900_000, 8, "only"):
            video = video.to(device)
            recon = vae(video, sample=False)[0].clamp(-1, 1)
            scores.append((psnr(recon, video).item(), ssim_per_clip(recon.float().cpu(), video.float().cpu()).item()))
        return {"psnr": float(np.mean([p for p, _ in scores])), "ssim": float(np.mean([q for _, q in scores]))}

    def export(self, model: nn.Module, out_dir: str) -> None:
        """Write ``vae.safetensors`` (fp16) and the "vae" section of ``config.json`` with
        measured latent_shift / latent_scale; other sections of an existing config.json stay."""
        from worldreel.config import to_dict

        vae = unwrap_vae(model)
        was_training = vae.training
        vae.eval()
        if self.cfg.freeze_encoder:
            # The encoder did not change, so the latents a cache holds keep their meaning only if
            # their normalisation does too: keep init's statistics rather than re-measuring them.
            shift, scale = list(vae.cfg.latent_shift), list(vae.cfg.latent_scale)
        else:
            shift, scale = self.latent_stats(vae)
        vae.set_latent_stats(shift, scale)
        vae.train(was_training)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_vae(vae, out / "vae.safetensors")
        path = out / "config.json"
        if path.exists():
            data = json.loads(path.read_text())
        elif self.model_config is not None:
            data = to_dict(self.model_config)
        else:
            data = {}
        data["vae"] = to_dict(vae.cfg)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        print(f"vae: exported to {out} (data: {self.source}, latent std {[round(1 / s, 3) for s in scale[:4]]}...)", file=sys.stderr)
