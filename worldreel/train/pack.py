"""Pack a trained autoencoder and denoiser into one model folder, with its model card.

    worldreel train pack --vae runs/world-tiny/vae --dit runs/world-tiny/dit --out runs/world-tiny/model \
        [--bench runs/world-tiny/bench/worldbench.json] [--holdout-bench .../worldbench.json] \
        [--ceiling-bench ...] [--previous-bench OLD/worldbench.json] [--previous-holdout-bench ...]

The two are trained apart (``worldreel train vae``, then ``train cache`` and ``train dit``),
so each run exports a half model: the autoencoder run's ``model/`` has the trained
``vae.safetensors`` and the *measured* latent statistics in config.json's "vae" section; the
denoiser run's ``model/`` has ``dit.safetensors`` and the "dit" and "text" sections. The
complete folder takes the "vae" section and weights from the first, the rest from the second,
and the stage records of each (training.json): the card is written from those and from
world-bench results, never typed by hand. ``--vae`` and ``--dit`` may also name packed models.

A denoiser is only right for the autoencoder whose latents it learnt: when the denoiser
trained on a latent cache, the cache's recorded autoencoder config (latent statistics
included) must equal the one being packed, or the pack is refused. A world-bench result must
have been made with the sampler settings the folder writes and, when it recorded the digest
of its weights, on the very weights written.
"""
from __future__ import annotations

import json
from pathlib import Path

from worldreel.config import apply_overrides, from_dict, to_dict
from worldreel.errors import UserError
from worldreel.atomic import write_bytes
from worldreel.model_folder import (DIT_FILE, JUDGE_FILE, PROBE_FILE, VAE_FILE, StageRecord, file_digest, find_part,
                                    half_state, load_judge, load_probe, load_weights, read_config_data, read_json, read_stages,
                                    save_model, state_digest)
from worldreel.presets import ModelConfig, SamplingDefaults
from worldreel.train.card import model_card


def vae_differences(cache_info: dict, vae_section: dict) -> list[str]:
    """The autoencoder config keys in which a latent cache's recorded autoencoder (cache.json's
    "meta" "vae") differs from ``vae_section``; none when they agree or the cache records none."""
    cached = (cache_info.get("meta") or {}).get("vae")
    vae_section = json.loads(json.dumps(vae_section))  # as it reads back from JSON (tuples become lists)
    if cached is None or cached == vae_section:
        return []
    return sorted(k for k in set(cached) | set(vae_section) if cached.get(k) != vae_section.get(k))


def _check_cache_matches(stage: StageRecord, vae_section: dict) -> str | None:
    """The latent cache the denoiser trained on, after checking it was made by this autoencoder."""
    if not stage.data or stage.data == "world":
        return None
    index = read_json(Path(stage.data) / "cache.json")
    if not isinstance(index, dict):
        return stage.data  # the cache is gone (e.g. packed on another machine): nothing to compare
    differ = vae_differences(index, vae_section)
    if differ:
        raise UserError(f"the denoiser trained on latents of another autoencoder than --vae (cache {stage.data} differs "
                        f"in {', '.join(differ)}); pack it with the autoencoder that made its cache", param="vae")
    return stage.data


def _same_sampling(used: dict, sampling) -> bool:
    """Whether a result's recorded settings are ``sampling``. A key it lacks was recorded before
    the setting existed and had its default value; the interval matters only to its mode."""
    want = json.loads(json.dumps(to_dict(sampling)))  # tuples as the lists JSON holds
    default = json.loads(json.dumps(to_dict(SamplingDefaults())))
    if want["guidance_mode"] != "interval":
        want.pop("guidance_interval")
    return all(used.get(k, default[k]) == v for k, v in want.items())


def _with_sampling(config: ModelConfig, items: list[str]) -> ModelConfig:
    """``config`` with its "sampling" section set from ``KEY=VALUE`` items, each value checked."""
    from worldreel.pipelines.generate import check_sampling

    keys = set(to_dict(config.sampling))
    for item in items:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or key not in keys:
            raise UserError(f"--sampling {item!r}: give KEY=VALUE with KEY one of {sorted(keys)}", param="sampling")
    config = apply_overrides(config, [f"sampling.{item.strip()}" for item in items])
    sc = config.sampling
    try:  # the bounds a call's own settings get (pipelines/generate.py)
        check_sampling(**to_dict(sc))
    except UserError as err:
        raise UserError(f"--sampling: {err.message}", param="sampling") from None
    return config


