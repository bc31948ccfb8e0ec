"""Weight averaging of denoiser runs along one training lineage (``worldreel train average``).

A later fine-tuning stage can gain on the whole of world-bench and lose on a few prompts the
earlier stage drew well; the weighted mean of the two sets of weights often keeps most of
both (Wortsman et al. 2022, "Model soups"; Wortsman et al. 2022, "Robust fine-tuning of
zero-shot models", which interpolates a fine-tuned model with the one it started from).
That works when the runs share a trajectory, so this averages only runs of one lineage:
every run before the last must be a stage the last one's stage records list (it started
from it, through ``task.init``). A stage the last was grown from (``task.grow``: fewer blocks,
the same layout otherwise) is first put in the deeper layout with its new blocks the
identity, so the mean scales what they add.

The result is a run folder like a training run's: ``model/`` (config.json + dit.safetensors,
in the dtype of the inputs; training.json: the last run's stages plus this average's), so
``train pack`` and later stages (``task.init=OUT/model``) carry it in the lineage.
"""
from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

from worldreel.errors import UserError
from worldreel.model_folder import (DIT_FILE, StageRecord, find_part, read_config_data, read_stages, write_config,
                                    write_stages, write_state)


def _dit_folder(path: str | Path) -> Path:
    """A run folder's ``model/``, a model folder itself, or a shipped model's name, holding a denoiser."""
    try:
        return find_part(path, "dit", "run")
    except UserError:
        try:
            find_part(path, "vae", "run")
        except UserError:
            raise UserError(f"{path}: neither it nor {Path(path) / 'model'} holds config.json and {DIT_FILE}",
                            param="run") from None
        raise UserError(f"{path} is an autoencoder: averaging autoencoders would change their latents, "
                        "and every denoiser trained on them; only denoiser runs can be averaged", param="run") from None


def _grown(state: dict, dit: dict, deep_state: dict, deep: dict) -> dict:
    """A shallower stage's weights in the layout of ``deep_state``, computing what they did.

    Its blocks move where ``grow_depth`` put them; each new block takes the deeper stage's
    weights with its gates and cross-attention output zeroed (``identity_block``), so it is
    the identity. Averaged with the deeper stage, a new block's branches are then scaled by
    the deeper stage's weight, and nothing untrained enters the mean.
    """
    from worldreel.models.dit import grown_key, grown_positions, identity_block

    positions = grown_positions(dit["depth"], deep["depth"])
    out = {grown_key(key, positions): value for key, value in state.items()}
    for index in sorted(set(range(deep["depth"])) - set(positions)):
        prefix = f"blocks.{index}."
        block = {key[len(prefix):]: value for key, value in deep_state.items() if key.startswith(prefix)}
        out.update({prefix + key: value for key, value in identity_block(block, deep["width"]).items()})
    return out


def parse_weights(text: str, count: int) -> list[float]:
    """``"0.25,0.75"`` -> [0.25, 0.75]: one non-negative weight per run, summing to 1."""
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--weights must look like 0.25,0.75; got {text!r}", param="weights") from None
    if len(weights) != count:
        raise UserError(f"--weights has {len(weights)} values for {count} runs", param="weights")
    if any(not math.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise UserError(f"--weights must be non-negative and sum to 1; got {text!r} (sum {sum(weights):g})",
                        param="weights")
    return weights


def average_runs(runs: list[str | Path], weights: list[float], out: str | Path) -> Path:
    """Write the weighted mean of the runs' denoiser weights as a run folder at ``out``; returns it."""
    from safetensors.torch import load_file

    from worldreel.models.dit import deeper_only

    start = time.perf_counter()
    if len(runs) < 2:
        raise UserError("give at least two --run folders to average", param="run")
    folders = [_dit_folder(r) for r in runs]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; give a new --out folder", param="out")
    # 1. One lineage, one architecture, latents of one autoencoder.
    stages = [read_stages(f, "dit") for f in folders]
    lineage = {s.run for s in stages[-1]}
    for run, own in zip(runs[:-1], stages[:-1]):
        if not own or own[-1].run not in lineage:
            raise UserError(f"{run} is not a stage that {runs[-1]} started from (task.init); average runs of one "
                            "training lineage, the last --run being the latest stage", param="run")
    configs = [read_config_data(f) for f in folders]
    deep = configs[-1].get("dit") or {}
    for run, cfg in zip(runs, configs):
        dit = cfg.get("dit") or {}
        # A stage the last was grown from (task.grow; U-ViT skips pair blocks by depth: never grown).
        if dit != deep and not (deeper_only(dit, deep) and dit.get("skips", "none") == "none"):
            raise UserError(f"{run} has another denoiser architecture than {runs[-1]}", param="run")
    # 2. The weighted mean, computed in fp32 and stored in the inputs' dtype; a shallower
    #    stage the last was grown from (task.grow) is first put in the deeper layout.
    states = [load_file(str(f / DIT_FILE)) for f in folders]
    states = [_grown(state, cfg["dit"], states[-1], deep) if cfg.get("dit") != deep else state
              for state, cfg in zip(states, configs)]
    for run, state in zip(runs, states):
        if state.keys() != states[-1].keys() or any(state[k].shape != states[-1][k].shape for k in state):
            raise UserError(f"{run}: its weights do not match {runs[-1]}'s tensor for tensor", param="run")
    mean = {k: sum(w * s[k].float() for w, s in zip(weights, states)).to(states[-1][k].dtype) for k in states[-1]}
    # 3. A run folder whose model carries the last run's stage records plus this one.
    model = out / "model"
    write_state(model, "dit", mean)
    write_config(model, configs[-1])
    command = ("worldreel train average" + "".join(f" --run {shlex.quote(str(f))}" for f in folders)
               + f" --weights {','.join(f'{w:g}' for w in weights)} --out {shlex.quote(str(out))}")
    record = StageRecord(part="dit", run=str(out), command=command, kind="weight average",
                         train_seconds=round(time.perf_counter() - start, 1), finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_stages(model, stages[-1] + [record])
    return out
