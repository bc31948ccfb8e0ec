"""Load and save model folders: config.json + vae.safetensors + dit.safetensors.

A model folder (CONTRACTS.md "Model folder") holds ``config.json`` (a ``ModelConfig`` as
``worldreel.config.to_dict`` writes it) and the weights as fp16 safetensors; the text
encoder is frozen and comes from its own package, so it is not in the folder. Weights are
loaded into fp32 modules (the portable default); nothing is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from worldreel.atomic import atomic_path
from worldreel.config import apply_overrides, from_dict, to_dict
from worldreel.errors import UserError
from worldreel.presets import ModelConfig, get_preset, model_dir

VAE_FILE = "vae.safetensors"
DIT_FILE = "dit.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class LoadedModel:
    """The parts of a model folder, ready to run."""

    config: ModelConfig
    vae: object  # worldreel.models.vae.VideoVAE, eval mode
    dit: object  # worldreel.models.dit.DiT, eval mode
    text_encoder: object  # worldreel.models.text.TextEncoder
    folder: Path


# Text encoders are frozen and slow to load (seconds); one per (config, device) per process.
_TEXT_ENCODERS: dict[tuple[str, str], object] = {}


def text_encoder_for(cfg, device: str = "cpu"):
    """A shared ``TextEncoder`` for this text config and device (loaded once per process)."""
    from worldreel.models.text import TextEncoder

    key = (json.dumps(to_dict(cfg), sort_keys=True), str(device))
    if key not in _TEXT_ENCODERS:
        _TEXT_ENCODERS[key] = TextEncoder(cfg, device=device)
    return _TEXT_ENCODERS[key]


def read_config(folder: str | Path) -> ModelConfig:
    """The ModelConfig of a model folder; a bad config.json is a UserError naming the file."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}", param="model") from None
    return from_dict(ModelConfig, data)


def _load_weights(module, path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    if not path.exists():
        raise UserError(f"{path.parent} has no {path.name}", param="model")
    try:
        state = load_file(str(path))
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot read {path}: {err}", param="model") from None
    expected = module.state_dict()
    state = {k: v.to(expected[k].dtype) if k in expected and torch.is_floating_point(v) else v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path} does not match config.json (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})",
            param="model",
        )


def load_model(name_or_path: str, device: str = "cpu") -> LoadedModel:
    """Load a model folder, or a model shipped in the package by name (``presets.model_dir``)."""
    from worldreel.models.dit import DiT
    from worldreel.models.vae import VideoVAE

    folder = model_dir(name_or_path)
    config = read_config(folder)
    vae, dit = VideoVAE(config.vae), DiT(config.dit)
    _load_weights(vae, folder / VAE_FILE)
    _load_weights(dit, folder / DIT_FILE)
    vae = vae.to(device).eval()
    dit = dit.to(device).eval()
    return LoadedModel(config, vae, dit, text_encoder_for(config.text, device), folder)


def weights_digest(name_or_path: str) -> dict[str, str]:
    """The first 12 hex digits of each weights file's SHA-256, e.g. {"vae": "...", "dit": "..."}:
    which weights a result was measured with, even when two models share a name."""
    import hashlib

    folder = model_dir(name_or_path)
    digests = {}
    for part, name in (("vae", VAE_FILE), ("dit", DIT_FILE)):
        path = folder / name
        if path.exists():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digests[part] = h.hexdigest()[:12]
    return digests


def half_state(module) -> dict:
    """``module``'s state dict as a model folder stores it: floating tensors in fp16, on the CPU."""
    return {k: v.detach().to("cpu").half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
            for k, v in module.state_dict().items()}


def state_digest(state: dict) -> str:
    """``weights_digest``'s value for the safetensors file ``state`` would be saved as."""
    import hashlib

    from safetensors.torch import save

    return hashlib.sha256(save(state)).hexdigest()[:12]


def save_model(out_dir: str | Path, config: ModelConfig, vae, dit, *, readme: str | None = None,
               files: dict[str, str] | None = None) -> Path:
    """Write a model folder (config.json, fp16 safetensors, optional README.md and other text
    ``files`` by name); files land atomically."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def atomic(name: str, write) -> None:
        with atomic_path(out / name) as tmp:
            write(str(tmp))

    for name, module in ((VAE_FILE, vae), (DIT_FILE, dit)):
        state = half_state(module)
        atomic(name, lambda tmp, state=state: save_file(state, tmp))
    atomic(CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(to_dict(config), indent=2) + "\n"))
    texts = {**({"README.md": readme} if readme is not None else {}), **(files or {})}
    for name, text in texts.items():
        atomic(name, lambda tmp, text=text: Path(tmp).write_text(text))
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
    readme = f"# random {preset}\n\nRandomly initialised (seed {seed}) for tests; overrides {overrides or []}.\n"
    return save_model(out_dir, config, vae, dit, readme=readme)
