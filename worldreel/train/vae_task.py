"""The autoencoder as a trainer ``Task`` (see ``train/task.py``): model, data, loss, export.

Data: random spacetime crops (default 33x32x32: the whole 4 s in time, a busy quarter of
the frame in space) of reel-world clips (64x64x33), with a
fraction of batches made of whole 1-frame images, so the same weights learn images and
clips. Clips come from the reel world (held-out combinations excluded) or from a folder of
the user's videos, through a pool that cuts many crops from each clip (``data/clips.py``).
Each step's batch is a pure function of (seed, rank, step), so a resumed run sees exactly
the batches it would have seen.

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
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from worldreel.data.clips import ClipPool, check_source, folder_clips, world_videos
from worldreel.data.video_io import to_tensor
from worldreel.errors import UserError
from worldreel.models.vae import VAEConfig, VideoVAE
from worldreel.train.vae_critic import VAEWithCritic, unwrap_vae
from worldreel.train.vae_losses import detail_mask, gradient_loss, motion_mask, psnr, spectral_loss, ssim


@dataclass
class VAETaskConfig:
    # (frames, height, width) of a training crop. Whole 4 s clips in time: a causal model
    # trained on 9-frame crops decoded frames deep in a 33-frame clip ~6 dB worse than the
    # same frames encoded as a short clip (its temporal receptive field never saw that much
    # real past); trained on 33-frame crops, a frame's quality no longer depends on how much
    # of the clip came before it (CHANGELOG.md, stages 1 to 3).
    crop: tuple[int, int, int] = (33, 32, 32)
    image_prob: float = 0.25  # fraction of batches that are whole 1-frame images instead of crops
    clip_size: tuple[int, int] = (64, 64)  # (width, height) of the clips crops are taken from
    clip_frames: int = 33  # frames of those clips (the world's native 4 s)
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
    # 0 weighs them alike. (CHANGELOG.md: on world-tiny's decoder it did not, in 400
    # steps, teach the decoder to move the ticks of a pan.)
    motion_weight: float = 0.0
    # Weight of the spectral amplitude loss: L1 between |FFT| of each frame of the
    # reconstruction and of the input (``spectral_loss``). Pixel losses are minimised by
    # the average of the places a detail could be, i.e. by fading it; this term is not
    # (a pattern's amplitude spectrum does not depend on where it sits). 0 = off. (CHANGELOG.md:
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
    # t ~ U(0, denoised_t) and replaced by this model's denoiser's estimate of them, x_t - t * v
    # (empty prompt; ``denoised_steps`` Euler steps to t = 0 instead of one), while the target
    # stays the real clip. A denoiser's estimates are off the encoder's manifold (smoothed,
    # errors spread over a clip); a decoder that has seen them learns to render them as the
    # clips they stand for. "" = off.
    denoiser: str = ""
    denoised_prob: float = 0.5
    denoised_t: float = 0.5
    denoised_steps: int = 1  # Euler steps from t to 0 for those estimates (1: one step, x_t - t * v)
    stats_clips: int = 32  # full clips encoded at export to measure latent_shift / latent_scale
    stats_seed: int = 1234  # seed of those clips


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
        self.source = check_source(self.train_cfg.data)  # "world" or a folder / JSONL of the user's videos

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
            from worldreel.model_folder import load_vae

            start = load_vae(self.cfg.init, param="task.init")
            if start.cfg.latent_channels != vae.cfg.latent_channels or start.cfg.channel_mult != vae.cfg.channel_mult:
                raise UserError(f"task.init {self.cfg.init} is a different autoencoder layout than the preset's", param="task.init")
            vae.load_state_dict(start.state_dict())
            vae.set_latent_stats(list(start.cfg.latent_shift), list(start.cfg.latent_scale))
        if self.cfg.freeze_encoder:
            if not self.cfg.init:
                raise UserError("task.freeze_encoder needs task.init (a trained encoder to keep)", param="task.freeze_encoder")
            vae.encoder.requires_grad_(False)
        if self.cfg.denoiser:
            from worldreel.train.denoised import DenoisedLatents

            self._denoiser = DenoisedLatents(self.cfg.denoiser, vae.cfg, prob=self.cfg.denoised_prob,
                                             t_max=self.cfg.denoised_t, frozen_encoder=self.cfg.freeze_encoder,
                                             steps=self.cfg.denoised_steps)
        return VAEWithCritic(vae) if self.cfg.adversarial else vae

    def batches(self, *, seed: int, rank: int, world_size: int, start_step: int) -> Iterator[torch.Tensor]:
        """Endless (B, 3, f, h, w) batches in [-1, 1]: spacetime crops, or (image_prob of the
        time) whole single frames. Batch s depends only on (seed, rank, s): exact resume."""
        cfg, step = self.cfg, start_step
        pool = ClipPool(self.source, int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]),
                        slots=cfg.pool_clips, refresh=cfg.pool_refresh, crop_tries=cfg.crop_tries,
                        clip_frames=cfg.clip_frames, clip_size=cfg.clip_size, min_frames=cfg.crop[0],
                        sizes=[tuple(size) for size in self.train_cfg.sizes])
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
        """Whole clips (1, 3, F, H, W) for statistics and evaluation: seeded reel-world clips,
        or the first ``count`` clips of a folder."""
        cfg = self.cfg
        if self.source == "world":
            return list(world_videos(seed, count, frames=cfg.clip_frames, size=cfg.clip_size, holdout=holdout)[:, None])
        items = folder_clips(self.source, [tuple(size) for size in self.train_cfg.sizes], 1)
        return [to_tensor(clip)[None] for clip in items[:count]]

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
        vae = unwrap_vae(model)
        device = next(vae.parameters()).device
        scores = []
        for video in self._fixed_videos(900_000, 8, "only"):
            video = video.to(device)
            recon = vae(video, sample=False)[0].clamp(-1, 1)
            scores.append((psnr(recon, video).item(), ssim(recon.float().cpu(), video.float().cpu()).item()))
        return {"psnr": float(np.mean([p for p, _ in scores])), "ssim": float(np.mean([q for _, q in scores]))}

    def stage_facts(self) -> dict[str, Any]:
        """How this stage differs from a plain one, for its ``StageRecord`` (train/records.py)."""
        return {"kind": "decoder only" if self.cfg.freeze_encoder else "training", "data": self.source}

    def export(self, model: nn.Module, out_dir: str) -> None:
        """Write ``vae.safetensors`` (fp16) and the "vae" section of ``config.json`` with
        measured latent_shift / latent_scale; other sections of an existing config.json stay."""
        from worldreel.model_folder import update_config, write_weights

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
        write_weights(out_dir, "vae", vae)
        update_config(out_dir, {"vae": vae.cfg}, self.model_config)
        print(f"vae: exported to {out_dir} (data: {self.source}, latent std {[round(1 / s, 3) for s in scale[:4]]}...)", file=sys.stderr)
