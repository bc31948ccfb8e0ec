"""Which floating-point precision to compute in: ``fp32``, ``bf16`` or ``auto`` (issue 31).

``auto`` picks bf16 where the hardware runs it fast and fp32 elsewhere:
- a GPU: bf16 (autocast, as the trainer always did on GPUs);
- a CPU with AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``): bf16, whose matrix
  products run there about 4-6x faster than fp32 (issue 31: 414 against 65 GFLOP/s);
- any other CPU: fp32 (bf16 would be emulated, slower than fp32).

bf16 means autocast: weights, optimiser state and losses stay fp32, the matrix products
and the activations between them are bf16. Used by the trainer (``train.precision``) and
the generator (``worldreel generate --precision``).
"""
from __future__ import annotations

import contextlib
import functools

import torch

from worldreel.errors import UserError

CHOICES = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matrix maths


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 CPU flags this machine reports (Linux /proc/cpuinfo; none elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def resolve(precision: str, device: torch.device | str, *, param: str = "precision") -> str:
    """"fp32" or "bf16" for ``precision`` ("auto", "fp32" or "bf16") on ``device``."""
    if precision not in CHOICES:
        raise UserError(f"{param} must be one of {', '.join(CHOICES)}, got {precision!r}", param=param)
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_bf16_flags() else "fp32"


def autocast(precision: str, device: torch.device | str):
    """The autocast context of a resolved precision ("bf16": bf16 autocast; "fp32": nothing)."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
