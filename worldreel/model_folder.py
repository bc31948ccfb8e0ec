"""Model folders: the one place that reads and writes them.

A model on disk is a folder (DESIGN.md)::

    config.json        a ``ModelConfig`` as ``config.to_dict`` writes it
    vae.safetensors    the autoencoder's weights, fp16
    dit.safetensors    the denoiser's weights, fp16
    README.md          the model card (``train/card.py``)
    training.json      the stages that made the weights, each one a ``StageRecord``

A training run exports a half folder (``RUN/model``: the autoencoder's, or the denoiser's
part and sections) and appends its own stage record; ``worldreel train pack`` joins a half of
each into a complete folder. The text encoder is frozen and comes from its own package, so it
is not in the folder. Weights load into fp32 modules (the portable default); nothing is ever
unpickled, and every file lands whole (``atomic.py``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldreel.atomic import atomic_path, write_json, write_text
from worldreel.config import apply_overrides, from_dict, to_dict
from worldreel.errors import UserError
from worldreel.presets import ModelConfig, get_preset

CONFIG_FILE = "config.json"
VAE_FILE = "vae.safetensors"
DIT_FILE = "dit.safetensors"
CARD_FILE = "README.md"
TRAINING_FILE = "training.json"
PROBE_FILE = "probe.safetensors"  # the optional state probe that steering reads (diffusion/steer.py)
JUDGE_FILE = "judge.safetensors"  # the optional judge that reads the finalists (diffusion/judge.py)
WEIGHTS = {"vae": VAE_FILE, "dit": DIT_FILE, "probe": PROBE_FILE, "judge": JUDGE_FILE}  # part -> its weights file
TRAINING_FORMAT = 2  # 1 was a per-run fact dump that pack reassembled; 2 is a list of StageRecord
WEIGHTS_DIR = Path(__file__).parent / "weights"  # models shipped inside the package


def find(name_or_path: str | Path, param: str = "model") -> Path:
    """The folder of a model: a path to a model folder, or the name of one shipped in the package."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_FILE).exists():
            raise UserError(f"{path} is not a model folder (no {CONFIG_FILE})", param=param)
        return path
    shipped = WEIGHTS_DIR / str(name_or_path)
    if (shipped / CONFIG_FILE).exists():
        return shipped
    available = sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / CONFIG_FILE).exists()) if WEIGHTS_DIR.exists() else []
    raise UserError(f"no model named {str(name_or_path)!r}: not a folder, and the package ships "
                    f"{available or 'no models yet'}", param=param)


def find_part(path: str | Path, part: str, param: str) -> Path:
    """The model folder holding ``part``'s weights ("vae" or "dit"): a training run's ``model/``,
    a model folder itself, or a shipped model's name."""
    path = Path(path)
    for folder in (path / "model", path, WEIGHTS_DIR / str(path)):
        if (folder / WEIGHTS[part]).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    raise UserError(f"{path}: neither it nor {path / 'model'} holds {CONFIG_FILE} and {WEIGHTS[part]}; "
                    f"train it first (worldreel train {part})", param=param)


