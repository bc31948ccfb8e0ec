"""Preference pairs from a model's own videos, for Diffusion-DPO fine-tuning (issue 32).

``worldreel train pairs --model M --out DIR`` draws reel-world captions as training draws them
(``sample_scene``: never a held-out combination, and never a prompt of world-bench's suites),
has the model make ``samples`` videos of each (its plain sampler unless told otherwise: the
denoiser's own samples, steer 0 and best of 1), scores each against the caption's facts with
world-bench's seven checks, and keeps the best and the worst as a pair when their scores differ
by at least ``margin``. Each pair is stored as the model's autoencoder encodes the two videos
(the posterior mean, as ``train cache`` stores the world's clips), so ``train dit --set
task.pairs=DIR`` (train/dit_task.py) learns from them what the cache's clips never show it:
which of its own videos break the world's rules.

The folder: ``pairs.json`` (how it was made), ``pairs.jsonl`` (one row per prompt done: its
caption, seeds, scores, and the pair's file or null), ``items/NNNNNN.safetensors`` (``winner``
and ``loser`` latents (C, f, h, w)). Rerunning the same command resumes; a different model,
weights or setting is refused.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from worldreel.atomic import atomic_path, read_jsonl
from worldreel.errors import UserError

INFO_FILE, ROWS_FILE, ITEMS_DIR = "pairs.json", "pairs.jsonl", "items"
MAX_SAMPLES = 16


@dataclass(frozen=True)
class PairsConfig:
    prompts: int = 256  # captions drawn (each makes at most one pair)
    samples: int = 4  # videos per caption, the best and worst of which make its pair
    margin: float = 0.25  # the least world-bench score gap between a pair's winner and loser
    seed: int = 0  # captions: scene seeds derived from (seed, k); videos: seeds samples * k .. samples * k + samples - 1


def check_config(cfg: PairsConfig) -> PairsConfig:
    """``cfg`` checked: a clear error naming the bad setting."""
    for name, lo, hi in (("prompts", 1, 1_000_000), ("samples", 2, MAX_SAMPLES), ("seed", 0, 2**31 - 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UserError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}", param=name)
    if isinstance(cfg.margin, bool) or not isinstance(cfg.margin, (int, float)) or not 0 < cfg.margin <= 1:
        raise UserError(f"margin must be a number above 0 and at most 1 (world-bench scores are 0..1), got {cfg.margin!r}",
                        param="margin")
    return cfg


def scene_seed(seed: int, k: int) -> int:
    """The scene seed of caption k."""
    return int(np.random.SeedSequence([seed, k, 7]).generate_state(1)[0] & 0x7FFFFFFF)


def draw_caption(seed: int, k: int, excluded: set[str]) -> str | None:
    """Caption k: a training-distribution caption (no held-out combination), or None when it
    is one of ``excluded`` (world-bench's prompts: pairs never learn from the benchmark's own)."""
    from worldreel.data.captions import caption
    from worldreel.data.world import sample_scene

    s = scene_seed(seed, k)
    text = caption(sample_scene(s, holdout="exclude").facts, np.random.default_rng([s, 2]))
    return None if text in excluded else text


def pick_pair(scores: list[float], margin: float) -> tuple[int, int] | None:
    """(winner, loser) indices: the best score and the worst (the first of each among ties), or
    None when they differ by less than ``margin``."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return (best, worst) if scores[best] - scores[worst] >= margin - 1e-9 else None


