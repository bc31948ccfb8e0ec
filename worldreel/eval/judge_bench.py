"""``worldreel bench judge``: how a judge would pick among a model's finalists, measured exactly.

    worldreel bench judge --model M --data DIR [--weights 0.5,1,2] [--out RESULTS]

A judge-data folder (``train judge-data``) holds every finalist the sampler made for each
(prompt, seed), with the sampler's readings and world-bench's verdicts on each finalist's video
as bench world scores it (written as its MP4 and read back). Reading the finalists again with the
model's judge changes only which finalist is kept, not the finalists (the judge draws no noise),
so the score of a run with ``--judge W`` is known without making a video: it is the verdict of
the finalist that ``steer.pick_finalist`` keeps with the judge's reading added. On a folder made
from a world-bench suite (``train judge-data --suite default --seeds 16``) that is bench world's
result, video for video, for the sampler as recorded and for each judge weight; each is written
as a world-bench JSON (``RESULTS/<rule>/worldbench.json``) for ``bench compare``.

Rules compared: the sampler as recorded (the folder's sampling settings), the judge added at
each weight, the judge alone, and two references no sampler can reach or would want: the best
finalist (the ceiling of any reader of these finalists) and the mean of all (one at random).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from worldreel.errors import UserError

Z95 = 1.96


def judge_readings(model: str, data) -> list[float]:
    """The model folder's judge's expected score of every finalist in ``data`` (``train.judge.Finalists``)."""
    from worldreel.diffusion.judge import read_judge_all
    from worldreel.model_folder import JUDGE_FILE, find, load_judge
    from worldreel.train.judge import check_made_by, judge_inputs

    folder = find(model)
    if not (folder / JUDGE_FILE).is_file():
        raise UserError(f"{model} has no judge ({JUDGE_FILE}); train one with worldreel train judge and pack it with "
                        "--judge", param="model")
    check_made_by(data, model)
    return read_judge_all(load_judge(folder / JUDGE_FILE), *judge_inputs(data, model, data.info.get("precision") or "auto"))


def as_result(data, chosen: list[int]) -> dict:
    """The world-bench result (``eval.report.summarize``) of the videos ``chosen`` (one row per group)."""
    from worldreel.eval.report import summarize
    from worldreel.eval.worldbench import CheckResult, VideoScore

    scores, rows = {}, {}
    for g, row in enumerate(chosen):
        file = f"{g:06d}"
        scores[file] = VideoScore(score=float(data.scores[row]), observation=None,
                                  checks={n: CheckResult(status, data.reasons[row].get(n, ""))
                                          for n, status in data.checks[row].items()})
        rows[file] = {"caption": data.captions[g], "seed": data.seeds[g]}
    return summarize(scores, rows)


def _source(data, model: str, rule: str, folders: list[str]) -> dict:
    """A rule's world-bench "source": for the sampler as recorded and the sampler with the judge
    at a weight, the settings and weights a bench world run of them would record (the replay
    makes its videos exactly), so ``train pack --bench`` can check them like any result."""
    from worldreel.model_folder import weights_digest

    source = {"videos": None, "model": model, "truth": False, "autoencoder": None, "replayed_from": folders, "rule": rule}
    sampling, weights = dict(data.info.get("sampling") or {}), dict(data.info.get("weights") or {})
    if rule == "sampler":  # the model that made the finalists, as it sampled them
        return {**source, "model": data.info.get("model", model), "sampling": sampling, "weights": weights}
    if rule.startswith("judge ") and rule != "judge alone":
        weights["judge"] = weights_digest(model).get("judge")
        return {**source, "sampling": {**sampling, "judge": float(rule.split()[1])}, "weights": weights}
    return source


def bench_judge(model: str, folders: list[str], weights: list[float], out: Path | None = None) -> dict:
    """The whole command; returns the table (also in RESULTS/judge.json when ``out``)."""
    from worldreel.eval.report import write_json
    from worldreel.train.judge import picks, read_finalists

    if not weights or any(not (isinstance(w, (int, float)) and 0 < w <= 1000) for w in weights):
        raise UserError(f"weights must be numbers above 0 (at most 1000), got {weights}", param="weights")
    folders = [str(f) for f in folders]
    data = read_finalists(folders, training=False)
    judged = judge_readings(model, data)
    rules = picks(data, judged, weights)
    scores = data.scores.tolist()
    base = np.array([scores[r] for r in rules["sampler"]])
    table = []
    for name, chosen in rules.items():
        result = as_result(data, chosen)
        diff = np.array([scores[r] for r in chosen]) - base
        half = Z95 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
        table.append({"rule": name, "mean_score": result["mean_score"], "paired": round(float(diff.mean()), 4),
                      "interval95": round(float(half), 4), "checks": result["checks"],
                      "fail_on_every_seed": result["spread"]["fail_on_every_seed"],
                      "same_as_sampler": round(float(np.mean([a == b for a, b in zip(chosen, rules["sampler"])])), 4)})
        if out is not None:
            result["source"] = _source(data, model, name, folders)
            write_json(result, Path(out) / name.replace(" ", "-") / "worldbench.json")
    table.append({"rule": "one at random", "mean_score": round(float(np.mean([np.mean(scores[r]) for r in data.groups])), 4)})
    summary = {"benchmark": "bench judge", "model": model, "data": folders,
               "source": data.info.get("source"), "groups": len(data.groups), "finalists": len(data.scores),
               "table": table}
    if out is not None:
        write_json(summary, Path(out) / "judge.json")
    return summary


def print_table(summary: dict) -> None:
    from worldreel.eval.worldbench import CHECKS

    print(f"{summary['groups']} videos ({summary['finalists']} finalists) of {', '.join(summary['data'])}")
    head = f"{'rule':<16} {'score':>6} {'paired vs sampler':>20} {'same':>5} " + " ".join(f"{c[:5]:>6}" for c in CHECKS) + \
        f" {'fail-all':>8}"
    print(head)
    for row in summary["table"]:
        if "paired" not in row:
            print(f"{row['rule']:<16} {row['mean_score']:>6.3f}")
            continue
        rates = [row["checks"][c] for c in CHECKS]
        checks = " ".join(f"{'-' if r is None else format(100 * r, '.1f'):>6}" for r in rates)
        fails = row["fail_on_every_seed"]
        print(f"{row['rule']:<16} {row['mean_score']:>6.3f} {row['paired']:>+10.3f} ± {row['interval95']:<7.3f} "
              f"{100 * row['same_as_sampler']:>4.0f}% {checks} {'-' if fails is None else f'{100 * fails:.1f}%':>8}")
