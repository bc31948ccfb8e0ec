"""A judge of finished clips, learnt from the model's own finalists (issue 32, sampling).

The shipped sampler makes its best ``finalists`` starts to the end and keeps one. Its reading of
the finished clips (the state probe's fit and the denoiser's flow error, ``steer.pick_finalist``)
keeps a clip that world-bench scores 0.80 where the best of the same finalists scores 0.90
(docs/training.md, "The starts hold the layouts; the reader is the limit"). The judge is a reader
learnt for that one job:

1. ``worldreel train judge-data --model M --out DIR`` draws reel-world captions as training draws
   them (``pairs.draw_caption``: never a held-out combination, never a prompt of world-bench's
   suites), has the model make each with its own sampler, and keeps every finalist: its clean
   latents, the sampler's readings of it and world-bench's seven verdicts on its decoded frames.
2. ``worldreel train judge --data DIR --out J`` fits a small network (``diffusion/judge.py``)
   that reads a finished clip's palette tracks (per colour and frame, its cover and place on
   the decoded frames) and the caption's facts, and gives each check's chance to pass; the
   folder's judge reads the finalists with sampling ``judge`` (``steer.pick_finalist``).

The data folder: ``judge-data.json`` (how it was made), ``judge-data.jsonl`` (one row per prompt:
caption, seed, per finalist its readings, checks (with the failed ones' reasons) and score, and the item file),
``items/NNNNNN.safetensors`` (``latents`` (n, C, f, h, w) and ``tracks`` (n, K, F, features): the
palette tracks of the decoded frames). Rerunning resumes; a folder made with another model,
weights or sampler is refused.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from worldreel.atomic import atomic_path, read_jsonl
from worldreel.errors import UserError

INFO_FILE, ROWS_FILE, ITEMS_DIR = "judge-data.json", "judge-data.jsonl", "items"


SUITES = ("default", "holdout")


@dataclass(frozen=True)
class JudgeDataConfig:
    prompts: int = 512  # captions drawn; each gives the sampler's finalists
    seed: int = 1  # captions: scene seeds derived from (seed, k) (pairs.scene_seed); video k's seed is k
    suite: str | None = None  # instead: world-bench's suite, for measuring a judge (never for training one)
    seeds: int = 16  # with a suite: its prompts each with seeds seed_base .. seed_base + seeds - 1, as bench world
    seed_base: int = 0


def check_data_config(cfg: JudgeDataConfig) -> JudgeDataConfig:
    """``cfg`` checked: a clear error naming the bad setting."""
    for name, lo, hi in (("prompts", 1, 1_000_000), ("seed", 0, 2**31 - 1), ("seeds", 1, 1000),
                         ("seed_base", 0, 2**31 - 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UserError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}", param=name)
    if cfg.suite is not None and cfg.suite not in SUITES:
        raise UserError(f"suite must be one of {', '.join(SUITES)}, got {cfg.suite!r}", param="suite")
    return cfg


def data_jobs(cfg: JudgeDataConfig) -> list[tuple[str | None, int]]:
    """(caption or None, seed) per prompt k: drawn training captions (None: one of world-bench's
    prompts, skipped), or a suite's prompts x seeds in bench world's order."""
    from worldreel.eval.worldbench import default_prompt_suite, holdout_prompt_suite
    from worldreel.train.pairs import draw_caption

    if cfg.suite is not None:
        prompts = default_prompt_suite() if cfg.suite == "default" else holdout_prompt_suite()
        return [(p, cfg.seed_base + s) for p in prompts for s in range(cfg.seeds)]
    excluded = set(default_prompt_suite()) | set(holdout_prompt_suite())
    return [(draw_caption(cfg.seed, k, excluded), k) for k in range(cfg.prompts)]


def as_benched(frames: np.ndarray, fps: float, scratch: Path) -> np.ndarray:
    """``frames`` as bench world scores them: written as its MP4 and read back."""
    from worldreel.data.video_io import read_video, write_video

    write_video(scratch, frames, fps)
    return read_video(scratch)[0]


def build_judge_data(model: str, out: str | Path, cfg: JudgeDataConfig, *, sampling: dict | None = None,
                     precision: str = "auto", device: str = "cpu", command: str = "") -> dict:
    """Make (or resume) the judge's data folder ``out``; returns its summary (also in judge-data.json)."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from worldreel.data.captions import parse_caption
    from worldreel.eval.tracking import palette_tracks
    from worldreel.eval.worldbench import CHECKS, score_video
    from worldreel.model_folder import weights_digest
    from worldreel.pipelines.generate import Generator, check_sampling, resolve_sampling
    from worldreel.presets import SamplingDefaults
    from worldreel.train.rows_folder import open_rows_folder

    # 1. Everything checked before any work; a folder made otherwise is not added to.
    cfg = check_data_config(cfg)
    sampling = check_sampling(**(sampling or {}))
    if Path(out).exists() and not Path(out).is_dir():  # (before the model loads)
        raise UserError(f"{out} exists and is not a folder", param="out")
    gen = Generator.load(model, device=device, precision=precision)
    settings = resolve_sampling(gen.sampling, sampling)
    if settings.finalists < 2:
        raise UserError(f"the judge learns from the sampler's finalists, but this model's sampler makes "
                        f"{settings.finalists}; give --finalists 2 or more (and --best-of at least as many)", param="finalists")
    made_by = {"model": str(model), "weights": weights_digest(model),
               "source": {"seed": cfg.seed} if cfg.suite is None else
               {"suite": cfg.suite, "seeds": cfg.seeds, "seed_base": cfg.seed_base},
               "sampling": asdict(settings)}
    folder = open_rows_folder(out, made_by, info_file=INFO_FILE, rows_file=ROWS_FILE, item="item", what="finalists",
                              command=command, precision=gen.precision, defaults={"sampling": asdict(SamplingDefaults())})
    out, jobs = folder.out, data_jobs(cfg)
    scratch = out / "scratch.mp4"
    # 2. Per caption: the video, and every finalist the sampler read on the way, scored as bench world scores.
    for k in tqdm(folder.todo(len(jobs)), desc="judge data", unit="prompt", file=sys.stderr):
        text, seed = jobs[k]
        row = {"k": k, "caption": text, "seed": seed, "item": None}
        if text is not None:
            seen = {}

            def keep(latents, readings, picked):
                seen.update(latents=[w.float().cpu() for w in latents], readings=readings, picked=picked)

            # (a suite's prompts are rewritten as bench world does, so the finalists are its videos')
            gen.generate(text, seed=seed, rewrite=cfg.suite is not None, on_finalists=keep, **sampling)
            if seen:  # (a caption the sampler did not pick for, e.g. no colour the probe knows, gives none)
                facts, fps = parse_caption(text), gen.config.fps
                frames = [gen.decode(w.to(gen.device)) for w in seen["latents"]]
                verdicts = [score_video(as_benched(f, fps, scratch), facts, fps=fps) for f in frames]
                name = f"{ITEMS_DIR}/{k:06d}.safetensors"
                with atomic_path(out / name) as tmp:
                    save_file({"latents": torch.stack(seen["latents"]).contiguous(),
                               "tracks": torch.stack([palette_tracks(f) for f in frames]).contiguous()}, str(tmp))
                row.update(item=name, picked=seen["picked"],
                           readings={n: [round(float(v), 6) for v in vs] for n, vs in seen["readings"].items()},
                           scores=[round(v.score, 4) for v in verdicts],
                           checks=[{c: v.checks[c].status for c in CHECKS} for v in verdicts],
                           reasons=[{c: v.checks[c].reason for c in CHECKS if v.checks[c].status == "fail"}
                                    for v in verdicts])  # (why each failed check failed, for replayed results)
        folder.add(row)
    scratch.unlink(missing_ok=True)
    summary = data_summary(folder.rows)
    folder.write_info(summary=summary)
    return summary


