"""The one final output step of every generated video: watermark, write, sign.

``write_output(path, frames, fps, ...)`` is what the CLI's generation commands and the
service's worker call instead of writing files themselves, so no path can skip the marks:

1. watermark the frames (``safety/watermark.py``) with a 32-bit payload: in the CLI a hash of
   the generation record (``generation_payload``: the same seed gives the same file), in the
   service a number derived from the job id (``job_payload``);
2. write them: MP4 through ``data/video_io.write_video``, .gif and .png through Pillow;
3. sign an MP4 with a C2PA manifest (``safety/provenance.py``). GIF and PNG carry the watermark
   only: C2PA's GIF support is not in the SDK, and a PNG manifest would be stripped by nearly
   every tool that touches the file.

``watermark=False`` / ``sign=False`` switch a step off for research; the caller logs that.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldreel.errors import UserError


@dataclass
class OutputOptions:
    """The switches a user has (``--no-watermark``, ``--no-sign``, ``--sign-cert/--sign-key``)."""

    watermark: bool = True  # embed the invisible watermark
    sign: bool = True  # sign MP4s with a C2PA manifest
    data_dir: str | None = None  # where the keys live; None = $XDG_DATA_HOME/worldreel
    sign_cert: str | None = None  # the user's own PEM chain (leaf first) instead of the local CA's leaf
    sign_key: str | None = None  # its private key


@dataclass
class OutputRecord:
    """What was written and how it was marked."""

    path: Path
    payload: int | None  # the watermark payload (None when the watermark was off)
    signed: bool  # a C2PA manifest was embedded


def job_payload(job_id: str) -> int:
    """The 32-bit watermark payload of a service job: the first 4 bytes of SHA-256 of its id."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def generation_payload(generation: dict) -> int:
    """The CLI's watermark payload: 32 bits of SHA-256 over the generation record (model, weights,
    seed, sampler settings, prompt hash, mode), so the same seed still gives the same video and the
    payload names the settings that reproduce it."""
    import json

    record = json.dumps(generation, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(record).digest()[:4], "big")


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def write_output(path: str | Path, frames: np.ndarray, fps: float, generation: dict, *,
                 options: OutputOptions | None = None, payload: int | None = None,
                 parent: str | Path | None = None) -> OutputRecord:
    """Watermark ``frames`` (uint8 (F, H, W, 3)), write them to ``path`` (.mp4/.gif/.png), sign an MP4.

    generation: the manifest's worldreel assertion (model, weights_digest, seed, sampling,
    prompt_sha256, mode, ...); the watermark payload is added to it. parent: the source video of
    an edit/extension/remix (its manifest's parent ingredient).
    """
    from worldreel.data import video_io

    opts = options or OutputOptions()
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".gif", ".png"):
        raise UserError(f"cannot write {path}: the output must end in .mp4, .gif or .png", param="out")
    frames = np.asarray(frames)
    # 1. Watermark.
    if opts.watermark:
        from worldreel.safety import watermark

        payload = generation_payload(generation) if payload is None else payload
        frames = watermark.embed(frames, payload, key=watermark.load_key(opts.data_dir))
    else:
        payload = None
    # 2. Write.
    if ext == ".png":
        if len(frames) != 1:
            raise UserError(f"a .png holds one frame and this video has {len(frames)}; use .mp4 or .gif", param="out")
        video_io.write_image(path, frames[0])
    elif ext == ".gif":
        video_io.write_gif(path, frames, fps)
    else:
        video_io.write_video(path, frames, fps)
    # 3. Sign.
    signed = False
    if opts.sign and ext == ".mp4":
        from worldreel.safety import provenance

        provenance.sign(path, {**generation, "watermark_payload": payload}, parent=parent, folder=opts.data_dir,
                        cert=opts.sign_cert, key=opts.sign_key)
        signed = True
    return OutputRecord(path=path, payload=payload, signed=signed)


def weights_digest(generator) -> str | None:
    """A short SHA-256 over a generator's parameters (the manifest's weights id); None without any."""
    import torch

    modules = [(n, getattr(generator, n, None)) for n in ("vae", "dit", "probe")]
    modules = [(n, m) for n, m in modules if isinstance(m, torch.nn.Module)]
    if not modules:  # a stand-in generator (tests) has no weights
        return None
    h = hashlib.sha256()
    for name, module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
