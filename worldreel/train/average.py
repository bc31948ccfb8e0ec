"""Weight averaging of denoiser runs along one training lineage (``worldreel train average``).

A later fine-tuning stage can gain on the whole of world-bench and lose on a few prompts the
earlier stage drew well; the weighted mean of the two sets of weights often keeps most of
both (Wortsman et al. 2022, "Model soups"; Wortsman et al. 2022, "Robust fine-tuning of
zero-shot models", which interpolates a fine-tuned model with the one it started from).
That works when the runs share a trajectory, so this averages only runs of one lineage:
every run before the last must be a stage the last one started from (``task.init``, followed
back through the run folders), and the model card can then list how each was trained. A stage
the last was grown from (``task.grow``: fewer blocks, the same layout otherwise) is first put in
the deeper layout with its new blocks the identity, so the mean scales what they add.

The result is a run folder like a training run's: ``model/`` (config.json + dit.safetensors,
in the dtype of the inputs), ``run.json`` (``"average"``: the runs and weights; ``task.init``
pointing at the last run, so ``train pack`` follows the lineage) and ``summary.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from worldreel.atomic import atomic_path
from worldreel.errors import UserError
from worldreel.pipelines.loading import CONFIG_FILE, DIT_FILE, VAE_FILE
from worldreel.pipelines.packing import _read_json, _run_folder, init_chain


def _model_folder(path: Path) -> Path:
    """A run folder's ``model/``, a model folder itself, or a shipped model's name, holding a denoiser."""
    from worldreel.presets import WEIGHTS_DIR

    for folder in (path / "model", path, WEIGHTS_DIR / str(path)):
        if (folder / DIT_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    if (path / VAE_FILE).is_file() or (path / "model" / VAE_FILE).is_file():
        raise UserError(f"{path} is an autoencoder: averaging autoencoders would change their latents, "
                        "and every denoiser trained on them; only denoiser runs can be averaged", param="run")
    raise UserError(f"{path}: neither it nor {path / 'model'} holds config.json and {DIT_FILE}", param="run")


def _run_json(folder: Path) -> dict:
    data = _read_json(_run_folder(folder) / "run.json")
    return data if isinstance(data, dict) else {}


def _lineage(folder: Path) -> list[Path]:
    """The model folders ``folder`` descends from through ``task.init`` (itself first), resolved."""
    def parent(path: Path) -> Path | None:
        try:
            return _model_folder(path)
        except UserError:
            return None  # the ancestor is gone: the chain ends here

    return [f.resolve() for f in init_chain(folder, parent)]


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
    from safetensors.torch import load_file, save_file

    from worldreel.models.dit import deeper_only

    start = time.perf_counter()
    if len(runs) < 2:
        raise UserError("give at least two --run folders to average", param="run")
    folders = [_model_folder(Path(r)) for r in runs]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; give a new --out folder", param="out")
    # 1. One lineage, one architecture, latents of one autoencoder.
    lineage = _lineage(folders[-1])
    for run, folder in zip(runs[:-1], folders[:-1]):
        if folder.resolve() not in lineage:
            raise UserError(f"{run} is not a stage that {runs[-1]} started from (task.init); average runs of one "
                            "training lineage, the last --run being the latest stage", param="run")
    configs = [json.loads((f / CONFIG_FILE).read_text()) for f in folders]
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
    # 3. A run folder that train pack can follow back (task.init -> the last run).
    last = _run_json(folders[-1])
    model = out / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / CONFIG_FILE).write_text(json.dumps(configs[-1], indent=2) + "\n")
    with atomic_path(model / DIT_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in mean.items()}, str(tmp))
    options = [o for o in last.get("task_options", []) if not o.startswith("init=")] + [f"init={folders[-1]}"]
    record = {"task": "dit", "average": {"runs": [str(f) for f in folders], "weights": weights},
              "task_options": options, "train": last.get("train", {}), "model": last.get("model", {})}
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = {"task": "dit", "steps": 0, "train_seconds": round(time.perf_counter() - start, 1), "processes": 1,
               "device": "cpu", "loss": None, "average": record["average"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out