def data_summary(rows: list[dict]) -> dict:
    """What a judge-data folder holds: prompts, finalists, and the world-bench score of the
    sampler's pick, of the best finalist (the ceiling of any reader) and of a finalist at random."""
    groups = [r for r in rows if r.get("item")]
    if not groups:
        return {"prompts": len(rows), "groups": 0, "finalists": 0}
    picked = [r["scores"][r["picked"]] for r in groups]
    return {"prompts": len(rows), "groups": len(groups), "finalists": sum(len(r["scores"]) for r in groups),
            "picked_score": round(float(np.mean(picked)), 4),
            "best_score": round(float(np.mean([max(r["scores"]) for r in groups])), 4),
            "random_score": round(float(np.mean([np.mean(r["scores"]) for r in groups])), 4)}


# --- the judge: trained on a data folder's finalists ---------------------------------------------------


@dataclass(frozen=True)
class JudgeConfig:
    steps: int = 3000  # optimiser steps (about 30 a second on 2 CPU cores at width 64)
    batch: int = 64  # finalists a step
    lr: float = 1e-3
    weight_decay: float = 1e-3
    width: int = 64  # channels of the judge's layers (5-fold on 321 captions: 64 and 3,000 steps picked better than 32 and 1,500)
    validation: float = 0.15  # share of captions held out to choose the step kept and measure the judge
    seed: int = 0


