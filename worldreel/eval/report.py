"""world-bench over a folder: score every video, summarise as JSON, draw the report figure.

A folder holds videos and ``captions.jsonl`` (one JSON line per video, at least ``file``
and ``caption``; ``worldreel world render`` and ``worldreel bench world --model`` write
it). The caption is the truth: facts are parsed from it, so any model's videos can be
scored from their prompts. The figure shows per-check pass rates and example videos with
the evaluator's tracks drawn on them, because people would rather look than read.
"""
from __future__ import annotations

import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np

from worldreel.atomic import BadLine, atomic_path, read_jsonl
from worldreel.atomic import write_json as _write_json_file
from worldreel.data.facts import PALETTE
from worldreel.errors import UserError
from worldreel.eval.worldbench import CHECKS, VideoScore, score_video


def read_captions(folder) -> list[dict]:
    """The lines of ``folder/captions.jsonl`` (UserError naming the folder when missing or bad)."""
    path = Path(folder) / "captions.jsonl"
    if not path.is_file():
        raise UserError(f"{folder}: no captions.jsonl (one JSON line per video with 'file' and 'caption')", param="videos")
    rows = []
    expected = "expected a JSON object with string 'file' and 'caption'"
    try:
        lines = read_jsonl(path)
    except BadLine as err:
        raise UserError(f"{path} line {err.number}: {expected}", param="videos") from None
    for n, row in lines:
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not isinstance(row.get("caption"), str):
            raise UserError(f"{path} line {n}: {expected}", param="videos")
        rows.append(row)
    if not rows:
        raise UserError(f"{path} lists no videos", param="videos")
    return rows


def score_folder(folder, *, progress: bool = False) -> dict:
    """Score every video listed in ``folder/captions.jsonl`` against its caption.

    Videos whose prompt is outside the world's vocabulary, or whose file cannot be read,
    are listed under "skipped" with the reason. Returns ``summarize``'s dict.
    """
    from tqdm import tqdm

    from worldreel.data.captions import parse_caption
    from worldreel.data.video_io import read_video

    rows = read_captions(folder)
    scores: dict[str, VideoScore] = {}
    by_file: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for row in tqdm(rows, desc="world-bench", unit="video", disable=not progress):
        file = row["file"]
        try:
            facts = parse_caption(row["caption"])
            frames, fps = read_video(Path(folder) / file)
        except UserError as err:
            skipped[file] = str(err)
            continue
        scores[file] = score_video(frames, facts, fps=fps)
        by_file[file] = row
    return summarize(scores, by_file, skipped)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_COLOUR = re.compile(r"\b(" + "|".join(sorted(PALETTE, key=len, reverse=True)) + r")\b")


NO_REASON = "(no reason given)"


def failure_kind(reason: str) -> str:
    """A failure reason with its numbers and colour names taken out, so that videos failing
    the same way group together: "the red box appears from nowhere at frame 4" ->
    "the COLOUR box appears from nowhere at frame N"."""
    return _NUMBER.sub("N", _COLOUR.sub("COLOUR", reason)).strip() or NO_REASON


def failure_kinds(videos: dict[str, dict]) -> list[dict]:
    """How often each kind of failure occurs: [{"check", "reason", "videos"}], most frequent first.

    videos: file -> a video's entry (``VideoScore.to_dict()``). This is what to look at to
    learn what a model gets wrong: which checks fail, and how.
    """
    counts: Counter = Counter()
    for entry in videos.values():
        for name, check in entry["checks"].items():
            if check["status"] == "fail":
                counts[(name, failure_kind(check["reason"]))] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], CHECKS.index(kv[0][0]), kv[0][1]))
    return [{"check": name, "reason": reason, "videos": n} for (name, reason), n in ranked]