def _stages(folder: Path, part: str, run: Path) -> list[StageRecord]:
    """The ``part`` stage records of a half model; a folder from before records were kept gets
    one bare record naming its run, so the card still has a row for it."""
    return read_stages(folder, part) or [StageRecord(part=part, run=str(run), command=f"(not recorded: {run})")]


def pack_model(vae_run: str | Path, dit_run: str | Path, out: str | Path, *, bench: str | Path | None = None,
               holdout_bench: str | Path | None = None, ceiling_bench: str | Path | None = None,
               previous_bench: str | Path | None = None, previous_holdout_bench: str | Path | None = None,
               sampling: list[str] | None = None, predict: str | Path | None = None,
               previous_predict: str | Path | None = None, probe: str | Path | None = None,
               judge: str | Path | None = None) -> Path:
    """Write a complete model folder at ``out`` from an autoencoder run and a denoiser run (or model folders).

    The world-bench JSONs fill the card's scores; ``previous_*`` are the same suites measured on
    the model this one replaces, for a "before -> now" line (new weights ship only when it is up).
    ``predict`` (and ``previous_predict``) are ``bench predict`` JSONs for the card's Prediction section.
    ``probe`` is a state probe file (``train probe``) trained against this denoiser, copied in as
    probe.safetensors: what ``sampling.steer`` and ``sampling.best_of`` need. ``judge`` is a judge
    file (``train judge``) trained on this denoiser's finalists read by that probe, copied in as
    judge.safetensors: what ``sampling.judge`` needs.
    ``sampling`` items ``KEY=VALUE`` set config.json's "sampling" section (the sampler settings the
    model generates with by default); a world-bench JSON that recorded other settings is an error.
    """
    vae_run, dit_run, out = Path(vae_run), Path(dit_run), Path(out)
    # 1. The two half models and their stage records.
    vae_folder, dit_folder = find_part(vae_run, "vae", "vae"), find_part(dit_run, "dit", "dit")
    vae_section = read_config_data(vae_folder).get("vae")
    if not isinstance(vae_section, dict):
        raise UserError(f"{vae_folder / 'config.json'} has no 'vae' section", param="vae")
    config = from_dict(ModelConfig, {**read_config_data(dit_folder), "vae": vae_section})
    config = _with_sampling(config, sampling or [])
    if config.dit.in_channels != config.vae.latent_channels:
        raise UserError(f"the denoiser takes {config.dit.in_channels} latent channels but the autoencoder makes "
                        f"{config.vae.latent_channels}", param="vae")
    probe_net = None if probe is None else load_probe(Path(probe), param="probe")  # its tensors fit its layout
    for name, on in (("steer", config.sampling.steer), ("best_of", config.sampling.best_of > 1)):
        if on and probe is None:
            raise UserError(f"--sampling {name} needs --probe FILE (a state probe trained against this denoiser, "
                            "train probe)", param="probe")
    judge_net = None if judge is None else load_judge(Path(judge), param="judge")
    if judge is not None and probe is None:
        raise UserError("--judge needs --probe FILE: the judge reads the finalists, which the probe picks", param="judge")
    if config.sampling.judge and judge is None:
        raise UserError("--sampling judge needs --judge FILE (a judge trained on this denoiser's finalists, train judge)",
                        param="judge")
    vae_stages, dit_stages = _stages(vae_folder, "vae", vae_run), _stages(dit_folder, "dit", dit_run)
    trained = next((s for s in reversed(dit_stages) if s.data), dit_stages[-1])  # an average has no data of its own
    cache = _check_cache_matches(trained, to_dict(config.vae))
    results = []  # the five world-bench results, in this order (None where not given)
    for path, param in ((bench, "bench"), (holdout_bench, "holdout_bench"), (ceiling_bench, "ceiling_bench"),
                        (previous_bench, "previous_bench"), (previous_holdout_bench, "previous_holdout_bench")):
        data = None
        if path is not None:
            data = read_json(Path(path))
            if not isinstance(data, dict) or "mean_score" not in data:
                raise UserError(f"{path} is not a world-bench result (worldbench.json)", param=param)
            used = (data.get("source") or {}).get("sampling") if param in ("bench", "holdout_bench") else None
            if used and not _same_sampling(used, config.sampling):
                raise UserError(f"{path} was sampled with {used}, not with this model's settings "
                                f"{to_dict(config.sampling)} (set them with --sampling KEY=VALUE)", param=param)
        results.append(data)
    predictions = []  # bench predict results: this model's, the replaced model's (None where not given)
    for path, param in ((predict, "predict"), (previous_predict, "previous_predict")):
        data = None
        if path is not None:
            data = read_json(Path(path))
            if not isinstance(data, dict) or data.get("benchmark") != "bench predict" or "table" not in data:
                raise UserError(f"{path} is not a bench predict result (predict.json)", param=param)
        predictions.append(data)
    # 2. The weights, loaded strictly (a mismatch is an error, not a silent partial load).
    from worldreel.models.dit import DiT
    from worldreel.models.vae import VideoVAE

    vae, dit = VideoVAE(config.vae), DiT(config.dit)
    load_weights(vae, vae_folder / VAE_FILE, "vae")
    load_weights(dit, dit_folder / DIT_FILE, "dit")
    written: dict[str, str] = {}  # the digests of the weights this pack writes, made once when first needed

    def digests() -> dict[str, str]:  # (serialising the weights takes a while)
        if not written:
            written.update(vae=state_digest(half_state(vae)), dit=state_digest(half_state(dit)))
            if probe is not None:
                written["probe"] = file_digest(Path(probe))
            if judge is not None:
                written["judge"] = file_digest(Path(judge))
        return written

    if probe_net is not None and probe_net.info.get("dit") != digests()["dit"]:
        raise UserError(f"{probe} was trained against denoiser weights {probe_net.info.get('dit')}, not the ones this pack "
                        f"writes ({digests()['dit']}): train a probe for them (train probe)", param="probe")
    if judge_net is not None and (judge_net.info.get("dit"), judge_net.info.get("vae")) != \
            (digests()["dit"], digests()["vae"]):
        raise UserError(f"{judge} was trained on the finalists of denoiser {judge_net.info.get('dit')} decoded by "
                        f"autoencoder {judge_net.info.get('vae')}, not this pack's ({digests()['dit']}, {digests()['vae']}): "
                        "train a judge for them (train judge-data, train judge)", param="judge")
    # The card's own scores must have been measured on exactly the weights it is packed with
    # (digests made only when a result recorded one). A result made before a probe existed
    # names no probe (it was not steered: its sampling matched).
    for data, path, param in ((results[0], bench, "bench"), (results[1], holdout_bench, "holdout_bench"),
                              (predictions[0], predict, "predict")):
        source = (data or {}).get("settings" if param == "predict" else "source") or {}
        measured = source.get("weights")
        if measured:
            expected = {k: v for k, v in digests().items() if k not in ("probe", "judge") or k in measured}
            if measured != expected:
                raise UserError(f"{path} was measured on weights {measured}, not on the ones this pack writes "
                                f"{digests()}", param=param)
    # 3. The folder, its card and the stage records of both parts.
    scores, holdout_scores, ceiling_scores, previous_scores, previous_holdout_scores = results
    card = model_card(config, vae, dit, vae_stages, dit_stages, cache, scores, holdout_scores, ceiling_scores,
                      previous=previous_scores, holdout_previous=previous_holdout_scores,
                      predict=predictions[0], previous_predict=predictions[1], probe=probe_net,
                      judge=judge_net)
    folder = save_model(out, config, vae, dit, card=card, stages=vae_stages + dit_stages)
    for name, given in ((PROBE_FILE, probe), (JUDGE_FILE, judge)):  # the readers: copied in
        if given is not None:
            if Path(given).resolve() != (folder / name).resolve():
                write_bytes(folder / name, Path(given).read_bytes())
        elif (folder / name).exists():
            (folder / name).unlink()  # a reader left from an earlier pack belongs to other weights
    return folder
