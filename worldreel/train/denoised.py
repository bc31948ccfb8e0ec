"""Decoder training on a denoiser's estimates (``VAETaskConfig.denoiser``).

A denoiser's estimates of clean latents are off the encoder's manifold (smoothed, errors
spread over a clip); a decoder that has seen them learns to render them as the clips they
stand for. ``DenoisedLatents`` replaces a share of the clean latents by a frozen denoiser's
one-step estimate from a noised copy; it is not a module of the trained model, so it is
neither optimised nor saved in checkpoints.
"""
from __future__ import annotations

import torch

from worldreel.diffusion import flow
from worldreel.errors import UserError
from worldreel.models.vae import VAEConfig


class DenoisedLatents:
    def __init__(self, denoiser: str, vae_cfg: VAEConfig, *, prob: float, t_max: float, frozen_encoder: bool,
                 steps: int = 1):
        """denoiser: a model folder or shipped name; vae_cfg: the autoencoder being trained, whose
        latents the denoiser must know; prob: share of samples replaced; t_max: noise times t ~ U(0, t_max);
        steps: Euler steps from t to 0 (1: the one-step estimate; more: a sample as the sampler
        makes it, sharp, with the denoiser's own details, which is what the decoder gets at generation)."""
        from worldreel.model_folder import DIT_FILE, find, load_weights, read_config, text_encoder_for
        from worldreel.models.dit import DiT

        if not frozen_encoder:
            raise UserError("task.denoiser needs task.freeze_encoder=true: the denoiser knows only the latents "
                            "of the encoder it was trained on", param="task.denoiser")
        if not 0.0 <= prob <= 1.0:
            raise UserError(f"task.denoised_prob must be in [0, 1], got {prob}", param="task.denoised_prob")
        if not 0.0 < t_max <= 1.0:
            raise UserError(f"task.denoised_t must be in (0, 1], got {t_max}", param="task.denoised_t")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 50:
            raise UserError(f"task.denoised_steps must be a whole number from 1 to 50, got {steps!r}",
                            param="task.denoised_steps")
        folder = find(denoiser, "task.denoiser")
        config = read_config(folder)
        if config.dit.in_channels != vae_cfg.latent_channels:
            raise UserError(f"task.denoiser {denoiser} denoises {config.dit.in_channels}-channel latents, "
                            f"the autoencoder makes {vae_cfg.latent_channels}", param="task.denoiser")
        same = [list(map(float, a)) == list(map(float, b)) for a, b in
                ((config.vae.latent_shift, vae_cfg.latent_shift), (config.vae.latent_scale, vae_cfg.latent_scale))]
        if not all(same):
            raise UserError(f"task.denoiser {denoiser} was trained on latents normalised differently from "
                            f"task.init's (latent_shift / latent_scale differ)", param="task.denoiser")
        self.dit = DiT(config.dit)
        load_weights(self.dit, folder / DIT_FILE, "task.denoiser")
        self.dit.eval().requires_grad_(False)
        self.text = text_encoder_for(config.text).encode([""])  # the unconditional input, (1, L, D) and (1, L)
        self.prob, self.t_max, self.steps = float(prob), float(t_max), steps

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Normalised latents (B, C, f, h, w) -> the same, a ``prob`` share of the samples
        replaced by the denoiser's estimate from x_t, t ~ U(0, t_max), empty prompt: x_t - t * v
        in one step, or ``steps`` Euler steps of the flow from t to 0."""
        b, f = z.shape[0], z.shape[2]
        gen_device = generator.device
        pick = (torch.rand(b, generator=generator, device=gen_device) < self.prob).to(z.device)
        t = (torch.rand(b, generator=generator, device=gen_device) * self.t_max).to(z.device)
        noise = torch.randn(z.shape, generator=generator, device=gen_device).to(z.device, z.dtype)
        dit = self.dit.to(z.device)
        t_frames = t[:, None].expand(b, f)
        x_t = flow.noisy(z, noise, t_frames)
        states, mask = (x.to(z.device).expand(b, *x.shape[1:]) for x in self.text)
        estimate, dt = x_t, (t / self.steps).view(b, 1, 1, 1, 1).to(z.dtype)
        for k in range(self.steps):  # x_{t - dt} = x_t - dt * v (v = noise - clean); the last lands at t = 0
            now = t_frames * (1 - k / self.steps)
            estimate = estimate - dt * dit(estimate, now, states, mask).to(z.dtype)
        return torch.where(pick.view(b, 1, 1, 1, 1), estimate, z)
