"""CLI commands: ``worldreel train vae | dit | cache | pairs | average | probe | judge-data | judge | pack``.

    worldreel train vae --preset world-tiny [--steps N] [--out DIR] [--resume] [--set key=value ...]
    worldreel train cache --model runs/world-tiny/vae/model --out runs/world-tiny/cache --count 4000
    worldreel train dit --preset world-tiny --data runs/world-tiny/cache [--resume]
    worldreel train pairs --model world-tiny --out runs/pairs --prompts 256     # preference pairs (task.pairs)
    worldreel train average --run runs/dit-a --run runs/dit-b --weights 0.25,0.75 --out runs/dit-avg
    worldreel train probe --model runs/world-tiny/model --data runs/world-tiny/cache --out runs/world-tiny/probe.safetensors
    worldreel train judge-data --model runs/world-tiny/model --out runs/judge-data --prompts 400
    worldreel train judge --model runs/world-tiny/model --data runs/judge-data --out runs/world-tiny/judge.safetensors
    worldreel train pack --vae runs/world-tiny/vae --dit runs/world-tiny/dit --out runs/world-tiny/model [--probe FILE] [--judge FILE]
    torchrun --standalone --nproc_per_node 2 -m worldreel train dit --preset world-tiny --data ...

``--set`` keys: ``train.lr=1e-3`` (this task's recipe), ``model.dit.depth=4`` (the
architecture), ``task.p_first=0.3`` (the task's own options: ``DiTTaskConfig``,
``VAETaskConfig``). Heavy imports stay inside the commands (``worldreel --help`` is instant).
"""
from __future__ import annotations

import shlex
import sys
from typing import List, Optional

import typer
from typing_extensions import Annotated

from worldreel.cli.generate import SAMPLER_OPTIONS, with_options
from worldreel.errors import UserError

SAMPLING_KEYS = ["sampler"] + [name for name, _, _ in SAMPLER_OPTIONS]  # config.json "sampling" (pack --sampling)

