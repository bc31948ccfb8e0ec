"""Autoencoder benchmark (``worldreel bench vae``): reconstruction, compression, speed, memory,
and the spacetime-vs-per-frame comparison at an equal latent budget.

What is measured
----------------
* PSNR (dB, pixels on [0, 1]) and SSIM (pytorch-msssim, per frame, 11-px Gaussian window)
  on ``clips`` held-out reel-world clips of 33x64x64: ``sample_scene(seed, holdout="only")``
  (scenes with colour/shape/motion combinations never used in training).
* Compression ratio = RGB values / latent values for one clip.
* Encode and decode frames per second on CPU (one-shot, batch of ``speed_clips`` clips,
  ``torch.get_num_threads()`` threads; recorded in the output).
* Peak memory of chunked decode (and encode) for a 60 s clip vs a 4 s clip: the peak rise
  of the process's resident memory (polled every millisecond from a thread), with inputs
  and the uint8 output buffer allocated before the baseline is taken, as a streaming
  writer would hold them. Also the chunked-vs-one-shot max difference on the 60 s clip.
* With ``train_steps > 0``: the spacetime autoencoder and the per-frame 2-D baseline
  (``models/vae2d.py``: at least the same number of latent values per clip) are trained
  from scratch in this run on identical batches, steps, loss and optimiser, then measured
  side by side.
"""
from __future__ import annotations

import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from worldreel.models.vae import VAEConfig, VideoVAE, vae_presets
from worldreel.models.vae2d import FrameVAE, frame_vae_config
from worldreel.data.clips import world_videos
from worldreel.train.vae_losses import psnr, ssim
from worldreel.train.vae_task import VAETask, VAETaskConfig


@dataclass
class VAEBenchConfig:
    clips: int = 64  # held-out clips measured
    frames: int = 33  # frames per clip (the world's native 4 s)
    size: tuple[int, int] = (64, 64)  # (width, height)
    eval_seed: int = 900_000  # seed of the held-out clips (training batches derive theirs from train_seed)
    train_steps: int = 0  # > 0: train spacetime and per-frame models from scratch and compare
    preset: str = "4x8x8x16"  # autoencoder layout trained for the comparison (see vae_presets)
    batch_size: int = 8  # training batch for the comparison
    lr: float = 1e-3  # peak learning rate (linear warmup, cosine decay to 5 %)
    warmup: int = 100  # warmup steps
    train_seed: int = 0  # seed of training data and initialisation
    speed_clips: int = 4  # clips per timed encode/decode call
    memory: bool = True  # measure chunked-decode memory for 4 s vs 60 s


# ----------------------------------------------------------------------------- measurements


def reconstruct(vae: VideoVAE, videos: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """One-shot encode -> decode of (N, 3, F, H, W), trimmed to F frames."""
    out = []
    with torch.no_grad():
        for i in range(0, len(videos), batch):
            x = videos[i:i + batch]
            out.append(vae.decode(vae.encode(x))[:, :, : x.shape[2]].clamp(-1, 1))
    return torch.cat(out)


def quality(vae: VideoVAE, videos: torch.Tensor) -> dict[str, Any]:
    recon = reconstruct(vae, videos)
    p, s = psnr(recon, videos), ssim(recon, videos)
    c, f, h, w = vae.latent_shape(*videos.shape[2:])
    pixels = math.prod(videos.shape[1:])
    return {
        "psnr": round(p.mean().item(), 3), "psnr_min": round(p.min().item(), 3), "psnr_std": round(p.std().item(), 3),
        "ssim": round(s.mean().item(), 5), "ssim_min": round(s.min().item(), 5),
        "latent_shape": [c, f, h, w], "latent_values": c * f * h * w, "pixel_values": pixels,
        "compression_ratio": round(pixels / (c * f * h * w), 2),
        "nominal_ratio": vae.cfg.time_factor * vae.cfg.space_factor ** 2 * vae.cfg.in_channels / vae.cfg.latent_channels,
        "params": sum(q.numel() for q in vae.parameters()),
    }


def speed(vae: VideoVAE, videos: torch.Tensor) -> dict[str, float]:
    """Frames per second of one-shot encode and decode on this machine's CPU threads."""
    x = videos
    with torch.no_grad():
        vae.decode(vae.encode(x[:1]))  # warm-up: first calls build kernels
        t = time.perf_counter()
        z = vae.encode(x)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        vae.decode(z)
        t_dec = time.perf_counter() - t
    frames = x.shape[0] * x.shape[2]
    return {"encode_fps": round(frames / t_enc, 1), "decode_fps": round(frames / t_dec, 1)}


def _rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; the bench's memory figures need it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_rise(fn) -> int:
    """Peak rise of resident memory (bytes) while ``fn()`` runs, polled every millisecond."""
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss_bytes()) - base


