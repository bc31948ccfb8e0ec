"""The autoencoder's optional adversarial term (``VAETaskConfig.adversarial``): a small 3-D
patch critic trained with a hinge loss, wrapped with the autoencoder into one module so the
one trainer's one optimiser trains both."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldreel.models.vae import VideoVAE


class PatchCritic(nn.Module):
    """A small 3-D conv critic scoring spacetime patches (hinge GAN)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2),
            nn.Conv3d(width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2),
            nn.Conv3d(2 * width, 1, 3, padding=1),
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # In fp32 whatever the autocast: torch 2.13's CPU bf16 Conv3d gives wrong values (NaN at
        # 32x32) on a one-frame input with temporal padding, the autoencoder's image batches; the
        # trainer's bf16 path then diverged within 4 steps. The critic is a small part of a step.
        with torch.autocast(video.device.type, enabled=False):
            return self.net(video.float())  # (B, 1, F, H/4, W/4) patch scores


class VAEWithCritic(nn.Module):
    """The autoencoder plus its critic: the generator term sees the critic through detached
    weights (it cannot move them) and the critic term sees a detached reconstruction."""

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