Preset = Annotated[str, typer.Option("--preset", help="Preset name: the architecture and the training recipe.")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps of the whole run (default: the preset's).")]
Out = Annotated[Optional[str], typer.Option("--out", help="Run folder (default: runs/<preset>/<task>).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in the run folder.")]
Data = Annotated[Optional[str], typer.Option("--data", help="Training data: 'world' (on the fly) or a latent cache folder.")]
Set = Annotated[Optional[List[str]], typer.Option("--set", help="Override: train.KEY=V, model.SECTION.KEY=V or task.KEY=V (repeatable).")]


def _parse_sets(task: str, sets: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--set`` items into preset overrides (model.*, train_<task>.*) and task options."""
    preset_overrides, task_options = [], []
    for item in sets:
        key = item.split("=", 1)[0].strip()
        if key.startswith("task."):
            task_options.append(item.strip()[len("task."):])
        elif key.startswith("train."):
            preset_overrides.append(f"train_{task}." + item.strip()[len("train."):])
        elif key.startswith(("model.", "train_vae.", "train_dit.")):
            preset_overrides.append(item)
        else:
            raise UserError(f"--set {item!r}: keys start with train., model. or task. (e.g. train.lr=1e-3)", param="set")
    return preset_overrides, task_options


def _train(task: str, preset: str, steps: Optional[int], out: Optional[str], resume: bool, data: Optional[str],
           sets: Optional[list[str]]) -> None:
    import dataclasses

    from worldreel.config import apply_overrides
    from worldreel.presets import get_preset
    from worldreel.train.records import cli_command
    from worldreel.train.trainer import RunConfig, main

    # 1. The preset, overridden: --steps and --data are shortcuts for train.steps / train.data.
    overrides, options = _parse_sets(task, list(sets or []))
    p = apply_overrides(get_preset(preset), overrides)
    recipe = getattr(p, f"train_{task}")
    if steps is not None:
        if steps < 1:
            raise UserError(f"steps must be at least 1, got {steps}", param="steps")
        recipe = dataclasses.replace(recipe, steps=steps)
    if data is not None:
        recipe = dataclasses.replace(recipe, data=data)
    # 2. Train (every torchrun process runs this same command).
    result = main(RunConfig(task=task, model=p.model, train=recipe, run_dir=out or "", resume=resume, task_options=options,
                            command=cli_command(task)))
    if result["stopped"] and result["rank"] == 0:
        argv = [a for a in sys.argv[1:] if a != "--resume"]
        print(f"resume with: worldreel {shlex.join(argv)} --resume" if sys.argv[0].endswith("worldreel")
              else "resume with the same command plus --resume", file=sys.stderr)


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    from worldreel.config import parse_wxh

    try:
        return [parse_wxh(part, "sizes") for part in text.split(",")]
    except UserError as err:
        raise UserError(f"sizes must look like 64x64,128x64; {err.message}", param="sizes") from None


def _parse_seconds(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"seconds must look like 4,2,0 (0 = a single image); got {text!r}", param="seconds") from None


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    g = groups["train"]

    @g.command("vae")
    def train_vae(preset: Preset = "world-tiny", steps: Steps = None, out: Out = None, resume: Resume = False,
                  set_: Set = None) -> None:
        """Train the video autoencoder (exports <run>/model with vae.safetensors)."""
        _train("vae", preset, steps, out, resume, None, set_)

    @g.command("dit")
    def train_dit(preset: Preset = "world-tiny", steps: Steps = None, out: Out = None, resume: Resume = False,
                  data: Data = None, set_: Set = None) -> None:
        """Train the denoiser from a latent cache (--data CACHE) or on-the-fly reel-world clips."""
        _train("dit", preset, steps, out, resume, data, set_)

    @g.command("cache")
    def train_cache(
        model: Annotated[str, typer.Option("--model", help="Model folder whose autoencoder and text encoder encode the clips.")],
        out: Annotated[str, typer.Option("--out", help="Cache folder (rerun the same command to resume).")],
        count: Annotated[Optional[int], typer.Option("--count", help="Items to encode (default: 4000 reel-world clips, or every clip of --videos).")] = None,
        sizes: Annotated[str, typer.Option("--sizes", help="Size buckets WxH, comma-separated.")] = "64x64",
        seconds: Annotated[str, typer.Option("--seconds", help="Length buckets in seconds, comma-separated; 0 = single images; a length listed twice is drawn twice as often.")] = "4",
        videos: Annotated[Optional[str], typer.Option("--videos", help="Your own videos: a folder or JSONL of (video, caption) pairs.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the reel-world items.")] = 0,
        starts: Annotated[str, typer.Option("--starts", help="Reel world: where rollers and throws start. side: at the side they leave (the world's own); wide: anywhere with room ahead, so the start does not give the direction away.")] = "side",
        min_motion: Annotated[float, typer.Option("--min-motion", help="--videos: drop clips with less motion (pixels/frame at 64 px; 0 keeps all).")] = 0.2,
        shard_size: Annotated[int, typer.Option("--shard-size", help="Items per shard file (the unit of resume).")] = 256,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Clips encoded together.")] = 16,
        device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    ) -> None:
        """Pre-encode clips and captions into a latent cache for `train dit --data`."""
        _cache(model, out, count, sizes, seconds, videos, seed, min_motion, shard_size, batch_size, device, starts)

    @g.command("average")
    def train_average(
        run: Annotated[List[str], typer.Option("--run", help="Denoiser run folder (or its model/ folder); repeat, oldest stage first, the last being the latest.")],
        weights: Annotated[str, typer.Option("--weights", help="One weight per --run, comma-separated, non-negative, summing to 1.")],
        out: Annotated[str, typer.Option("--out", help="The new run folder (its model/ is what train pack takes).")],
    ) -> None:
        """Weighted mean of denoiser weights along one training lineage (every --run a stage the last started from)."""
        from worldreel.train.average import average_runs, parse_weights

        folder = average_runs(run, parse_weights(weights, len(run)), out)
        print(f"averaged {len(run)} denoiser runs into {folder}/model", file=sys.stderr)
        print(f"pack with: worldreel train pack --vae VAE_RUN --dit {folder} --out MODEL", file=sys.stderr)

    @g.command("pairs")
    @with_options(SAMPLER_OPTIONS, into="sampling")
    def train_pairs(
        model: Annotated[str, typer.Option("--model", help="The model whose own videos make the pairs (a folder or a shipped name).")],
        out: Annotated[str, typer.Option("--out", help="Pairs folder (rerun the same command to resume, or with more --prompts to grow it).")],
        prompts: Annotated[int, typer.Option("--prompts", help="Reel-world captions drawn (never a held-out combination or a world-bench prompt).")] = 256,
        samples: Annotated[int, typer.Option("--samples", help="Videos per caption; the best and the worst by world-bench's checks make its pair.")] = 4,
        margin: Annotated[float, typer.Option("--margin", help="Least score gap between a pair's two videos (scores are 0..1).")] = 0.25,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the captions.")] = 0,
        precision: Annotated[str, typer.Option("--precision", help="auto, fp32 or bf16 (as generate).")] = "auto",
        device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
        sampling: Optional[dict] = None,
    ) -> None:
        """Preference pairs from a model's own videos, for train dit --set task.pairs=DIR (Diffusion-DPO).

        The sampler options default to the model's own, but steer 0 and best of 1: the denoiser's own samples."""
        from worldreel.train.pairs import PairsConfig, build_pairs
        from worldreel.train.records import cli_command

        cfg = PairsConfig(prompts=prompts, samples=samples, margin=margin, seed=seed)
        summary = build_pairs(model, out, cfg, sampling=sampling,
                              precision=precision, device=device, command=cli_command("pairs"))
        print(f"{summary['pairs']} pairs from {summary['prompts']} prompts ({summary['excluded']} left out as world-bench's; "
              f"mean score {summary['mean_score']:.3f}); train on them with "
              f"worldreel train dit --set task.init={model} --set task.pairs={out}", file=sys.stderr)

    @g.command("probe")
    def train_probe(
        model: Annotated[str, typer.Option("--model", help="The model whose denoiser the probe reads (a folder or a shipped name).")],
        data: Annotated[str, typer.Option("--data", help="A reel-world latent cache made by that model's autoencoder (train cache).")],
        out: Annotated[str, typer.Option("--out", help="The probe file to write (.safetensors).")],
        steps: Annotated[int, typer.Option("--steps", help="Optimiser steps (about 0.2 s each on 2 CPU cores).")] = 1500,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Clips per step.")] = 16,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the batches, noise levels and initial weights.")] = 0,
        device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
    ) -> None:
        """Train the state probe that --steer reads: each colour's place, from the denoiser's clean prediction."""
        from worldreel.train.probe import train_probe as run
        from worldreel.train.records import cli_command

        result = run(model, data, out, steps=steps, batch_size=batch_size, seed=seed, device=device,
                     command=cli_command("probe"))
        print(f"held-out loss {result['held_before']:.4f} -> {result['held_after']:.4f} after {result['steps']} steps "
              f"({result['seconds'] / 60:.1f} min); wrote {out}", file=sys.stderr)
        print(f"pack it with: worldreel train pack --vae MODEL --dit MODEL --probe {out} --sampling steer=3 --out OUT",
              file=sys.stderr)

    @g.command("judge-data")
    @with_options(SAMPLER_OPTIONS, into="sampling")
    def train_judge_data(
        model: Annotated[str, typer.Option("--model", help="The model whose finalists the judge learns to read (a folder or a shipped name).")],
        out: Annotated[str, typer.Option("--out", help="Data folder (rerun the same command to resume, or with more --prompts to grow it).")],
        prompts: Annotated[int, typer.Option("--prompts", help="Reel-world captions drawn (never a held-out combination or a world-bench prompt); about 6.5 s each on 2 CPU cores with world-tiny's sampler.")] = 512,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the captions.")] = 1,
        suite: Annotated[Optional[str], typer.Option("--suite", help="Instead: world-bench's default or holdout suite, its prompts x --seeds from --seed-base as bench world makes them (to measure a judge with bench judge, never to train one).")] = None,
        seeds: Annotated[int, typer.Option("--seeds", help="With --suite: seeds per prompt.")] = 16,
        seed_base: Annotated[int, typer.Option("--seed-base", help="With --suite: the first seed.")] = 0,
        precision: Annotated[str, typer.Option("--precision", help="auto, fp32 or bf16 (as generate).")] = "auto",
        device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
        sampling: Optional[dict] = None,
    ) -> None:
        """The model's finalists, each scored by world-bench's checks: what train judge learns from.

        Each caption is made with the model's own sampler (or the sampler options given), which must make 2 or more finalists."""
        from worldreel.train.judge import JudgeDataConfig, build_judge_data
        from worldreel.train.records import cli_command

        cfg = JudgeDataConfig(prompts=prompts, seed=seed, suite=suite, seeds=seeds, seed_base=seed_base)
        summary = build_judge_data(model, out, cfg, sampling=sampling, precision=precision, device=device,
                                   command=cli_command("judge-data"))
        if summary.get("groups"):
            print(f"{summary['finalists']} finalists of {summary['groups']} prompts; world-bench score of the sampler's pick "
                  f"{summary['picked_score']:.3f}, of the best finalist {summary['best_score']:.3f}, of one at random "
                  f"{summary['random_score']:.3f}", file=sys.stderr)
        if suite is None:
            print(f"train a judge with: worldreel train judge --model {model} --data {out} --out JUDGE.safetensors",
                  file=sys.stderr)
        else:
            print(f"measure a judge with: worldreel bench judge --model MODEL --data {out}", file=sys.stderr)

    @g.command("judge")
    def train_judge(
        model: Annotated[str, typer.Option("--model", help="The model that made the finalists (its state probe is read too).")],
        data: Annotated[List[str], typer.Option("--data", help="A judge-data folder of that model (train judge-data); repeatable.")],
        out: Annotated[str, typer.Option("--out", help="The judge file to write (.safetensors).")],
        steps: Annotated[int, typer.Option("--steps", help="Optimiser steps (about 30 a second on 2 CPU cores).")] = 3000,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Finalists per step.")] = 64,
        lr: Annotated[float, typer.Option("--lr", help="Learning rate (AdamW, cosine).")] = 1e-3,
        width: Annotated[int, typer.Option("--width", help="Channels of the judge's layers.")] = 64,
        validation: Annotated[float, typer.Option("--validation", help="Share of captions held out to keep the best step and measure the judge.")] = 0.15,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the batches and the initial weights.")] = 0,
    ) -> None:
        """Train the judge that --judge reads: each check's chance to pass, from a finished clip's palette tracks."""
        from worldreel.train.judge import JudgeConfig, suggested_weight
        from worldreel.train.judge import train_judge as run
        from worldreel.train.records import cli_command

        cfg = JudgeConfig(steps=steps, batch=batch_size, lr=lr, width=width, validation=validation, seed=seed)
        result = run(model, data, out, cfg, command=cli_command("judge"))
        kept = result["kept"]
        if "judge_pick" in kept:
            print(f"kept step {kept['step']}: on {result['validation_groups']} held-out captions the judge's pick scores "
                  f"{kept['judge_pick']:.3f} against the sampler's {kept['sampler_pick']:.3f} (loss {kept['loss']:.4f})",
                  file=sys.stderr)
            print("held-out picks by rule: " + ", ".join(f"{rule} {score:.3f}" for rule, score in kept["picks"].items()),
                  file=sys.stderr)
        weight = suggested_weight(kept.get("picks", {}))
        print(f"wrote {out}; pack it with: worldreel train pack --vae MODEL --dit MODEL --probe MODEL/probe.safetensors "
              f"--judge {out} --sampling judge={weight:g} --out OUT", file=sys.stderr)

    @g.command("pack")
    def train_pack(
        vae: Annotated[str, typer.Option("--vae", help="Autoencoder run folder (or its model/ folder).")],
        dit: Annotated[str, typer.Option("--dit", help="Denoiser run folder (or its model/ folder).")],
        out: Annotated[str, typer.Option("--out", help="The complete model folder to write.")],
        bench: Annotated[Optional[str], typer.Option("--bench", help="world-bench JSON (default suite) for the model card.")] = None,
        holdout_bench: Annotated[Optional[str], typer.Option("--holdout-bench", help="world-bench JSON of the hold-out suite.")] = None,
        ceiling_bench: Annotated[Optional[str], typer.Option("--ceiling-bench", help="world-bench JSON of the truth through the autoencoder (bench world --truth --autoencoder).")] = None,
        previous_bench: Annotated[Optional[str], typer.Option("--previous-bench", help="world-bench JSON (default suite) of the model this one replaces: the card says by how much the score changed.")] = None,
        previous_holdout_bench: Annotated[Optional[str], typer.Option("--previous-holdout-bench", help="... and of its hold-out suite.")] = None,
        sampling: Annotated[Optional[List[str]], typer.Option("--sampling", help=f"Default sampler setting KEY=VALUE (repeatable), KEY one of: {', '.join(SAMPLING_KEYS)}.")] = None,
        probe: Annotated[Optional[str], typer.Option("--probe", help="A state probe (train probe) trained against this denoiser: what --steer reads.")] = None,
        judge: Annotated[Optional[str], typer.Option("--judge", help="A judge (train judge) trained on this denoiser's finalists: what --judge reads.")] = None,
        predict: Annotated[Optional[str], typer.Option("--predict", help="bench predict JSON of these weights: the card's Prediction section.")] = None,
        previous_predict: Annotated[Optional[str], typer.Option("--previous-predict", help="... and of the model this one replaces.")] = None,
    ) -> None:
        """Join an autoencoder run and a denoiser run into one model folder with its model card."""
        _pack(vae, dit, out, bench, holdout_bench, ceiling_bench, previous_bench, previous_holdout_bench, sampling or [],
              predict, previous_predict, probe, judge)


def _pack(vae: str, dit: str, out: str, bench: Optional[str], holdout_bench: Optional[str],
          ceiling_bench: Optional[str], previous_bench: Optional[str], previous_holdout_bench: Optional[str],
          sampling: list[str], predict: Optional[str] = None, previous_predict: Optional[str] = None,
          probe: Optional[str] = None, judge: Optional[str] = None) -> None:
    from worldreel.train.pack import pack_model

    folder = pack_model(vae, dit, out, bench=bench, holdout_bench=holdout_bench, ceiling_bench=ceiling_bench,
                        previous_bench=previous_bench, previous_holdout_bench=previous_holdout_bench, sampling=sampling,
                        predict=predict, previous_predict=previous_predict, probe=probe, judge=judge)
    parts = "vae.safetensors, dit.safetensors" + (", probe.safetensors" if probe else "") + (", judge.safetensors" if judge else "")
    print(f"model folder {folder} (config.json, {parts}, README.md)", file=sys.stderr)
    print(f"generate with: worldreel generate \"a red ball falls and bounces on the floor\" --model {folder}", file=sys.stderr)


def _cache(model, out, count, sizes, seconds, videos, seed, min_motion, shard_size, batch_size, device,
           starts: str = "side") -> None:
    import torch

    from worldreel.config import to_dict
    from worldreel.data.latents import WorldItems, build_cache
    from worldreel.model_folder import find, load_vae, read_config
    from worldreel.models.text import TextEncoder

    # 1. The model's autoencoder and text encoder.
    folder = find(model)
    cfg = read_config(folder)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    size_list, second_list = _parse_sizes(sizes), _parse_seconds(seconds)
    tf = cfg.vae.time_factor
    for w, h in size_list:
        if w % 16 or h % 16 or w < 16 or h < 16 or max(w, h) > cfg.max_side:
            raise UserError(f"size {w}x{h}: sides must be multiples of 16 up to {cfg.max_side}", param="sizes")
    for s in second_list:
        frames = 1 + round(s * cfg.fps)
        if s < 0 or (frames - 1) % tf:
            raise UserError(f"{s:g} s is {frames} frames; lengths must be 1 + {tf}k frames "
                            f"(multiples of {tf / cfg.fps:g} s), or 0 for images", param="seconds")
    from worldreel.data.world import check_starts

    check_starts(starts)
    if videos is not None and starts != "side":
        raise UserError("--starts lays out reel-world scenes; it does not apply to --videos", param="starts")
    vae = load_vae(folder, device=str(dev))
    text = TextEncoder(cfg.text, device=dev)
    meta = {"vae": to_dict(cfg.vae), "text": to_dict(cfg.text), "fps": cfg.fps,
            "sizes": [list(s) for s in size_list], "seconds": second_list}

    # 2. The clips: the reel world (indexable, seeded) or the user's videos (a stream).
    report = None
    if videos is None:
        items = WorldItems(count or 4000, sizes=size_list, seconds=second_list, seed=seed, starts=starts)
        meta.update(source="world", seed=seed)
        if starts != "side":  # caches built before the option have none: "side"
            meta["starts"] = starts
        count = count or 4000
        meta["command"] = (f"worldreel train cache --model {model} --out {out} --count {count} --sizes {sizes} "
                           f"--seconds {seconds} --seed {seed}" + (f" --starts {starts}" if starts != "side" else ""))
    else:
        from worldreel.data.datasets import DataReport, VideoDataConfig, iter_clips

        lengths = [1 + round(s * cfg.fps) for s in second_list if s > 0]
        if not lengths:
            raise UserError("--videos needs at least one clip length above 0 s", param="seconds")
        report = DataReport()
        items = iter_clips(videos, VideoDataConfig(sizes=size_list, frames=lengths, fps=cfg.fps, min_motion=min_motion),
                           report)
        meta.update(source=str(videos), min_motion=min_motion)
        meta["command"] = (f"worldreel train cache --model {model} --out {out} --videos {videos} --sizes {sizes} "
                           f"--seconds {seconds} --min-motion {min_motion:g}" + (f" --count {count}" if count else ""))

    # 3. Encode, resumably.
    def encode_video(video):  # (B, 3, F, H, W) -> (B, C, f, h, w)
        return vae.encode(video.to(dev)).float().cpu()

    info = build_cache(out, items, count=count, encode_video=encode_video, encode_text=text.encode,
                       shard_size=shard_size, batch_size=batch_size, meta=meta)
    if report is not None:
        print(report.summary(), file=sys.stderr)
    buckets = ", ".join(f"{k}: {v}" for k, v in sorted(info["buckets"].items()))
    print(f"cache {out}: {info['items']} items (latent buckets {buckets})", file=sys.stderr)
    print(f"train with: worldreel train dit --preset {cfg.name} --data {out}", file=sys.stderr)