def read_json(path: Path) -> Any:
    """A JSON file's value, or None when it is missing or unreadable (a record that may not exist)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_config_data(folder: str | Path) -> dict:
    """config.json as a dict (a half folder's may lack sections); a bad file is a UserError naming it."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}", param="model") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a model config", param="model")
    return data


def read_config(folder: str | Path) -> ModelConfig:
    """The ModelConfig of a model folder."""
    return from_dict(ModelConfig, read_config_data(folder))


def write_config(folder: str | Path, data: dict) -> Path:
    return write_json(Path(folder) / CONFIG_FILE, data)


def update_config(folder: str | Path, sections: dict[str, Any], base: ModelConfig) -> None:
    """Set ``sections`` (e.g. {"dit": ..., "text": ...}) of the folder's config.json, keeping the
    others; a folder without one starts from ``base``."""
    path = Path(folder) / CONFIG_FILE
    data = read_config_data(folder) if path.exists() else to_dict(base)
    write_config(folder, {**data, **{k: to_dict(v) if not isinstance(v, dict) else v for k, v in sections.items()}})


# ----------------------------------------------------------------------------- weights


def load_weights(module, path: Path, param: str = "model") -> None:
    """Load a safetensors file into ``module`` strictly, cast to the module's dtypes."""
    import torch
    from safetensors.torch import load_file

    if not path.exists():
        raise UserError(f"{path.parent} has no {path.name}", param=param)
    try:
        state = load_file(str(path))
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot read {path}: {err}", param=param) from None
    expected = module.state_dict()
    state = {k: v.to(expected[k].dtype) if k in expected and torch.is_floating_point(v) else v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match {CONFIG_FILE} (missing {sorted(missing)[:5]}, "
                        f"unexpected {sorted(unexpected)[:5]})", param=param)


def _load_part(name_or_path: str | Path, part: str, module_cls, config_cls, device: str, param: str):
    folder = find(name_or_path, param)
    data = read_config_data(folder)
    if part not in data:
        raise UserError(f"{folder / CONFIG_FILE} has no '{part}' section", param=param)
    module = module_cls(from_dict(config_cls, data[part], where=f"{part}."))
    load_weights(module, folder / WEIGHTS[part], param)
    return module.to(device).eval()


def load_vae(name_or_path: str | Path, device: str = "cpu", param: str = "model"):
    """The ``VideoVAE`` of a model folder or shipped model, fp32, eval mode."""
    from worldreel.models.vae import VAEConfig, VideoVAE

    return _load_part(name_or_path, "vae", VideoVAE, VAEConfig, device, param)


def load_dit(name_or_path: str | Path, device: str = "cpu", param: str = "model"):
    """The ``DiT`` of a model folder or shipped model, fp32, eval mode."""
    from worldreel.models.dit import DiT, DiTConfig

    return _load_part(name_or_path, "dit", DiT, DiTConfig, device, param)


def half_state(module) -> dict:
    """``module``'s state dict as a model folder stores it: floating tensors in fp16, on the CPU."""
    module = getattr(module, "module", module)  # a DDP wrapper
    return {k: v.detach().to("cpu").half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
            for k, v in module.state_dict().items()}


def state_digest(state: dict) -> str:
    """``weights_digest``'s value for the safetensors file ``state`` would be saved as."""
    from safetensors.torch import save

    return hashlib.sha256(save(state)).hexdigest()[:12]


def weights_digest(name_or_path: str | Path) -> dict[str, str]:
    """The first 12 hex digits of each weights file's SHA-256, e.g. {"vae": "...", "dit": "..."}, and
    "probe" when the folder has a state probe: which weights a result was measured with, even
    when two models share a name."""
    folder = find(name_or_path)
    digests = {}
    for part, name in WEIGHTS.items():
        path = folder / name
        if path.exists():
            digests[part] = file_digest(path)
    return digests


def write_state(folder: str | Path, part: str, state: dict) -> Path:
    """Write ``state`` (tensors) as ``part``'s safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(folder) / WEIGHTS[part]
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return path


def write_weights(folder: str | Path, part: str, module) -> Path:
    """Write ``module``'s weights as ``part``'s fp16 safetensors file."""
    return write_state(folder, part, half_state(module))


# ----------------------------------------------------------------------------- stage records


@dataclass
class StageRecord:
    """One training stage of a model part, written by the stage itself when it exports.

    A stage that starts from another's weights (``task.init``) carries that one's records
    forward, so a folder's training.json lists its whole lineage, oldest first, and
    ``train pack`` only has to join the autoencoder's list and the denoiser's.
    """

    part: str = "dit"  # "vae" or "dit": the weights this stage made
    run: str = ""  # its run folder
    command: str = ""  # the command that made it (worldreel train ...)
    kind: str = "training"  # "training", "decoder only" (encoder frozen) or "weight average"
    steps: int = 0  # optimiser steps (0 for an average)
    batch_size: int = 0  # clips per optimiser step
    train_seconds: float = 0.0  # wall time
    processes: int = 1
    device: str = "cpu"
    precision: str = ""  # compute precision, "fp32" or "bf16" ("" in records older than the field)
    loss: float | None = None  # final training loss (None: no training)
    evals: dict = field(default_factory=dict)  # the last evaluation: {"step": N, "psnr": ..., "ssim": ...}
    data: str = ""  # a latent cache folder, "world", or the user's videos
    data_command: str = ""  # the command that made the latent cache as large as this stage saw it
    pairs_command: str = ""  # the command that made its preference pairs (train pairs; task.pairs), "" without
    finished: str = ""  # UTC time of the export ("" in records older than the field)


def read_stages(folder: str | Path, part: str | None = None) -> list[StageRecord]:
    """The stage records in a folder's training.json (of ``part`` only, when given); [] if none."""
    data = read_json(Path(folder) / TRAINING_FILE)
    if not isinstance(data, dict) or data.get("format") != TRAINING_FORMAT:
        return []
    stages = [from_dict(StageRecord, s, where="training.json stage.") for s in data.get("stages", [])]
    return [s for s in stages if part is None or s.part == part]


def write_stages(folder: str | Path, stages: list[StageRecord]) -> Path:
    records = [to_dict(s) for s in stages]
    return write_json(Path(folder) / TRAINING_FILE, {"format": TRAINING_FORMAT, "stages": records})


# ----------------------------------------------------------------------------- whole models


@dataclass
class LoadedModel:
    """The parts of a model folder, ready to run."""

    config: ModelConfig
    vae: object  # worldreel.models.vae.VideoVAE, eval mode
    dit: object  # worldreel.models.dit.DiT, eval mode
    text_encoder: object  # worldreel.models.text.TextEncoder
    folder: Path
    probe: object = None  # worldreel.diffusion.steer.StateProbe, or None: the folder has no probe.safetensors
    judge: object = None  # worldreel.diffusion.judge.Judge, or None: the folder has no judge.safetensors


# Text encoders are frozen and slow to load (seconds); one per (config, device) per process.
_TEXT_ENCODERS: dict[tuple[str, str], object] = {}


def text_encoder_for(cfg, device: str = "cpu"):
    """A shared ``TextEncoder`` for this text config and device (loaded once per process)."""
    from worldreel.models.text import TextEncoder

    key = (json.dumps(to_dict(cfg), sort_keys=True), str(device))
    if key not in _TEXT_ENCODERS:
        _TEXT_ENCODERS[key] = TextEncoder(cfg, device=device)
    return _TEXT_ENCODERS[key]


def load_model(name_or_path: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a model folder, or a model shipped in the package by name."""
    from worldreel.models.dit import DiT
    from worldreel.models.vae import VideoVAE

    folder = find(name_or_path)
    config = read_config(folder)
    vae, dit = VideoVAE(config.vae), DiT(config.dit)
    load_weights(vae, folder / VAE_FILE)
    load_weights(dit, folder / DIT_FILE)
    probe = load_probe(folder / PROBE_FILE, device) if (folder / PROBE_FILE).exists() else None
    judge = load_judge(folder / JUDGE_FILE, device) if (folder / JUDGE_FILE).exists() else None
    return LoadedModel(config, vae.to(device).eval(), dit.to(device).eval(), text_encoder_for(config.text, device), folder,
                       probe, judge)


# The small readers a model folder may hold: kind -> (what a file's metadata says it is, the
# command that makes one, its class, the metadata giving its layout).
READERS = {
    "probe": ("worldreel state probe", "worldreel train probe", "worldreel.diffusion.steer:StateProbe"),
    "judge": ("worldreel judge", "worldreel train judge", "worldreel.diffusion.judge:Judge"),
}


def reader_info(path: Path, part: str = "probe", param: str | None = None) -> dict[str, str]:
    """A reader file's metadata (its layout, the denoiser it was trained against, how); ``part``:
    "probe" or "judge" (``READERS``)."""
    from safetensors import safe_open

    kind, command, _ = READERS[part]
    param = param or part
    if not path.is_file():
        raise UserError(f"{path}: no such {kind.removeprefix('worldreel ')} file", param=param)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot read {path}: {err}", param=param) from None
    if meta.get("kind") != kind:
        raise UserError(f"{path} is not a {kind} (made by {command})", param=param)
    return meta


def probe_info(path: Path, param: str = "probe") -> dict[str, str]:
    """A state probe file's metadata (``reader_info``)."""
    return reader_info(path, "probe", param)


def load_reader(path: Path, part: str, device: str = "cpu", param: str | None = None):
    """The reader in ``path`` (``READERS[part]``: fp32, eval mode, no gradients of its own), built
    from its metadata's layout (channels, width, colors), with the metadata as its ``info``."""
    import importlib

    meta = reader_info(path, part, param)
    module, _, name = READERS[part][2].partition(":")
    try:
        net = getattr(importlib.import_module(module), name)(int(meta["channels"]), int(meta["width"]), int(meta["colors"]))
    except (KeyError, ValueError):
        raise UserError(f"{path}: its metadata does not give the {part}'s layout (channels, width, colors)",
                        param=param or part) from None
    load_weights(net, path, param or part)
    net.requires_grad_(False)
    net.info = meta
    return net.to(device).eval()


def load_probe(path: Path, device: str = "cpu", param: str = "probe"):
    """The ``StateProbe`` in ``path`` (``load_reader``)."""
    return load_reader(path, "probe", device, param)


def load_judge(path: Path, device: str = "cpu", param: str = "judge"):
    """The ``Judge`` in ``path`` (``load_reader``)."""
    return load_reader(path, "judge", device, param)


def file_digest(path: Path) -> str:
    """The first 12 hex digits of a file's SHA-256 (``weights_digest``'s value for one file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def save_model(out_dir: str | Path, config: ModelConfig, vae, dit, *, card: str | None = None,
               stages: list[StageRecord] | None = None) -> Path:
    """Write a complete model folder: config.json, fp16 safetensors, optionally the card and the
    stage records."""
    out = Path(out_dir)
    write_weights(out, "vae", vae)
    write_weights(out, "dit", dit)
    write_config(out, to_dict(config))
    if card is not None:
        write_text(out / CARD_FILE, card)
    if stages is not None:
        write_stages(out, stages)
    return out


def save_random_model(out_dir: str | Path, preset: str = "world-tiny", overrides: list[str] | None = None,
                      *, seed: int = 0) -> Path:
    """A randomly initialised model folder for tests (e.g. overrides ["dit.width=32", "dit.depth=2"]).

    Zero-initialised tensors (adaLN-Zero gates, output layers) get small random values,
    so the untrained denoiser's output depends on its inputs and text, and tests of the
    loop can tell a prompt, a seed or a given frame from another.
    """
    import torch

    from worldreel.models.dit import DiT
    from worldreel.models.vae import VideoVAE

    config = apply_overrides(get_preset(preset).model, overrides)
    torch.manual_seed(seed)
    vae, dit = VideoVAE(config.vae), DiT(config.dit)
    with torch.no_grad():
        for param in dit.parameters():
            if param.is_floating_point() and not param.any():
                param.normal_(0.0, 0.02)
    card = f"# random {preset}\n\nRandomly initialised (seed {seed}) for tests; overrides {overrides or []}.\n"
    return save_model(out_dir, config, vae, dit, card=card)