def summarize(scores: dict[str, VideoScore], rows: dict[str, dict], skipped: dict[str, str] | None = None) -> dict:
    """The world-bench JSON: mean score, per-check pass rates, the kinds of failure, per video,
    per prompt, spread over seeds.

    scores: file -> VideoScore; rows: file -> its captions.jsonl line (``caption``, maybe ``seed``).
    A prompt "fails on a seed" when that video misses any applicable check.
    """
    checks, applicable = {}, {}
    for name in CHECKS:
        results = [v.checks[name].status for v in scores.values() if v.checks[name].status != "n/a"]
        applicable[name] = len(results)
        checks[name] = round(sum(r == "pass" for r in results) / len(results), 4) if results else None
    videos = {}
    for file, v in scores.items():
        entry = {"prompt": rows[file]["caption"], **v.to_dict()}
        if "seed" in rows[file]:
            entry["seed"] = rows[file]["seed"]
        videos[file] = entry
    prompts: dict[str, dict] = {}
    for file, entry in videos.items():
        p = prompts.setdefault(entry["prompt"], {"videos": [], "scores": [], "failed_checks": set()})
        p["videos"].append(file)
        p["scores"].append(entry["score"])
        p["failed_checks"].update(entry["failed"])
    for p in prompts.values():
        p["mean_score"] = round(float(np.mean(p["scores"])), 4)
        p["min_score"] = round(float(min(p["scores"])), 4)
        p["failed_checks"] = sorted(p["failed_checks"], key=CHECKS.index)
    several = [p for p in prompts.values() if len(p["videos"]) > 1]

    def share(values) -> float | None:
        return round(float(np.mean(values)), 4) if several else None

    return {
        "benchmark": "world-bench",
        "version": 1,
        "n_videos": len(scores),
        "mean_score": round(float(np.mean([v.score for v in scores.values()])), 4) if scores else 0.0,
        "checks": checks,
        "applicable": applicable,
        "spread": {
            "prompts": len(prompts),
            "prompts_with_several_videos": len(several),
            "fail_on_some_seed": share([min(p["scores"]) < 1 for p in several]),  # needs cherry-picking
            "fail_on_every_seed": share([max(p["scores"]) < 1 for p in several]),
            "mean_worst_seed_score": share([min(p["scores"]) for p in several]),
        },
        "failures": failure_kinds(videos),
        "prompts": prompts,
        "videos": videos,
        "skipped": dict(skipped or {}),
    }


def write_json(result: dict, path) -> Path:
    """Write the result JSON atomically (temp file in the same folder, then rename)."""
    return _write_json_file(path, result)


def pick_examples(result: dict, count: int) -> list[str]:
    """Files to show: the worst-scoring videos, then the best one (so the figure shows both)."""
    order = sorted(result["videos"], key=lambda f: (result["videos"][f]["score"], f))
    if len(order) <= count:
        return order
    return order[: count - 1] + order[-1:]


def write_report(result: dict, folder, path, *, examples: int = 3, frames_shown: int = 5) -> Path:
    """Draw the report PNG: per-check pass-rate bars, then example videos with their tracks.

    The example videos are read back from ``folder`` and scored again to get their tracks.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from worldreel.data.captions import parse_caption
    from worldreel.data.video_io import read_video

    files = pick_examples(result, examples)
    fig = Figure(figsize=(2.0 * frames_shown, 2.6 + 2.3 * len(files)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + len(files), frames_shown, height_ratios=[1.3] + [1.0] * len(files), hspace=0.5,
                            top=0.95, bottom=0.04, left=0.11, right=0.97)
    # 1. Per-check pass rates.
    ax = fig.add_subplot(grid[0, :])
    rates = [result["checks"][c] for c in CHECKS]
    ys = np.arange(len(CHECKS))
    ax.barh(ys, [r or 0.0 for r in rates], color=["#3a7" if (r or 0) >= 0.9 else "#d84" for r in rates])
    for y, name, r in zip(ys, CHECKS, rates):
        n = result["applicable"][name]
        ax.text(1.01, y, "n/a" if r is None else f"{r:.0%} of {n}", va="center", fontsize=8)
    ax.set_yticks(ys, CHECKS, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    spread = result["spread"]["fail_on_some_seed"]
    title = f"world-bench pass rates: mean score {result['mean_score']:.3f} over {result['n_videos']} videos"
    if spread is not None:
        title += f"; {spread:.0%} of prompts fail on some seed"
    ax.set_title(title, fontsize=10)
    # 2. Example videos: frames spread over the clip, every track drawn on each.
    for row, file in enumerate(files, start=1):
        entry = result["videos"][file]
        frames, fps = read_video(Path(folder) / file)
        score = score_video(frames, parse_caption(entry["prompt"]), fps=fps)
        picks = np.linspace(0, len(frames) - 1, frames_shown).round().astype(int)
        for col, f in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(frames[f], interpolation="nearest")
            for track in score.tracks:
                xy = track.xy
                rgb = np.array(PALETTE[track.color]) / 255.0
                ax.plot(xy[:, 0], xy[:, 1], "-", color="black", lw=2.2)
                ax.plot(xy[:, 0], xy[:, 1], "-", color=rgb, lw=1.2)
                here = [d for d in track.dets if d.frame == f]
                if here:
                    ax.plot(here[0].x, here[0].y, "o", ms=4, mfc="none", mec="white", mew=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(-0.5, frames.shape[2] - 0.5)
            ax.set_ylim(frames.shape[1] - 0.5, -0.5)
            ax.set_xlabel(f"t = {f / fps:.2f} s", fontsize=7)
            if col == 0:
                failed = ", ".join(entry["failed"]) or "none"
                text = f"{file}  score {entry['score']:.2f}  failed: {failed}\n" + textwrap.shorten(entry["prompt"], 110)
                ax.set_title(text, fontsize=8, loc="left")
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