def _memory_child(weights: str, cfg: dict, mode: str, frames: int, size: tuple[int, int], chunk_latents: int,
                  threads: int, result) -> None:
    """In a fresh process (nothing cached from earlier runs): the peak memory rise of one call.
    Inputs and the uint8 output buffer exist before the baseline, as a streaming writer holds them."""
    import ctypes

    from safetensors.torch import load_file

    from worldreel.config import from_dict

    # glibc adapts its mmap threshold upwards after frees, after which freed activation
    # buffers stay resident and RSS stops tracking live memory; a fixed 64 KiB threshold
    # returns every large buffer to the OS on free (M_MMAP_THRESHOLD = -3)
    ctypes.CDLL("libc.so.6").mallopt(-3, 65536)
    torch.set_num_threads(threads)
    vae = VideoVAE(from_dict(VAEConfig, cfg))
    vae.load_state_dict(load_file(weights))
    vae.eval()
    (width, height), tf, sf = size, vae.cfg.time_factor, vae.cfg.space_factor
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, vae.cfg.latent_channels, 1 + (frames - 1) // tf, height // sf, width // sf, generator=gen)
    video = torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1
    sink = torch.empty(frames, height, width, 3, dtype=torch.uint8)

    def decode_into():
        at = 0
        for piece in vae.decode_stream(z, chunk_latents):  # a video writer would encode and drop each piece
            n = piece.shape[2]
            sink[at:at + n] = ((piece[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
            at += n

    calls = {"decode": decode_into, "encode": lambda: vae.encode_chunked(video, chunk_latents * tf),
             "decode_oneshot": lambda: vae.decode(z)}
    with torch.no_grad():
        result.put(peak_rss_rise(calls[mode]))


def memory(vae: VideoVAE, size: tuple[int, int], chunk_latents: int = 2) -> dict[str, Any]:
    """Chunked decode/encode peak memory for 4 s (33 frames) vs 60 s (481 frames) at 8 fps,
    each in a fresh process; plus one-shot decode of 60 s and its difference from chunked."""
    import multiprocessing
    import tempfile

    from safetensors.torch import save_file

    from worldreel.config import to_dict

    tf = vae.cfg.time_factor
    out: dict[str, Any] = {"chunk_latents": chunk_latents, "chunk_frames": chunk_latents * tf,
                           "method": "peak RSS rise in a fresh process (glibc mmap threshold fixed at 64 KiB), polled every 1 ms"}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "vae.safetensors")
        save_file({k: v.detach().float().contiguous() for k, v in vae.state_dict().items()}, weights)
        runs = [("decode", 4), ("decode", 60), ("encode", 4), ("encode", 60), ("decode_oneshot", 60)]
        for mode, seconds in runs:
            result = ctx.Queue()
            child = ctx.Process(target=_memory_child, args=(weights, to_dict(vae.cfg), mode, 1 + 8 * seconds, size,
                                                            chunk_latents, torch.get_num_threads(), result))
            child.start()
            rise = result.get(timeout=600)
            child.join()
            out[f"{mode}_{seconds}s_mb"] = round(rise / 2**20, 2)
    for kind in ("decode", "encode"):
        out[f"{kind}_ratio_60s_to_4s"] = round(out[f"{kind}_60s_mb"] / max(out[f"{kind}_4s_mb"], 1e-3), 3)
    width, height = size
    sf = vae.cfg.space_factor
    z = torch.randn(1, vae.cfg.latent_channels, 1 + 480 // tf, height // sf, width // sf, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out["chunked_vs_oneshot_60s_max_abs_diff"] = float((vae.decode_chunked(z, chunk_latents) - vae.decode(z)).abs().max())
    return out


# ----------------------------------------------------------------------------- training for the comparison


def quick_train(model: VideoVAE, task: VAETask, cfg: VAEBenchConfig, label: str) -> dict[str, float]:
    """AdamW with warmup + cosine, grad clip 1: the same loop for both models, so the
    comparison is fair and reproducible (the project's trainer is ``worldreel train vae``)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.train_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.train_seed)
    batches = task.batches(seed=cfg.train_seed, rank=0, world_size=1, start_step=0)
    model.train()
    step_time, recent = 0.0, []
    for step in tqdm(range(cfg.train_steps), desc=f"train {label}", leave=False):
        lr_f = min(1.0, (step + 1) / max(1, cfg.warmup)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.train_steps)))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_f
        batch = next(batches)
        t = time.perf_counter()
        loss, logs = task.loss(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_time += time.perf_counter() - t
        recent = (recent + [logs["psnr"]])[-50:]
    model.eval()
    return {"train_steps": cfg.train_steps, "step_seconds": round(step_time / max(1, cfg.train_steps), 3),
            "train_psnr_last50": round(sum(recent) / max(1, len(recent)), 3)}


def run_bench(cfg: VAEBenchConfig, model: str | None = None) -> dict[str, Any]:
    """Everything above, as one JSON-able dict."""
    from worldreel.errors import UserError

    if model is None and cfg.train_steps <= 0:
        raise UserError("give --model PATH, or --train-steps N to train and compare both autoencoders here", param="model")
    if cfg.preset not in vae_presets():
        raise UserError(f"unknown autoencoder preset {cfg.preset!r}; choose one of {sorted(vae_presets())}", param="preset")
    if cfg.clips < 1:
        raise UserError("clips must be at least 1", param="clips")
    task_cfg = VAETaskConfig(clip_size=cfg.size, clip_frames=cfg.frames)
    # 1. held-out clips
    videos = world_videos(cfg.eval_seed, cfg.clips, frames=cfg.frames, size=cfg.size, holdout="only")
    report: dict[str, Any] = {
        "data": "world", "clips": cfg.clips, "clip_shape": [cfg.frames, cfg.size[1], cfg.size[0]],
        "held_out": f"sample_scene(seed, holdout='only'), seeds {cfg.eval_seed}..{cfg.eval_seed + cfg.clips - 1}",
        "threads": torch.get_num_threads(), "machine": platform.machine(), "config": asdict(cfg),
    }
    speed_clips = videos[: cfg.speed_clips]
    # 2. a given model
    if model is not None:
        from worldreel.model_folder import load_vae

        vae = load_vae(model)
        report["model"] = {"path": str(model), **quality(vae, videos), **speed(vae, speed_clips)}
        if cfg.memory:
            report["model"]["memory"] = memory(vae, cfg.size)
    # 3. spacetime vs per-frame, trained here the same way
    if cfg.train_steps > 0:
        st_cfg = vae_presets()[cfg.preset]
        fr_cfg = frame_vae_config(st_cfg, frames=cfg.frames, height=cfg.size[1], width=cfg.size[0])
        comparison: dict[str, Any] = {}
        for label, vae_cfg, cls in (("spacetime", st_cfg, VideoVAE), ("per_frame_2d", fr_cfg, FrameVAE)):
            task = VAETask.for_vae(vae_cfg, cfg.batch_size, task_cfg)
            torch.manual_seed(cfg.train_seed)
            net = cls(vae_cfg)
            train = quick_train(net, task, cfg, label)
            net.set_latent_stats(*task.latent_stats(net))
            comparison[label] = {"layout": f"{vae_cfg.time_factor}x{vae_cfg.space_factor}x{vae_cfg.space_factor}x{vae_cfg.latent_channels}",
                                 **train, **quality(net, videos), **speed(net, speed_clips)}
            if label == "spacetime" and cfg.memory:
                comparison[label]["memory"] = memory(net, cfg.size)
        st, fr = comparison["spacetime"], comparison["per_frame_2d"]
        comparison["budget"] = (f"spacetime {st['latent_shape']} = {st['latent_values']} values vs per-frame "
                                f"{fr['latent_shape']} = {fr['latent_values']} values per clip "
                                f"({100 * (fr['latent_values'] / st['latent_values'] - 1):+.1f} % for the baseline)")
        comparison["psnr_gain_db"] = round(st["psnr"] - fr["psnr"], 3)
        comparison["ssim_gain"] = round(st["ssim"] - fr["ssim"], 5)
        comparison["winner"] = "spacetime" if st["psnr"] > fr["psnr"] else "per_frame_2d"
        report["comparison"] = comparison
    return report
