"""Exponential moving average of a model's parameters: the weights we export.

The average lives beside the model as one tensor per parameter name (fp32, on the model's
device). Under FSDP those tensors are DTensor shards like the parameters themselves, so the
update stays local and ``full_state()`` gathers them (a collective: every rank calls it).
Buffers are not averaged: export copies them from the live model.
"""
from __future__ import annotations

import torch
from torch import nn


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().clone().float() for name, p in model.named_parameters()}

    def rate(self, step: int) -> float:
        """Decay used after optimiser step ``step`` (1-based): ramped up so that early averages
        are not dominated by the random initialisation, as in timm's ModelEmaV2 warmup."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """shadow <- rate * shadow + (1 - rate) * param."""
        w = 1.0 - self.rate(step)
        pairs = [(self.shadow[name], p.detach()) for name, p in model.named_parameters()]
        if all(s.dtype == p.dtype and not _is_dtensor(s) for s, p in pairs):
            torch._foreach_lerp_([s for s, _ in pairs], [p for _, p in pairs], w)  # one fused launch per group
        else:
            for s, p in pairs:
                s.lerp_(p.float(), w)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights as full CPU tensors by parameter name (collective under FSDP)."""
        out = {}
        for name, t in self.shadow.items():
            if _is_dtensor(t):
                t = t.full_tensor()
            out[name] = t.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from ``full_state()`` output, re-sharding under FSDP."""
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for name, t in self.shadow.items():
            src = state[name]
            if _is_dtensor(t):
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src.to(t.device_mesh.device_type), t.device_mesh, t.placements).to_local()
                t.to_local().copy_(src)
            else:
                t.copy_(src.to(t.device))

    def copy_to(self, model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Load the averaged weights into a plain (unwrapped, unsharded) ``model``; returns it."""
        state = self.full_state() if state is None else state
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state[name].to(p.device, p.dtype))
        return model
