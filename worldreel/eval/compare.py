"""world-bench results side by side: is a new model better than the one before, or is it seed noise?

    worldreel bench compare OLD_DIR NEW_DIR [MORE ...] [--json OUT]

Each argument is a world-bench result (``worldbench.json``, or the folder holding it). The
first is the baseline. Per result: its videos, mean score with a 95 % interval (the standard
error over its videos), each check's pass rate and the prompts that fail on every seed. Per
later result, against the baseline: the mean paired difference over the (prompt, seed) videos
both made, with its 95 % interval (the standard error of the per-video differences), and the
prompts whose mean score rose or fell. Videos of one (prompt, seed) share their prompt and
start noise, so pairing removes most of the prompt-to-prompt spread that two unpaired means
carry; on world-tiny two 8-seed halves of one model differ by up to 0.056 on the default
suite, which is what this answers for.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from worldreel.errors import UserError
from worldreel.eval.worldbench import CHECKS

Z95 = 1.96  # two-sided 95 % normal quantile


def read_result(path: str | Path) -> dict:
    """A world-bench result from its JSON or the folder holding ``worldbench.json``."""
    path = Path(path)
    file = path / "worldbench.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no world-bench result there (worldbench.json)", param="results") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{file}: not readable as JSON ({err})", param="results") from None
    if not _has_scores(data):
        raise UserError(f"{file}: not a world-bench result with per-video scores", param="results")
    return data


def _has_scores(data: object) -> bool:
    """Whether ``data`` is a world-bench result with a score for every video."""
    videos = data.get("videos") if isinstance(data, dict) else None
    return isinstance(videos, dict) and bool(videos) and all(
        isinstance(v, dict) and isinstance(v.get("score"), (int, float)) for v in videos.values())


def _mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % interval (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)


def _by_video(result: dict) -> dict[tuple[str, object], float]:
    """(prompt, seed) -> score."""
    return {(str(v.get("prompt")), v.get("seed")): float(v["score"]) for v in result["videos"].values()}


def _prompt_means(scores: dict[tuple[str, object], float], keys) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for key in keys:
        sums.setdefault(key[0], []).append(scores[key])
    return {p: sum(s) / len(s) for p, s in sums.items()}


def compare(results: list[tuple[str, dict]]) -> dict:
    """The comparison of named results, the first being the baseline (see the module doc)."""
    if len(results) < 2:
        raise UserError("give at least two world-bench results: the baseline first", param="results")
    base_scores = _by_video(results[0][1])
    rows = []
    for name, result in results:
        scores = _by_video(result)
        mean, half = _mean_interval(list(scores.values()))
        row = {"name": name, "videos": len(scores), "mean_score": mean, "interval95": half,
               "checks": {c: (result.get("checks") or {}).get(c) for c in CHECKS},
               "fail_on_every_seed": (result.get("spread") or {}).get("fail_on_every_seed")}
        if rows:  # against the baseline, on the videos both made
            row["paired"] = _paired(base_scores, scores)
        rows.append(row)
    return {"baseline": results[0][0], "results": rows}


def _paired(base_scores: dict, scores: dict) -> dict | None:
    common = sorted(set(scores) & set(base_scores), key=str)
    if not common:
        return None
    diff, half = _mean_interval([scores[k] - base_scores[k] for k in common])
    before, after = _prompt_means(base_scores, common), _prompt_means(scores, common)
    return {"videos": len(common), "difference": diff, "interval95": half, "within_noise": abs(diff) <= half,
            "prompts_up": sum(after[p] > before[p] + 1e-9 for p in after),
            "prompts_down": sum(after[p] < before[p] - 1e-9 for p in after), "prompts": len(after)}


def paired_difference(old: dict, new: dict) -> dict | None:
    """``new`` against ``old`` (two world-bench results) over the videos both made, as in
    ``compare``; None when either lacks per-video scores or they share no video."""
    if not (_has_scores(old) and _has_scores(new)):
        return None
    return _paired(_by_video(old), _by_video(new))


def print_comparison(comparison: dict, console=None) -> None:
    """The comparison as one rich table: a column per result, the baseline first."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = comparison["results"]
    table = Table(title=f"world-bench side by side (baseline: {comparison['baseline']})")
    table.add_column("")
    for row in rows:
        table.add_column(row["name"], justify="right", overflow="fold")
    table.add_row("videos", *[str(r["videos"]) for r in rows])
    table.add_row("mean score (95 %)", *[f"{r['mean_score']:.3f} ± {r['interval95']:.3f}" for r in rows])

    cells = [_paired_cells(r) for r in rows]
    for i, label in enumerate(("paired difference (95 %)", "paired videos", "prompts' mean score")):
        table.add_row(label, *[c[i] for c in cells])
    for name in CHECKS:
        table.add_row(name, *["n/a" if r["checks"][name] is None else f"{r['checks'][name]:.1%}" for r in rows])
    table.add_row("prompts failing every seed",
                  *["?" if r["fail_on_every_seed"] is None else f"{r['fail_on_every_seed']:.0%}" for r in rows])
    console.print(table)


def _paired_cells(row: dict) -> tuple[str, str, str]:
    """A result's paired difference, paired videos and prompts up/down, as table cells."""
    if "paired" not in row:
        return ("baseline",) * 3
    p = row["paired"]
    if p is None:
        return ("no common videos",) * 3
    return (f"{p['difference']:+.3f} ± {p['interval95']:.3f}{' (within noise)' if p['within_noise'] else ''}",
            str(p["videos"]), f"{p['prompts_up']} up, {p['prompts_down']} down of {p['prompts']}")