def read_pairs(folder: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """A pairs folder's (captions, winners (N, C, f, h, w), losers): what ``task.pairs`` trains on."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / ROWS_FILE).is_file():
        raise UserError(f"{folder} holds no {ROWS_FILE}; make it with worldreel train pairs --model M --out {folder}",
                        param="task.pairs")
    captions, winners, losers = [], [], []
    for _, row in read_jsonl(folder / ROWS_FILE):
        if row.get("pair"):
            try:
                item = load_file(str(folder / row["pair"]))
            except (OSError, ValueError) as err:
                raise UserError(f"{folder / row['pair']}: cannot read the pair ({err})", param="task.pairs") from None
            captions.append(row["caption"])
            winners.append(item["winner"])
            losers.append(item["loser"])
    if not captions:
        raise UserError(f"{folder} holds no pairs yet (every prompt's videos scored within the margin)", param="task.pairs")
    shapes = {tuple(w.shape) for w in winners + losers}
    if len(shapes) != 1:
        raise UserError(f"{folder}: pairs of several latent shapes {sorted(shapes)}", param="task.pairs")
    return captions, torch.stack(winners).float(), torch.stack(losers).float()


def build_pairs(model: str, out: str | Path, cfg: PairsConfig, *, sampling: dict | None = None, precision: str = "auto",
                device: str = "cpu", command: str = "") -> dict:
    """Make (or resume) the pairs folder ``out``; returns its summary (also in pairs.json)."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from worldreel.data.captions import parse_caption
    from worldreel.data.video_io import to_tensor
    from worldreel.eval.worldbench import default_prompt_suite, holdout_prompt_suite, score_video
    from worldreel.model_folder import weights_digest
    from worldreel.pipelines.generate import Generator, check_sampling
    from worldreel.train.rows_folder import open_rows_folder

    # 1. Everything checked before any work; a folder made otherwise is not added to.
    cfg = check_config(cfg)
    plain = {"steer": 0.0, "best_of": 1}  # the denoiser's own samples, unless told otherwise
    sampling = {**plain, **check_sampling(**(sampling or {}))}
    made_by = {"model": str(model), "weights": weights_digest(model), "config": asdict(cfg), "sampling": sampling}
    if Path(out).exists() and not Path(out).is_dir():  # (before the model loads)
        raise UserError(f"{out} exists and is not a folder", param="out")
    gen = Generator.load(model, device=device, precision=precision)
    folder = open_rows_folder(out, made_by, info_file=INFO_FILE, rows_file=ROWS_FILE, item="pair", what="pairs",
                              command=command, precision=gen.precision, ignore=("config.prompts",))  # (a folder grows)
    out, excluded = folder.out, set(default_prompt_suite()) | set(holdout_prompt_suite())
    # 2. Per caption: the videos, their scores, the pair.
    for k in tqdm(folder.todo(cfg.prompts), desc="pairs", unit="prompt", file=sys.stderr):
        text = draw_caption(cfg.seed, k, excluded)
        row = {"k": k, "caption": text, "seeds": [], "scores": [], "pair": None}
        if text is not None:
            facts = parse_caption(text)
            videos = []
            for j in range(cfg.samples):
                seed = cfg.samples * k + j
                video = gen.generate(text, seed=seed, rewrite=False, **sampling)
                videos.append(video.frames)
                row["seeds"].append(seed)
                row["scores"].append(round(score_video(video.frames, facts, fps=video.fps).score, 4))
            picked = pick_pair(row["scores"], cfg.margin)
            if picked is not None:
                with torch.no_grad():
                    latents = [gen.vae.encode_chunked(to_tensor(videos[i])[None].to(gen.device))[0].float().cpu()
                               for i in picked]
                name = f"{ITEMS_DIR}/{k:06d}.safetensors"
                with atomic_path(out / name) as tmp:
                    save_file({"winner": latents[0].contiguous(), "loser": latents[1].contiguous()}, str(tmp))
                row.update(pair=name, winner=picked[0], loser=picked[1])
        folder.add(row)
    rows = folder.rows
    pairs = sum(bool(r["pair"]) for r in rows)
    summary = {"prompts": len(rows), "excluded": sum(r["caption"] is None for r in rows), "pairs": pairs,
               "mean_score": round(float(np.mean([s for r in rows for s in r["scores"]] or [0.0])), 4)}
    folder.write_info(summary=summary)
    return summary
