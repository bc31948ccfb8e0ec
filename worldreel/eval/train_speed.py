"""Training and generation speed per precision: ``worldreel bench speed --train`` (issue 31).

In one process, so every number shares the machine's state:

(a) the matrix-multiply peak of each dtype (best square ``torch.mm``, n = 1024 and 2048);
(b) one training step (forward, backward, clip, fused AdamW: what ``train/trainer.py``
    does) of the denoiser and of the autoencoder, at world-tiny's training shapes and one
    larger shape, in each precision: ``fp32``, ``bf16`` (autocast; the autoencoder
    channels-last) and ``bf16+compile`` (the same under ``torch.compile``). Timed calls are
    interleaved between the precisions (fp32, bf16, ..., fp32, bf16, ...) so load from
    other processes hits them alike; best and median are kept, the best is the headline.
    Latent tokens/s counts latent positions per second (batch x f x h x w; the denoiser
    sees one token per 1x2x2 patch of them, the bench reports denoiser tokens for it);
(c) generation of a clip (default 4 s at 64x64, the model's sampling settings) per
    precision: sampling alone (text encoding and the denoising loop, in a warm process)
    and the whole process, from starting ``worldreel generate`` to its written file.

The result is a flat dict of dotted keys (``train.dit.fp32.step_s``, ...) written as JSON;
``train.<model>.best`` is the fastest precision and ``generate.*_s`` are those of the
fastest precision (named by ``generate.best.name``).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from worldreel.errors import UserError

MODES = ("fp32", "bf16", "bf16+compile")


@dataclass
class TrainSpeedConfig:
    preset: str = "world-tiny"  # architecture of both models
    # Denoiser shapes: (batch, latent frames, latent height, latent width). world-tiny trains
    # at batch 32 on 9 x 8 x 8 latents (144 tokens); the larger one is 128x128 pixels (576 tokens).
    dit_shapes: list[tuple[int, int, int, int]] = field(default_factory=lambda: [(32, 9, 8, 8), (8, 9, 16, 16)])
    # Autoencoder shapes: (batch, frames, height, width) of pixel crops. world-tiny trains on
    # 4 crops of 33x32x32; the larger one is 2 whole 64x64 clips.
    vae_shapes: list[tuple[int, int, int, int]] = field(default_factory=lambda: [(4, 33, 32, 32), (2, 33, 64, 64)])
    modes: list[str] = field(default_factory=lambda: list(MODES))  # precisions to time (a subset of MODES)
    repeats: int = 3  # timed steps per (shape, mode), interleaved
    warmup: int = 1  # untimed steps first (compiling happens here)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    model: str = "world-tiny"  # model for (c); "" skips it
    seconds: float = 4.0  # clip length for (c)
    size: tuple[int, int] = (64, 64)  # (width, height) for (c)
    gen_precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])  # precisions for (c)
    whole_repeats: int = 2  # whole-process runs per precision (best kept)
    peak_seconds: float = 1.0  # time spent on each dtype's matmul peak


def matmul_peaks(seconds: float) -> dict[str, float]:
    """Best GFLOP/s of a square ``torch.mm`` per dtype (fp32, bf16) on the CPU."""
    from worldreel.eval.speed import matmul_peak

    cpu = torch.device("cpu")
    return {name: matmul_peak(cpu, seconds, dtype)["gflops"] for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16"))}


def _step_fn(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module], torch.Tensor], mode: str) -> Callable[[], None]:
    """One trainer step of ``model`` in ``mode``: autocast forward, fp32 loss, backward, clip, fused AdamW."""
    bf16 = mode.startswith("bf16")
    if bf16 and hasattr(model, "set_channels_last"):
        model.set_channels_last(True)
    if mode.endswith("+compile"):
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _dit_case(preset, shape: tuple[int, int, int, int]):
    """(build(), loss_fn, latent positions per step, denoiser tokens per step) of a denoiser step."""
    from worldreel.diffusion.flow import flow_loss
    from worldreel.models.dit import DiT

    cfg = preset.model.dit
    B, f, h, w = shape
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, cfg.in_channels, f, h, w, generator=g)
    text = torch.randn(B, 16, cfg.text_dim, generator=g)
    mask = torch.ones(B, 16, dtype=torch.bool)
    t = torch.rand(B, generator=g)
    noise = torch.randn(x0.shape, generator=g)

    def build():
        torch.manual_seed(0)
        model = DiT(cfg).train()
        with torch.no_grad():  # random weights everywhere, so no branch is trivially zero
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        return model

    def loss_fn(model):
        return flow_loss(lambda x, t_frames: model(x, t_frames, text, mask), x0, t=t, noise=noise)

    tokens = B * (f // cfg.patch[0]) * (h // cfg.patch[1]) * (w // cfg.patch[2])
    return build, loss_fn, B * f * h * w, tokens


def _vae_case(preset, shape: tuple[int, int, int, int]):
    """(build(), loss_fn, latent positions per step, None) of an autoencoder step (L1 + MSE + KL)."""
    from worldreel.models.vae import VideoVAE

    cfg = preset.model.vae
    B, F, H, W = shape
    video = torch.rand(B, 3, F, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def build():
        torch.manual_seed(0)
        return VideoVAE(cfg).train()

    def loss_fn(model):
        recon, mean, logvar = model(video, generator=torch.Generator().manual_seed(1))
        recon = recon.float()
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()
        return (recon - video).abs().mean() + (recon - video).pow(2).mean() + 1e-6 * kl

    f, h, w = VideoVAE(cfg).latent_shape(F, H, W)[1:]
    return build, loss_fn, B * f * h * w, None


def time_steps(cases: list[tuple[str, Callable[[], None]]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each (name, step), warm-up first, timed calls interleaved."""
    for _, step in cases:
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeats):
        for name, step in cases:
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def _train_rows(cfg: TrainSpeedConfig, preset, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, shapes, make in (("dit", cfg.dit_shapes, _dit_case), ("vae", cfg.vae_shapes, _vae_case)):
        for index, shape in enumerate(shapes):
            prefix = f"train.{kind}" if index == 0 else f"train.{kind}.large"
            build, loss_fn, latents, tokens = make(preset, tuple(shape))
            log(f"{kind} training step at {'x'.join(map(str, shape))}: {', '.join(cfg.modes)}")
            cases = []
            for mode in cfg.modes:
                t0 = time.perf_counter()
                step = _step_fn(build(), loss_fn, mode)
                step()  # the first call compiles under +compile: timed apart
                out[f"{prefix}.{mode}.first_step_s"] = time.perf_counter() - t0
                cases.append((mode, step))
            times = time_steps(cases, cfg.repeats, max(0, cfg.warmup - 1))
            out[f"{prefix}.shape"] = list(shape)
            for mode, values in times.items():
                best = min(values)
                out[f"{prefix}.{mode}.step_s"] = best
                out[f"{prefix}.{mode}.step_s_median"] = statistics.median(values)
                out[f"{prefix}.{mode}.latent_tokens_per_s"] = latents / best
                if tokens is not None:
                    out[f"{prefix}.{mode}.dit_tokens_per_s"] = tokens / best
            name = min(times, key=lambda m: min(times[m]))
            out[f"{prefix}.best.name"] = name
            out[f"{prefix}.best.step_s"] = min(times[name])
            if "fp32" in times:
                out[f"{prefix}.best.speedup"] = min(times["fp32"]) / min(times[name])
            del cases
    return out


def _sampling_seconds(gen, prompt: str, seed: int, cfg: TrainSpeedConfig) -> tuple[float, float]:
    """(sampling seconds, generate seconds) of one warm ``generate``: sampling ends when the
    progress passes the last sampler step (decoding is the rest)."""
    import math

    from worldreel.pipelines import conditioning as cond_lib
    from worldreel.pipelines.generate import DECODE_COST

    config, sc = gen.config, gen.sampling
    latents = cond_lib.latents_for_frames(cond_lib.frames_for_seconds(cfg.seconds, config.fps), config.vae.time_factor)
    native = cond_lib.latents_for_frames(cond_lib.frames_for_seconds(config.default_seconds, config.fps), config.vae.time_factor)
    if latents > native:
        raise UserError(f"the sampling time is measured on one window: give at most {config.default_seconds:g} s", param="seconds")
    sampler_units = sc.steps
    total = sampler_units + DECODE_COST * math.ceil(latents / sc.decode_chunk_latents)
    marks: list[float] = []

    def progress(fraction: float) -> None:
        if not marks and fraction >= sampler_units / total - 1e-9:
            marks.append(time.perf_counter())

    t0 = time.perf_counter()
    gen.generate(prompt, seconds=cfg.seconds, size=cfg.size, seed=seed, rewrite=False, progress=progress)
    end = time.perf_counter()
    return (marks[0] if marks else end) - t0, end - t0


def _generation_rows(cfg: TrainSpeedConfig, log) -> dict[str, Any]:
    from worldreel.model_folder import find
    from worldreel.pipelines.generate import Generator

    out: dict[str, Any] = {}
    folder = str(find(cfg.model))
    prompt = "a red ball falls and bounces on the floor"
    gen = Generator.load(folder)
    gen.generate("a blue box", seconds=cfg.seconds, size=cfg.size, seed=0, rewrite=False)  # warm-up: caches, allocator
    size = f"{cfg.size[0]}x{cfg.size[1]}"
    best = None
    for precision in cfg.gen_precisions:
        log(f"generating {cfg.seconds:g} s at {size} in {precision}: sampling, then whole processes")
        gen.precision = precision
        if precision == "bf16":
            gen.vae.set_channels_last(True)
        gen.generate("a blue box", seconds=cfg.seconds, size=cfg.size, seed=0, rewrite=False)  # warm-up in this precision
        runs = [_sampling_seconds(gen, prompt, seed, cfg) for seed in (1, 2)]
        out[f"generate.{precision}.sampling_s"] = min(r[0] for r in runs)
        out[f"generate.{precision}.generate_s"] = min(r[1] for r in runs)
        whole = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(cfg.whole_repeats):
                path = Path(tmp) / f"clip{i}.mp4"
                command = [sys.executable, "-m", "worldreel", "generate", prompt, "--seconds", f"{cfg.seconds:g}",
                           "--size", size, "--seed", str(i), "--model", folder, "--precision", precision, "--out", str(path)]
                t0 = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                seconds = time.perf_counter() - t0
                if done.returncode != 0 or not path.exists():
                    raise RuntimeError(f"worldreel generate failed ({done.returncode}): {done.stderr[-2000:]}")
                whole.append(seconds)
        out[f"generate.{precision}.whole_process_s"] = min(whole)
        if best is None or min(whole) < out[f"generate.{best}.whole_process_s"]:
            best = precision
    if best is not None:
        out["generate.best.name"] = best
        out["generate.whole_process_s"] = out[f"generate.{best}.whole_process_s"]
        out["generate.sampling_s"] = out[f"generate.{best}.sampling_s"]
        out["generate.clip"] = f"{cfg.seconds:g} s at {size}, {gen.sampling.steps} {gen.sampling.sampler} steps, guidance {gen.sampling.guidance:g}"
    return out


def run_train_speed(cfg: TrainSpeedConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """All of (a), (b), (c) as one flat dict of dotted keys (see the module docstring)."""
    from worldreel import precision as precisions
    from worldreel.presets import get_preset

    bad = [m for m in cfg.modes if m not in MODES]
    if bad or not cfg.modes:
        raise UserError(f"modes must be some of {', '.join(MODES)}, got {cfg.modes}", param="modes")
    for p in cfg.gen_precisions:
        precisions.resolve(p, "cpu", param="precision")
    if cfg.repeats < 1:
        raise UserError(f"repeats must be >= 1, got {cfg.repeats}", param="repeats")
    preset = get_preset(cfg.preset)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result: dict[str, Any] = {"machine.threads": torch.get_num_threads(), "machine.torch": torch.__version__,
                              "machine.cpu_bf16_flags": list(precisions.cpu_bf16_flags()), "preset": cfg.preset,
                              "repeats": cfg.repeats}
    # 1. Matmul peaks, the yardstick.
    log("measuring the matmul peak of fp32 and bf16")
    for name, gflops in matmul_peaks(cfg.peak_seconds).items():
        result[f"matmul.{name}.gflops"] = gflops
    # 2. Training steps.
    result.update(_train_rows(cfg, preset, log))
    # 3. Generation.
    if cfg.model:
        result.update(_generation_rows(cfg, log))
    return result
