"""CLI command: ``worldreel bench predict``, how well a model continues a clip it is shown.

    worldreel bench predict --model world-tiny --out DIR [--clips 6] [--suites default,holdout]
    worldreel bench predict --model M --out DIR --clips 12 --add      # resume, or grow to more clips
    worldreel bench predict --baselines-only --out DIR                # the baselines alone (no model)

Writes DIR/rows.jsonl (one line per clip, rewritten after each, with the settings it was
made with), DIR/predict.json (the summary), DIR/predict.png (error against horizon) and,
with a model, DIR/videos/SUITE-SEED.npz (the truth and the model's continuations).
``--add`` keeps the clips DIR already holds when made the same way (model, weights digest,
sampling options) and makes only the missing ones. See docs/predict.md.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from worldreel.errors import UserError


def _settings(model: Optional[str], cfg) -> dict:
    """What makes a clip's row what it is besides (suite, seed): recorded in each row for --add."""
    from worldreel.model_folder import weights_digest

    made_by = {"model": model, "weights": weights_digest(model)} if model is not None else {"model": None}
    return {**made_by, "seed": cfg.seed, "steps": cfg.steps, "guidance": cfg.guidance, "shift": cfg.shift}


def _kept(path: Path, settings: dict) -> list[dict]:
    if not path.is_file():
        return []
    from worldreel.atomic import BadLine, read_jsonl

    try:
        lines = read_jsonl(path)
    except BadLine as err:
        raise UserError(f"{path} line {err.number} is not JSON: cannot add to this folder", param="add") from None
    rows = []
    for n, row in lines:
        made = row.get("settings") if isinstance(row, dict) else row
        if made != settings:
            raise UserError(f"{path}: its clips were made otherwise (line {n}: {made}); add to a "
                            f"folder made the same way, or use a new --out", param="add")
        rows.append(row)
    return rows


def bench_predict(out: Path, model: Optional[str] = "world-tiny", baselines_only: bool = False, clips: int = 6,
                  suites: str = "default,holdout", seed_base: Optional[int] = None, seed: int = 0,
                  steps: Optional[int] = None, guidance: Optional[float] = None, shift: Optional[float] = None,
                  device: str = "cpu", add: bool = False) -> dict:
    """The whole command; returns the summary (also written as DIR/predict.json)."""
    from tqdm import tqdm

    from worldreel.atomic import write_json, write_text
    from worldreel.eval.predict import (
        GIVEN_FRAMES, HORIZON_SECONDS, SEED_BASE, PredictConfig, check_config, run_predict, summarize,
    )
    from worldreel.eval.predict_report import print_tables, write_plot
    from worldreel.pipelines.generate import check_sampling

    # 1. Every argument checked before any work.
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", param="out")
    cfg = check_config(PredictConfig(clips=clips, suites=tuple(s.strip() for s in suites.split(",") if s.strip()),
                                     seed_base=SEED_BASE if seed_base is None else seed_base, seed=seed,
                                     steps=steps, guidance=guidance, shift=shift))
    check_sampling(steps=steps, guidance=guidance, shift=shift)
    model = None if baselines_only else model
    rows_path = out / "rows.jsonl"
    settings = _settings(model, cfg)
    kept = _kept(rows_path, settings) if add else []
    if not add and rows_path.exists():
        raise UserError(f"{out} already holds a bench predict; use --add to resume or grow it, or a new --out",
                        param="out")
    generator = None
    if model is not None:
        from worldreel.pipelines.generate import Generator

        generator = Generator.load(model, device=device)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {(s, cfg.seed_base + k) for s in cfg.suites for k in range(cfg.clips)}
    kept = [r for r in kept if (r["suite"], r["seed"]) in wanted]
    if kept:
        print(f"{out}: kept {len(kept)} clips made the same way", file=sys.stderr)
    # 2. Every clip, saved as it is made (an interrupted bench resumes with --add).
    rows = list(kept)
    bar = tqdm(total=len(wanted) - len(kept), desc=model or "baselines", unit="clip", file=sys.stderr)

    def save(row: dict) -> None:
        row["settings"] = settings
        rows.append(row)
        write_text(rows_path, "".join(json.dumps(r) + "\n" for r in rows))

    start = time.perf_counter()
    run_predict(cfg, generator, keep=kept, on_row=save, progress=lambda done, total: bar.update(1),
                videos_dir=out / "videos" if generator is not None else None)
    bar.close()
    made = len(rows) - len(kept)
    seconds = time.perf_counter() - start
    # 3. Summary, table, figure.
    summary = summarize(rows)
    summary.update(benchmark="bench predict", version=1, settings=settings, config={
        "clips": cfg.clips, "suites": list(cfg.suites), "seed_base": cfg.seed_base, "given_frames": GIVEN_FRAMES,
        "horizon_seconds": HORIZON_SECONDS}, timing={"seconds_per_clip": round(seconds / made, 2) if made else None})
    write_json(out / "predict.json", summary)
    write_plot(summary, out / "predict.png")
    print_tables(summary)
    if made:
        print(f"seconds per clip: {seconds / made:.1f} (generation, baselines and scoring)")
    print(f"wrote {out / 'predict.json'}, {out / 'predict.png'} and {rows_path}")
    return summary


def register(groups) -> None:
    """Add ``bench predict`` to the CLI."""

    @groups["bench"].command("predict")
    def predict(
        out: Annotated[Path, typer.Option("--out", help="Folder for rows.jsonl, predict.json and predict.png.")],
        model: Annotated[str, typer.Option("--model", help="Model to continue the clips (name or folder).")] = "world-tiny",
        baselines_only: Annotated[bool, typer.Option("--baselines-only", help="Score the baselines alone (no model).")] = False,
        clips: Annotated[int, typer.Option("--clips", help="Held-out clips per suite.")] = 6,
        suites: Annotated[str, typer.Option("--suites", help="Scene suites, comma-separated: default, holdout.")] = "default,holdout",
        seed_base: Annotated[Optional[int], typer.Option("--seed-base", help="First scene seed (default 2^31: above every training seed).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Generation noise seed.")] = 0,
        steps: Annotated[Optional[int], typer.Option("--steps", help="Sampler steps (default: the model's).")] = None,
        guidance: Annotated[Optional[float], typer.Option("--guidance", help="Guidance scale with the caption (default: the model's).")] = None,
        shift: Annotated[Optional[float], typer.Option("--shift", help="Timestep shift (default: the model's).")] = None,
        device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
        add: Annotated[bool, typer.Option("--add", help="Keep --out's clips made the same way; make only the missing ones.")] = False,
    ) -> None:
        """Show a model the first second of held-out clips; score its next 3 s against the world's own."""
        bench_predict(out, model, baselines_only, clips, suites, seed_base, seed, steps, guidance, shift, device, add)