def check_judge_config(cfg: JudgeConfig) -> JudgeConfig:
    """``cfg`` checked: a clear error naming the bad setting."""
    for name, lo, hi in (("steps", 1, 1_000_000), ("batch", 1, 4096), ("width", 4, 512), ("seed", 0, 2**31 - 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UserError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}", param=name)
    for name, lo, hi in (("lr", 0.0, 1.0), ("weight_decay", 0.0, 1.0), ("validation", 0.0, 0.9)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi \
                and not (name != "lr" and value == 0):
            raise UserError(f"{name} must be a number above {lo} and at most {hi}, got {value!r}", param=name)
    return cfg


@dataclass
class Finalists:
    """A data folder's finalists, grouped by prompt: what the judge learns from and is measured on."""

    captions: list[str]  # per group
    seeds: list[int]  # per group
    groups: list[slice]  # per group: its finalists' rows in the tensors below
    picked: list[int]  # per group: the finalist the sampler kept (index within the group)
    tracks: list  # (N) each finalist's palette tracks (K, F, features), or None where its item has none yet
    items: list[tuple[Path, int]]  # (N) each finalist's item file and index in it
    labels: torch.Tensor  # (N, checks): 1 passed or not applicable, 0 failed
    scores: torch.Tensor  # (N,) world-bench scores
    checks: list[dict]  # (N) each finalist's verdicts by check
    reasons: list[dict]  # (N) why each of its failed checks failed (empty for folders made before they were kept)
    readings: dict[str, list[float]]  # the sampler's readings by name, (N) each
    info: dict  # the folder's judge-data.json


def read_finalists(folders, *, training: bool) -> Finalists:
    """One or more judge-data folders' finalists. ``training``: refuse a folder made from world-bench's
    suites (a judge never learns from the benchmark's prompts)."""
    from safetensors import safe_open

    from worldreel.diffusion.judge import CHECK_NAMES
    from worldreel.model_folder import read_json

    captions, seeds, groups, picked, labels, scores, checks, tracks, items = [], [], [], [], [], [], [], [], []
    reasons: list[dict] = []
    shapes: set[tuple] = set()  # the finalists' latent shapes (C, f, h, w): one per data set
    readings: dict[str, list[float]] = {}
    infos = []
    for folder in [Path(f) for f in folders]:
        info = read_json(folder / INFO_FILE) if (folder / INFO_FILE).is_file() else None
        if not info or not (folder / ROWS_FILE).is_file():
            raise UserError(f"{folder} is not a judge-data folder; make one with worldreel train judge-data "
                            f"--model M --out {folder}", param="data")
        if training and "suite" in (info.get("source") or {}):
            raise UserError(f"{folder} holds finalists of world-bench's {info['source']['suite']} suite: a judge is "
                            "measured on those, never trained on them", param="data")
        infos.append(info)
        for _, row in read_jsonl(folder / ROWS_FILE):
            if not row.get("item"):
                continue
            try:  # the tracks and the latents' shape only (the latents are read where tracks are missing, judge_inputs)
                with safe_open(str(folder / row["item"]), framework="pt") as f:
                    shape = tuple(f.get_slice("latents").get_shape())
                    item_tracks = f.get_tensor("tracks").float() if "tracks" in f.keys() else None
            except Exception as err:  # a missing, truncated or foreign file
                raise UserError(f"{folder / row['item']}: cannot read the finalists ({err})", param="data") from None
            n, start = shape[0], len(items)
            shapes.add(shape[1:])
            tracks += list(item_tracks) if item_tracks is not None else [None] * n
            items += [(folder / row["item"], i) for i in range(n)]
            groups.append(slice(start, start + n))
            captions.append(row["caption"])
            seeds.append(row["seed"])
            picked.append(row["picked"])
            scores += row["scores"]
            checks += row["checks"]
            reasons += row.get("reasons") or [{} for _ in row["checks"]]
            labels += [[float(c.get(name) != "fail") for name in CHECK_NAMES] for c in row["checks"]]
            for name, values in row["readings"].items():
                readings.setdefault(name, []).extend(values)
    if not groups:
        raise UserError(f"{', '.join(map(str, folders))}: no finalists yet", param="data")
    if len({info.get("weights", {}).get("dit") for info in infos}) > 1:
        raise UserError("the data folders were made with different denoisers; a judge reads one model's finalists",
                        param="data")
    if len(shapes) != 1:
        raise UserError(f"finalists of several latent shapes {sorted(shapes)}", param="data")
    return Finalists(captions, seeds, groups, picked, tracks, items, torch.tensor(labels),
                     torch.tensor(scores), checks, reasons, readings, infos[0])


def check_made_by(data: Finalists, model: str) -> None:
    """Refuse finalists that ``model``'s denoiser and autoencoder did not make: a judge learns, and
    is measured on, one model's own finalists."""
    from worldreel.model_folder import weights_digest

    made = {k: (data.info.get("weights") or {}).get(k) for k in ("vae", "dit")}
    digests = weights_digest(model)
    if made != {k: digests.get(k) for k in ("vae", "dit")}:
        raise UserError(f"the finalists were made by weights {made}, not {model}'s: make them with this model "
                        "(train judge-data)", param="data")


def split_groups(captions: list[str], validation: float, seed: int) -> tuple[list[int], list[int]]:
    """Group indices (training, validation), split by caption (every finalist of a caption on one side)."""
    unique = sorted(set(captions))
    order = np.random.default_rng(seed).permutation(len(unique))
    held = {unique[i] for i in order[:int(round(validation * len(unique)))]}
    train = [g for g, c in enumerate(captions) if c not in held]
    return train, [g for g, c in enumerate(captions) if c in held]


def judge_inputs(data: Finalists, model: str, precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per finalist: palette tracks (N, K, F, features), colour facts (N, K, CF), scene facts (N, S).

    A finalist recorded before the folders kept tracks is decoded by ``model``'s autoencoder
    (as the sampler decodes it, in ``precision``), and its tracks are added to its item file,
    so each is decoded once."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from worldreel.data.captions import parse_caption
    from worldreel.diffusion.judge import fact_features
    from worldreel.eval.tracking import palette_tracks

    missing: dict[Path, list[int]] = {}  # item file -> the finalists (rows in data) it holds
    for i, t in enumerate(data.tracks):
        if t is None:
            missing.setdefault(data.items[i][0], []).append(i)
    if missing:
        from worldreel.pipelines.generate import Generator

        gen = Generator.load(model, precision=precision)
        for path, rows in tqdm(sorted(missing.items()), desc="decoding finalists", unit="prompt", file=sys.stderr):
            tensors = load_file(str(path))
            tensors["tracks"] = torch.stack([palette_tracks(gen.decode(w.float().to(gen.device)))
                                             for w in tensors["latents"]]).contiguous()
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp))
            for i in rows:
                data.tracks[i] = tensors["tracks"][data.items[i][1]].float()
    per_color, scene = [], []
    for g, caption in zip(data.groups, data.captions):
        pc, sc = fact_features(parse_caption(caption))
        per_color += [pc] * (g.stop - g.start)
        scene += [sc] * (g.stop - g.start)
    return torch.stack(data.tracks), torch.stack(per_color), torch.stack(scene)


def picks(data: Finalists, judged: list[float], weights: list[float], groups: list[int] | None = None) -> dict[str, list[int]]:
    """Per rule, the finalist (row in ``data``) each group (of ``groups``, default all) keeps: the
    sampler as recorded, the judge's reading ``judged`` (per finalist) added at each weight
    (``steer.pick_finalist``), the judge alone, and the best finalist by world-bench."""
    from worldreel.diffusion.steer import pick_finalist

    likelihood = float((data.info.get("sampling") or {}).get("likelihood") or 0.0)
    rules: dict[str, list[int]] = {"sampler": [], **{f"judge {w:g}": [] for w in weights}, "judge alone": [],
                                   "best finalist": []}
    for g in range(len(data.groups)) if groups is None else groups:
        rows = data.groups[g]
        fits = data.readings["fit"][rows]
        errors = data.readings["error"][rows] if "error" in data.readings else None
        mine = judged[rows]
        rules["sampler"].append(rows.start + data.picked[g])
        for w in weights:
            rules[f"judge {w:g}"].append(rows.start + pick_finalist(fits, errors, likelihood, mine, w))
        rules["judge alone"].append(rows.start + max(range(len(mine)), key=lambda i: (mine[i], -i)))
        scores = data.scores[rows].tolist()
        rules["best finalist"].append(rows.start + max(range(len(scores)), key=lambda i: (scores[i], -i)))
    return rules


def suggested_weight(picks: dict[str, float], default: float = 2.0) -> float:
    """The judge weight whose pick scored best on the held-out captions (``picks``: rule ->
    score, as ``train_judge`` measures them; the smallest among ties): where to start, to be
    confirmed on a suite with ``bench judge``. ``default`` when none was measured."""
    weighed = {float(rule.split()[1]): score for rule, score in picks.items()
               if rule.startswith("judge ") and rule != "judge alone"}
    return max(sorted(weighed), key=lambda w: weighed[w]) if weighed else default


def train_judge(model: str, data_folders, out: str | Path, cfg: JudgeConfig, *, command: str = "") -> dict:
    """Train the judge on the folders' finalists (made by ``model``) and write it to ``out`` (a
    .safetensors file); returns what it measured on the held-out captions."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from worldreel.diffusion.judge import Judge, expected_score, read_judge_all
    from worldreel.model_folder import read_json, weights_digest

    cfg = check_judge_config(cfg)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the judge is written as a .safetensors file", param="out")
    digests = weights_digest(model)
    data = read_finalists(data_folders, training=True)
    check_made_by(data, model)
    torch.manual_seed(cfg.seed)
    tracks, per_color, scene = judge_inputs(data, model, data.info.get("precision") or "auto")
    train_g, val_g = split_groups(data.captions, cfg.validation, cfg.seed)

    def rows(groups: list[int]) -> torch.Tensor:  # the finalists of these groups
        return torch.tensor([i for g in groups for i in range(data.groups[g].start, data.groups[g].stop)], dtype=torch.long)

    train_rows, val_rows = rows(train_g), rows(val_g)
    judge = Judge(tracks.shape[-1], cfg.width, tracks.shape[1])
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + np.cos(np.pi * s / cfg.steps)))
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def run(idx: torch.Tensor) -> torch.Tensor:
        return judge(tracks[idx], per_color[idx], scene[idx])

    def validate() -> dict:
        judge.eval()
        with torch.no_grad():
            logits = torch.cat([run(i) for i in val_rows.split(512)]) if len(val_rows) else torch.zeros(0, data.labels.shape[1])
        judge.train()
        if not len(val_rows):
            return {}
        judged = [0.0] * len(data.scores)  # (only the held-out captions' finalists are read)
        for row, value in zip(val_rows.tolist(), expected_score(logits).tolist()):
            judged[row] = value
        chosen = picks(data, judged, [], val_g)
        scores = data.scores.tolist()
        return {"loss": float(bce(logits, data.labels[val_rows])),
                "judge_pick": float(np.mean([scores[r] for r in chosen["judge alone"]])),
                "sampler_pick": float(np.mean([scores[r] for r in chosen["sampler"]]))}

    best, best_state, history = None, None, []
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in tqdm(range(1, cfg.steps + 1), desc="judge", unit="step", file=sys.stderr):
        idx = train_rows[torch.randint(len(train_rows), (min(cfg.batch, len(train_rows)),), generator=gen)]
        loss = bce(run(idx), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps:
            measured = {"step": step, "train_loss": round(loss.item(), 4),
                        **{k: round(v, 4) for k, v in validate().items()}}
            history.append(measured)
            if best is None or measured.get("loss", -step) < best.get("loss", -best["step"]):
                best, best_state = measured, {k: v.detach().clone() for k, v in judge.state_dict().items()}
    judge.load_state_dict(best_state)
    # How the kept judge picks on the held-out captions, alone and added to the sampler's reading
    # at a few weights (as bench judge replays a suite, eval/judge_bench.py).
    judged = read_judge_all(judge, tracks, per_color, scene)
    if val_g:
        scores = data.scores.tolist()
        best["picks"] = {rule: round(float(np.mean([scores[r] for r in chosen])), 4)
                         for rule, chosen in picks(data, judged, [0.5, 1.0, 2.0, 4.0], val_g).items()}
    meta = {"kind": "worldreel judge", "channels": str(judge.channels), "width": str(judge.width),
            "colors": str(judge.colors), "dit": digests.get("dit", ""), "vae": digests.get("vae", ""), "command": command,
            "config": json.dumps(asdict(cfg)), "measured": json.dumps(best),
            "data": json.dumps({"groups": len(train_g), "validation_groups": len(val_g), "finalists": len(data.scores)}),
            "data_commands": json.dumps([(read_json(Path(f) / INFO_FILE) or {}).get("command", "") for f in data_folders])}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp), metadata=meta)
    return {"kept": best, "history": history, "groups": len(train_g), "validation_groups": len(val_g)}
