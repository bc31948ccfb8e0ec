"""Issue 32's training levers 1 and 2 from the reel world's state (``data/world_state.py``).

Lever 2, ``object_weights``: an object covers about one latent cell of 64, so the uniform
flow loss is dominated by sky and floor. Each latent cell's squared error is weighted
``1 + W * (occupancy + motion)`` (occupancy: the visible object fraction of the cell;
motion: occupancy times the cell's speed in cells per latent frame, capped at 1), capped
at ``cap`` and renormalised to mean 1 over each clip's generated frames, so the loss keeps
its scale and only moves weight from background to objects.

Lever 1, ``StateHead`` + ``state_loss``: privileged information, with the simulator as
teacher (as REPA, Yu et al. 2024, aligns DiT features to a pretrained encoder; VideoJAM,
2025, predicts motion jointly). A small head reads the tokens after block K and predicts,
per latent cell, each colour's visible and hidden (behind the pillar) occupancy (binary
cross-entropy on the fractions) and the velocity (squared error where an object is). It is
trained and checkpointed with the run as ``state_head.*`` parameters of the denoiser
module, and never exported: generation does not need the state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldreel.data.world_state import HIDDEN, OCCUPANCY, STATE_CHANNELS, VELOCITY

HEAD_NAME = "state_head"  # the head's attribute on the denoiser, so its keys are "state_head.*"


class StateHead(nn.Module):
    """Tokens (B, N, D) on a (gf, gh, gw) grid -> state predictions (B, STATE_CHANNELS, f, h, w)
    at latent resolution (each token predicts the cells of its patch, as the DiT's final layer)."""

    def __init__(self, width: int, patch: tuple[int, int, int]):
        super().__init__()
        self.patch = tuple(patch)
        cells = self.patch[0] * self.patch[1] * self.patch[2]
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, cells * STATE_CHANNELS))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        pt, ph, pw = self.patch
        out = self.net(tokens)  # (B, N, P*K)
        return rearrange(out, "b (f h w) (pf ph pw k) -> b k (f pf) (h ph) (w pw)",
                         f=grid[0], h=grid[1], w=grid[2], pf=pt, ph=ph, pw=pw)  # (B, K, f, h, w)


def object_weights(state: torch.Tensor, has_state: torch.Tensor, given: torch.Tensor, strength: float,
                   cap: float) -> torch.Tensor:
    """Per-cell flow-loss weights (B, 1, f, h, w), mean 1 over each clip's generated frames.

    state (B, K, f, h, w) targets; has_state (B,) bool (items without targets get 1
    everywhere); given (B, f) bool frames not scored by the loss.
    """
    occupancy = state[:, OCCUPANCY].sum(1).clamp(max=1.0)  # (B, f, h, w)
    speed = state[:, VELOCITY].norm(dim=1).clamp(max=1.0)  # (B, f, h, w)
    raw = (1.0 + strength * (occupancy + occupancy * speed)).clamp(max=cap)  # (B, f, h, w)
    scored = (~given).float()[:, :, None, None].expand_as(raw)  # (B, f, h, w)
    mean = (raw * scored).sum(dim=(1, 2, 3)) / scored.sum(dim=(1, 2, 3)).clamp(min=1.0)  # (B,)
    weights = raw / mean.clamp(min=1e-6)[:, None, None, None]  # (B, f, h, w)
    weights = torch.where(has_state[:, None, None, None], weights, torch.ones_like(weights))
    return weights[:, None]  # (B, 1, f, h, w)


def state_loss(pred: torch.Tensor, state: torch.Tensor, has_state: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The head's loss over the items that have targets: occupancy BCE + hidden BCE + velocity MSE.

    pred, state (B, K, f, h, w); has_state (B,) bool. Zero (still in the graph) when no item has targets.
    """
    pred = pred.float()
    keep = has_state.float()[:, None, None, None, None]  # (B, 1, 1, 1, 1)
    n_items = has_state.float().sum().clamp(min=1.0)

    def bce(channels: slice) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(pred[:, channels], state[:, channels], reduction="none")  # (B, 8, f, h, w)
        return (per * keep).mean(dim=(1, 2, 3, 4)).sum() / n_items

    occupancy, hidden = bce(OCCUPANCY), bce(HIDDEN)
    # Velocity where an object (visible or hidden) is: weighted by its occupancy.
    where = (state[:, OCCUPANCY].sum(1) + state[:, HIDDEN].sum(1)).clamp(max=1.0)[:, None] * keep  # (B, 1, f, h, w)
    velocity = ((pred[:, VELOCITY] - state[:, VELOCITY]).square() * where).sum() / where.sum().clamp(min=1.0)
    total = occupancy + hidden + velocity
    return total, {"state_occupancy": occupancy.item(), "state_hidden": hidden.item(), "state_velocity": velocity.item()}
