"""Checkpoints that cannot be lost: atomic files, the last N kept, exact resume state.

One checkpoint is one file ``<run>/checkpoints/step_00001200.pt`` holding plain tensors and
numbers only (loaded with ``torch.load(weights_only=True)``, so nothing is unpickled as
code):

    step, elapsed (training seconds so far), world_size, model_config, train_config (JSON text),
    model (full state dict), ema (full averaged weights or None), optimizer (full, keyed by
    parameter name), rng: one dict per rank {torch, cuda, numpy, python, loss generator}.

Full (unsharded) state dicts make a checkpoint independent of how it was trained: a DDP
run resumes under FSDP, 2 processes resume on 1 (then the per-rank RNG streams restart
from a derived seed: the run continues, but no longer bit-exactly).

The model and optimizer states are gathered and restored with torch.distributed.checkpoint's
``get_state_dict`` / ``set_state_dict`` (full state dicts), which serve a plain module, DDP's
replicas and FSDP's shards alike.

Writing: temp name in the same folder, fsync, ``os.replace``, fsync the folder. A crash
at any moment leaves either the old set of checkpoints or the old set plus the new one,
never a half-written file under a real name. Older checkpoints are pruned only after the
new one is in place.
"""
from __future__ import annotations

import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldreel.atomic import atomic_path
from worldreel.errors import UserError

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Finished checkpoints as (step, path), oldest first (temp files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` via temp file + fsync + rename."""
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save(state: dict, folder: str | Path, step: int, *, keep: int) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``."""
    path = checkpoint_path(folder, step)
    atomic_torch_save(state, path)
    for _, old in list_checkpoints(folder)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def clean_temp(folder: str | Path) -> None:
    """Remove temp files left by a process killed mid-write (they were never checkpoints)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".step_*.tmp"):
            p.unlink(missing_ok=True)


def load_latest(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint, or None if there is none. A file that cannot be read
    (a disk fault; atomic writes never leave one) is reported and the previous one used."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # a damaged file: fall back to the one before
            print(f"warning: cannot read checkpoint {path} ({err}); trying the previous one", file=sys.stderr)
    return None


# --- random number generator states ---------------------------------------------------------


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG a step can touch: torch (CPU and CUDA), numpy, python, and the loss generator.
    numpy's and python's states are converted to tensors/lists so ``weights_only`` loading works."""
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_gauss),
            "cached": float(np_cached),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    generator.set_state(state["generator"])


# --- full (unsharded) states of a possibly wrapped or sharded model ----------------------------


def model_state(model, d) -> dict:
    """Full (unsharded) state dict on CPU; under FSDP a collective, filled on rank 0 only."""
    if not d.enabled:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_and_optimizer(model, optimizer, state: dict) -> None:
    """Load a checkpoint's full model and optimizer states (re-sharded in place under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    try:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"the checkpoint does not fit this model (was the model config changed?): {err}", param="resume") from None


def export_weights(model, ema, d) -> dict | None:
    """Full exported weights on rank 0 (live state with EMA parameters), None elsewhere."""
    state = model_state(model, d)
    averaged = ema.full_state() if ema is not None else None
    if not d.main:
        return None
    return {"state": state, "ema": averaged}


def load_export(target: torch.nn.Module, weights: dict) -> torch.nn.Module:
    """Live buffers and weights, then the EMA parameters (named_parameters handles tied weights)."""
    target.load_state_dict(weights["state"])
    if weights["ema"] is not None:
        with torch.no_grad():
            for name, p in target.named_parameters():
                p.copy_(weights["ema"][name].to(p.device, p.dtype))
    return target
