"""CLI command: ``worldreel bench world``, world-bench on a folder, a model or the truth.

    worldreel bench world --videos DIR [--json OUT] [--report PNG]
    worldreel bench world --model world-tiny [--prompts FILE | --suite holdout] --seeds 3 --out DIR [--guidance-mode apg]
    worldreel bench world --truth [--prompts FILE] --seeds 2 --out DIR      # calibration
    worldreel bench world --truth --autoencoder world-tiny --seeds 2 --out DIR   # the autoencoder's ceiling
    worldreel bench compare OLD_DIR NEW_DIR      # side by side, paired difference (eval/compare.py)
    worldreel bench judge --model M --data DIR   # a judge's picks among recorded finalists (eval/judge_bench.py)

``--videos`` scores a folder that has ``captions.jsonl`` (prompts from its "caption"
field). ``--model`` first generates every prompt ``--seeds`` times (seeds seed-base ..
seed-base + K - 1) with ``Generator.load(model).generate(prompt, seed=...)``, writing
NNNNNN.mp4 and captions.jsonl into ``--out`` (captions.jsonl after every video);
``--add`` keeps the videos a folder already has when they were made the same way (model,
its weights digest and every sampling option: the "settings" each row records) and makes
only the missing (prompt, seed) pairs, so an interrupted bench resumes and a bench grows
to more seeds (``--seeds 16 --add`` on an 8-seed folder makes seeds 8-15 and scores all
16). ``--truth`` renders the world's own
realisation of each prompt instead (``scene_from_facts`` + ``render_clip``), which should
score about 1; with ``--autoencoder MODEL`` that truth is passed through the model's
autoencoder (encode, decode) first, which measures the ceiling the autoencoder sets on any
denoiser trained on its latents. Either way the folder is then scored. The JSON goes to ``--json``
(default DIR/worldbench.json) and the report figure next to it (same name, .png).
Prompts: a text file, one per line (blank lines and lines starting with # are skipped),
or a built-in suite (``--suite default|holdout``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from worldreel.cli.generate import SAMPLER_OPTIONS, with_options
from worldreel.errors import UserError

ALWAYS_RECORDED = ("steps", "guidance", "shift")  # sampler options every captions.jsonl row's settings holds, None included
TABLE_PROMPTS = 15  # the table lists at most this many failing prompts (the JSON has them all)
TABLE_FAILURES = 10  # ... and this many kinds of failure


def read_prompts(path: Optional[Path], suite: str) -> list[str]:
    """Prompts from a file (one per line) or a built-in suite; every one must parse."""
    from worldreel.data.captions import parse_caption
    from worldreel.eval import worldbench

    if path is None:
        if suite not in ("default", "holdout"):
            raise UserError(f"suite must be default or holdout, got {suite!r}", param="suite")
        prompts = worldbench.default_prompt_suite() if suite == "default" else worldbench.holdout_prompt_suite()
        where = [f"suite {suite} #{i + 1}" for i in range(len(prompts))]
    else:
        if not path.is_file():
            raise UserError(f"{path}: no such file", param="prompts")
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)]
        kept = [(n, line) for n, line in lines if line and not line.startswith("#")]
        if not kept:
            raise UserError(f"{path} has no prompts (one per line)", param="prompts")
        prompts, where = [line for _, line in kept], [f"{path} line {n}" for n, _ in kept]
    for text, place in zip(prompts, where):
        try:
            parse_caption(text)
        except UserError as err:
            raise UserError(f"{place}: {err.message}", param="prompts") from None
    return prompts


def _write_captions(out: Path, rows: list[dict]) -> None:
    from worldreel.atomic import write_text

    write_text(out / "captions.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def make_videos(out: Path, prompts: list[str], seeds: int, *, model: Optional[str], seed_base: int = 0,
                size: Optional[str] = None, seconds: Optional[float] = None, device: str = "cpu",
                rewrite: bool = True, autoencoder: Optional[str] = None, add: bool = False,
                precision: Optional[str] = None, **sampling) -> list[dict]:
    """Write one video per (prompt, seed) and captions.jsonl into ``out``.

    model None renders the truth (the world's realisation of each prompt), reconstructed by
    ``autoencoder``'s VAE when given; otherwise the named model generates, with the sampler
    options given in ``sampling`` (``Generator.generate``'s; None: the model's own). With ``add`` the
    videos already in ``out`` stay (they must have been made with the same settings) and only
    missing (prompt, seed) pairs are made. Returns the captions.jsonl rows.
    """
    from tqdm import tqdm

    from worldreel.data.captions import parse_caption
    from worldreel.data.facts import FPS, facts_to_dict
    from worldreel.data.video_io import write_video

    # 1. Check the arguments and load what makes the videos, before writing anything.
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}", param="seeds")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", param="out")
    if model is not None:
        from worldreel.pipelines.generate import check_sampling

        check_sampling(**sampling)
    elif precision is not None:
        raise UserError("--precision goes with --model (the truth is rendered, not computed)", param="precision")
    if model is None:
        from worldreel.cli.world import parse_size
        from worldreel.data.render import render_clip
        from worldreel.data.world import check_seconds, scene_from_facts

        wh = parse_size(size or "64x64")
        secs = check_seconds(4.0 if seconds is None else seconds)
        vae = None
        if autoencoder is not None:
            from worldreel.model_folder import load_vae

            vae = load_vae(autoencoder, device=device)
    else:
        try:
            from worldreel.pipelines.generate import Generator
        except ImportError as err:
            raise UserError(f"generating with a model needs worldreel.pipelines.generate ({err})", param="model") from None
        generator = Generator.load(model, device=device, precision=precision or "fp32")
    settings = _settings(model, autoencoder, size=size, seconds=seconds, rewrite=rewrite,
                         **{name: sampling.get(name) for name in ALWAYS_RECORDED})
    # The other options are recorded only when given, so folders made before they existed
    # (with the model's own values) can still be added to.
    settings.update({k: v for k, v in {"precision": precision, **sampling}.items()
                     if v is not None and k not in ALWAYS_RECORDED})
    rows = _kept_rows(out, settings) if add else []
    out.mkdir(parents=True, exist_ok=True)
    # 2. One video per prompt and seed, captions.jsonl rewritten after each (an interrupted bench resumes with --add).
    have = {(row["caption"], row["seed"]) for row in rows}
    jobs = [(p, seed_base + k) for p in range(len(prompts)) for k in range(seeds) if (prompts[p], seed_base + k) not in have]
    first = 1 + max((int(Path(row["file"]).stem) for row in rows if Path(row["file"]).stem.isdigit()), default=-1)
    if add and rows:
        print(f"{out}: kept {len(rows)} videos made the same way; making {len(jobs)} more", file=sys.stderr)
    for index, (p, seed) in enumerate(tqdm(jobs, desc="truth" if model is None else model, unit="video", file=sys.stderr),
                                      start=first):
        prompt = prompts[p]
        facts = parse_caption(prompt)
        row = {"file": f"{index:06d}.mp4", "caption": prompt, "facts": facts_to_dict(facts), "seed": seed, "prompt_index": p,
               "settings": settings}
        if model is None:
            scene = scene_from_facts(facts, seed, size=wh, seconds=secs)
            frames, fps = render_clip(scene), FPS
            row.update(size=list(wh), seconds=secs, source="truth")
            if vae is not None:
                frames = _through(vae, frames)
                row.update(source="truth through autoencoder", autoencoder=autoencoder)
            if scene.notes:
                row["notes"] = list(scene.notes)
        else:
            video = generator.generate(prompt, seconds=seconds, size=size, seed=seed, rewrite=rewrite, **sampling)
            frames, fps = video.frames, video.fps
            row.update(size=list(video.size), seconds=video.seconds, model=model, model_prompt=video.model_prompt,
                       sampling=video.sampling)
        write_video(out / row["file"], frames, fps)
        rows.append(row)
        _write_captions(out, rows)
    _write_captions(out, rows)
    return rows


def _settings(model: Optional[str], autoencoder: Optional[str], **options) -> dict:
    """What makes a (prompt, seed) video what it is, besides the two: the model and the
    digest of its weights (or the truth, and the autoencoder it went through) and every option
    as asked (None: the model's default). Recorded in each captions.jsonl row for --add."""
    from worldreel.model_folder import weights_digest

    made_by = {"model": model, "weights": weights_digest(model)} if model is not None else {
        "truth": True, "autoencoder": autoencoder, "weights": weights_digest(autoencoder) if autoencoder else None}
    return {**made_by, **options}


def _kept_rows(out: Path, settings: dict) -> list[dict]:
    """The captions.jsonl rows of ``out`` whose video exists, when all were made with ``settings``."""
    from worldreel.eval.report import read_captions

    if not (out / "captions.jsonl").is_file():
        return []
    try:
        rows = read_captions(out)
    except UserError as err:
        raise UserError(f"{err.message}: cannot add to this folder", param="add") from None
    for n, row in enumerate(rows, 1):
        made = row.get("settings")
        if made != settings or "seed" not in row:
            differ = sorted(k for k in set(settings) | set(made or {}) if (made or {}).get(k) != settings.get(k))
            why = ("were made before rows recorded their settings" if made is None
                   else f"differ in {', '.join(differ)}" if differ else "lack a seed")
            raise UserError(f"{out}: its videos {why} (video {n} of captions.jsonl); add to a folder made the "
                            f"same way, or use a new --out", param="add")
    return [row for row in rows if (out / row["file"]).is_file()]


def _through(vae, frames):
    """uint8 (F, H, W, 3) -> encoded and decoded by ``vae`` -> uint8 (F, H, W, 3)."""
    from worldreel.data.video_io import to_frames, to_tensor
    from worldreel.eval.vae_bench import reconstruct

    device = next(vae.parameters()).device
    video = to_tensor(frames)[None].to(device)  # (1, 3, F, H, W)
    return to_frames(reconstruct(vae, video)[0])  # (3, F, H, W) in [-1, 1] -> (F, H, W, 3)


def print_table(result: dict, console=None) -> None:
    """Per-check pass rates, the mean score, the prompts that failed and the commonest kinds of failure, as rich tables."""
    from rich.console import Console
    from rich.table import Table

    from worldreel.eval.worldbench import CHECKS

    console = console or Console()
    checks = Table(title=f"world-bench: {result['n_videos']} videos, mean score {result['mean_score']:.3f}")
    checks.add_column("check")
    checks.add_column("pass rate", justify="right")
    checks.add_column("videos judged", justify="right")
    for name in CHECKS:
        rate = result["checks"][name]
        checks.add_row(name, "n/a" if rate is None else f"{rate:.1%}", str(result["applicable"][name]))
    console.print(checks)
    spread = result["spread"]
    if spread["prompts_with_several_videos"]:
        console.print(
            f"spread over seeds: {spread['fail_on_some_seed']:.1%} of {spread['prompts_with_several_videos']} prompts "
            f"fail on some seed, {spread['fail_on_every_seed']:.1%} on every seed"
        )
    failing = sorted(
        ((p, v) for p, v in result["prompts"].items() if v["min_score"] < 1), key=lambda pv: (pv[1]["mean_score"], pv[0])
    )
    if failing:
        table = Table(title=f"prompts that fail ({len(failing)} of {len(result['prompts'])})")
        table.add_column("prompt")
        table.add_column("videos", justify="right")
        table.add_column("mean", justify="right")
        table.add_column("failed checks")
        for prompt, v in failing[:TABLE_PROMPTS]:
            table.add_row(prompt, str(len(v["videos"])), f"{v['mean_score']:.2f}", ", ".join(v["failed_checks"]))
        console.print(table)
    kinds = result.get("failures") or []
    if kinds:
        table = Table(title=f"most common failures ({len(kinds)} kinds; numbers and colours left out)")
        table.add_column("videos", justify="right")
        table.add_column("check")
        table.add_column("reason")
        for kind in kinds[:TABLE_FAILURES]:
            table.add_row(str(kind["videos"]), kind["check"], kind["reason"])
        console.print(table)
    if result["skipped"]:
        console.print(f"skipped {len(result['skipped'])} videos (see 'skipped' in the JSON)")


def bench_world(videos: Optional[Path] = None, model: Optional[str] = None, truth: bool = False,
                prompts: Optional[Path] = None, suite: str = "default", seeds: int = 1, seed_base: int = 0,
                out: Optional[Path] = None, json_out: Optional[Path] = None, report: Optional[Path] = None,
                no_report: bool = False, size: Optional[str] = None, seconds: Optional[float] = None,
                device: str = "cpu", rewrite: bool = True, autoencoder: Optional[str] = None, add: bool = False,
                precision: Optional[str] = None, **sampling) -> dict:
    """The whole command; returns the result dict (also written as JSON). ``sampling``: the
    sampler options for --model (``Generator.generate``'s; None: the model's own)."""
    from worldreel.eval.report import score_folder, write_json, write_report

    # 1. Exactly one source of videos, and every argument checked before any work.
    sources = [name for name, given in (("--videos", videos is not None), ("--model", model is not None), ("--truth", truth)) if given]
    if len(sources) != 1:
        raise UserError("give exactly one of --videos DIR, --model NAME or --truth", param="videos")
    if add and videos is not None:
        raise UserError("--add makes the missing videos of a --model or --truth folder; --videos only scores",
                        param="add")
    if autoencoder is not None and not truth:
        raise UserError("--autoencoder goes with --truth (the truth reconstructed by a model's autoencoder)",
                        param="autoencoder")
    if videos is not None:
        if not videos.is_dir():
            raise UserError(f"{videos}: not a folder", param="videos")
        folder = videos
    else:
        if out is None:
            raise UserError("--model and --truth write their videos to --out DIR", param="out")
        prompt_list = read_prompts(prompts, suite)
        folder = out
    json_out = json_out or folder / "worldbench.json"
    if json_out.suffix.lower() != ".json":
        raise UserError(f"{json_out}: the result file must end in .json", param="json")
    report = None if no_report else (report or json_out.with_suffix(".png"))
    if report is not None and report.suffix.lower() != ".png":
        raise UserError(f"{report}: the report must end in .png", param="report")
    # 2. Make the videos when asked, then score the folder.
    import time

    made = None
    if videos is None:
        start = time.perf_counter()
        rows = make_videos(out, prompt_list, seeds, model=model, seed_base=seed_base, size=size, seconds=seconds,
                           device=device, rewrite=rewrite, autoencoder=autoencoder, add=add, precision=precision,
                           **sampling)
        made = time.perf_counter() - start
    start = time.perf_counter()
    result = score_folder(folder, progress=True)
    scored = time.perf_counter() - start
    if not result["n_videos"]:
        raise UserError(f"{folder}: no video could be scored ({len(result['skipped'])} skipped)", param="videos")
    result["source"] = {"videos": str(folder), "model": model, "truth": truth, "autoencoder": autoencoder}
    if model is not None:  # one for all: --add keeps only videos made the same way
        result["source"]["sampling"] = rows[0]["sampling"]
        result["source"]["weights"] = rows[0]["settings"]["weights"]  # which weights, when two models share a name
    n = result["n_videos"]
    result["timing"] = {"make_seconds_per_video": None if made is None else round(made / n, 3),
                        "score_seconds_per_video": round(scored / n, 4)}
    write_json(result, json_out)
    print_table(result)
    print(f"seconds per video: {'' if made is None else f'making {made / n:.2f}, '}scoring {scored / n:.3f} "
          f"(reading and decoding included)")
    print(f"wrote {json_out}")
    if report is not None:
        write_report(result, folder, report)
        print(f"wrote {report}")
    return result


def bench_compare(results: list[Path], json_out: Optional[Path] = None) -> dict:
    """``bench compare``: world-bench results side by side, the first the baseline."""
    from worldreel.eval.compare import compare, print_comparison, read_result
    from worldreel.eval.report import write_json

    if json_out is not None and json_out.suffix.lower() != ".json":
        raise UserError(f"{json_out}: the comparison file must end in .json", param="json")
    comparison = compare([(str(path), read_result(path)) for path in results])
    print_comparison(comparison)
    if json_out is not None:
        write_json(comparison, json_out)
        print(f"wrote {json_out}")
    return comparison


def register(groups) -> None:
    """Add ``bench world``, ``bench compare`` and ``bench judge`` to the CLI."""

    @groups["bench"].command("compare")
    def compare_cmd(
        results: Annotated[list[Path], typer.Argument(help="world-bench results (worldbench.json or its folder); the first is the baseline.")],
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the comparison as JSON.")] = None,
    ) -> None:
        """Compare world-bench results: mean scores with 95 % intervals and the paired difference per (prompt, seed)."""
        bench_compare(results, json_out)

    @groups["bench"].command("judge")
    def judge_cmd(
        model: Annotated[str, typer.Option("--model", help="The model (folder) whose judge reads the finalists; it made them.")],
        data: Annotated[list[str], typer.Option("--data", help="A judge-data folder (train judge-data, usually --suite default|holdout); repeatable.")],
        weights: Annotated[str, typer.Option("--weights", help="Judge weights to compare, comma-separated (sampling judge).")] = "0.5,1,2,4",
        out: Annotated[Optional[Path], typer.Option("--out", help="Folder for judge.json and a world-bench JSON per rule (for bench compare).")] = None,
    ) -> None:
        """How the model's judge would pick among the finalists: each rule's world-bench result, exactly, without making a video."""
        from worldreel.eval.judge_bench import bench_judge, print_table

        try:
            values = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            raise UserError(f"weights must be numbers separated by commas, got {weights!r}", param="weights") from None
        summary = bench_judge(model, data, values, out)
        print_table(summary)
        if out is not None:
            print(f"wrote {out / 'judge.json'} and a world-bench JSON per rule "
                  f"(bench compare {out}/sampler {out}/judge-{values[0]:g})")

    @groups["bench"].command("world")
    @with_options(SAMPLER_OPTIONS, into="sampling")
    def world(
        videos: Annotated[Optional[Path], typer.Option("--videos", help="Score this folder (videos + captions.jsonl).")] = None,
        model: Annotated[Optional[str], typer.Option("--model", help="Generate with this model (name or folder), then score.")] = None,
        truth: Annotated[bool, typer.Option("--truth", help="Render the world's truth for the prompts, then score (calibration).")] = False,
        prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Prompts file, one per line (default: --suite).")] = None,
        suite: Annotated[str, typer.Option("--suite", help="Built-in prompts when --prompts is not given: default or holdout.")] = "default",
        seeds: Annotated[int, typer.Option("--seeds", help="Videos per prompt (seeds seed-base .. seed-base+K-1).")] = 1,
        seed_base: Annotated[int, typer.Option("--seed-base", help="First seed.")] = 0,
        out: Annotated[Optional[Path], typer.Option("--out", help="Folder for generated videos (--model, --truth).")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Result JSON (default DIR/worldbench.json).")] = None,
        report: Annotated[Optional[Path], typer.Option("--report", help="Report PNG (default: next to the JSON).")] = None,
        no_report: Annotated[bool, typer.Option("--no-report", help="Skip the report figure.")] = False,
        size: Annotated[Optional[str], typer.Option("--size", help="WxH for generated videos (model default if omitted).")] = None,
        seconds: Annotated[Optional[float], typer.Option("--seconds", help="Length of generated videos.")] = None,
        device: Annotated[str, typer.Option("--device", help="Device for --model: cpu, cuda, ...")] = "cpu",
        precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16 or auto for --model (default fp32: the weights as trained; generate defaults to auto).")] = None,
        no_rewrite: Annotated[bool, typer.Option("--no-rewrite", help="Give the model the prompt as written.")] = False,
        autoencoder: Annotated[Optional[str], typer.Option("--autoencoder", help="With --truth: pass the truth through this model's autoencoder (its ceiling).")] = None,
        add: Annotated[bool, typer.Option("--add", help="Keep --out's videos made the same way; make only missing (prompt, seed) pairs (resume, or more seeds).")] = False,
        sampling: Optional[dict] = None,
    ) -> None:
        """world-bench: does each video follow its prompt and obey the reel world's physics?

        With --model, the sampler options (--steps to --likelihood) set how it generates; each left out is the model's own."""
        bench_world(videos, model, truth, prompts, suite, seeds, seed_base, out, json_out, report, no_report, size,
                    seconds, device, not no_rewrite, autoencoder, add, precision, **sampling)
