"""worldreel train pack: two half models become one complete folder with a model card, written
from the stage records each half carries."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from worldreel.errors import UserError
from worldreel.model_folder import StageRecord, load_model, read_stages, write_stages
from worldreel.train.card import _bench_lines, _change_line, commands
from worldreel.train.pack import pack_model


def _runs(tmp_path, tiny_folder, *, cache_vae=None):
    """An autoencoder run and a denoiser run as the trainer leaves them: model/ with its stage record."""
    full = tiny_folder("full", seed=3)
    config = json.loads((full / "config.json").read_text())
    config["vae"]["latent_shift"] = [0.5] * 16  # measured statistics: only the autoencoder run has them
    config["vae"]["latent_scale"] = [2.0] * 16
    vae_run, dit_run, cache = tmp_path / "vae", tmp_path / "dit", tmp_path / "cache"
    for run, part, cfg in ((vae_run, "vae", config), (dit_run, "dit", json.loads((full / "config.json").read_text()))):
        (run / "model").mkdir(parents=True)
        shutil.copy(full / f"{part}.safetensors", run / "model")
        (run / "model" / "config.json").write_text(json.dumps(cfg))
    write_stages(vae_run / "model", [StageRecord(
        part="vae", run=str(vae_run), command=f"worldreel train vae --preset world-micro --out {vae_run} --steps 3000",
        steps=3000, batch_size=8, train_seconds=1800.0, loss=0.1, evals={"step": 3000, "psnr": 31.5, "ssim": 0.97},
        data="world")])
    cache_command = f"worldreel train cache --model {vae_run}/model --out {cache} --count 300"
    write_stages(dit_run / "model", [StageRecord(
        part="dit", run=str(dit_run), steps=4000, batch_size=32, train_seconds=5400.0, loss=0.5,
        command=f"worldreel train dit --preset world-micro --out {dit_run} --data {cache} --set train.lr=0.0007",
        data=str(cache), data_command=cache_command)])
    cache.mkdir()
    (cache / "cache.json").write_text(json.dumps({"meta": {"vae": cache_vae or config["vae"]}}))
    return vae_run, dit_run, config


def _commands(folder):
    return [line for line in (folder / "README.md").read_text().splitlines() if line.startswith("worldreel train")]


def test_pack_joins_the_autoencoder_statistics_with_the_denoiser(tmp_path, tiny_folder):
    vae_run, dit_run, config = _runs(tmp_path, tiny_folder)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"n_videos": 96, "mean_score": 0.875, "checks": {"presence": 0.9, "gravity": None},
                                 "spread": {"prompts_with_several_videos": 24, "fail_on_some_seed": 0.25,
                                            "fail_on_every_seed": 0.05}}))
    ceiling = tmp_path / "ceiling.json"
    fail = {"status": "fail", "reason": "the red box vanishes after frame 3"}
    ceiling.write_text(json.dumps({"n_videos": 48, "mean_score": 0.5, "checks": {"camera": 0.0},  # older: no "failures"
                                   "videos": {"a.mp4": {"checks": {"permanence": fail}}}}))
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({"n_videos": 96, "mean_score": 0.8, "source": {"model": "runs/old", "weights": {"dit": "0123456789ab", "vae": "ba9876543210"}}}))
    out = pack_model(vae_run, dit_run, tmp_path / "model", bench=bench, ceiling_bench=ceiling, previous_bench=previous)
    model = load_model(str(out))
    assert model.config.vae.latent_shift == [0.5] * 16 and model.config.vae.latent_scale == [2.0] * 16
    original = load_model(str(tmp_path / "full"))
    for part in ("vae", "dit"):
        mine, theirs = getattr(model, part).state_dict(), getattr(original, part).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    card = (out / "README.md").read_text()
    assert "mean score 0.875" in card and "| presence | 90.0% |" in card and "| gravity | n/a |" in card
    assert "| denoiser | 4000 | 32 | 90 min | 1, cpu | 0.5000 |" in card
    assert "PSNR 31.50 dB" in card and "25% of prompts fail on some seed" in card
    assert "--set train.lr=0.0007" in card and f"latent cache `{tmp_path / 'cache'}`" in card
    assert "Compositional hold-out" in card and "Not measured yet." in card
    assert "score **0.500**" in card and "| camera | 0.0% |" in card
    assert ("replaces (`runs/old`, dit weights 0123456789ab, vae weights ba9876543210), same prompts and seeds: "
            "default suite 0.800 -> 0.875 (+0.075).") in card
    assert "- 1 video, permanence: the COLOUR box vanishes after frame N" in card
    assert [c.split()[2] for c in _commands(out)] == ["vae", "cache", "dit", "pack"]
    # The folder carries both parts' records: packed again from itself alone, it says the same.
    assert [s.run for s in read_stages(out)] == [str(vae_run), str(dit_run)]
    shutil.rmtree(vae_run)
    shutil.rmtree(dit_run)
    again = pack_model(out, out, tmp_path / "again")
    training = [(f / "README.md").read_text().split("## Training")[1].split("Reproduce")[0] for f in (out, again)]
    assert training[0] == training[1] and read_stages(again) == read_stages(out)


def test_card_says_which_prompts_and_seeds_a_result_holds():
    videos = {f"{i}.mp4": {"prompt": p, "seed": s} for i, (p, s) in enumerate((p, s) for p in "ab" for s in range(8, 12))}
    result = {"n_videos": 8, "mean_score": 0.5, "videos": videos, "prompts": {"a": {}, "b": {}}}
    assert "8 videos (2 prompts x seeds 8-11), **mean score 0.500**" in _bench_lines("t", result)[2]
    del videos["0.mp4"], videos["5.mp4"]  # seeds 9-11 and 8, 10, 11: every seed still there
    assert "(2 prompts x seeds 8-11)" in _bench_lines("t", result)[2]
    result["videos"] = {"x": {"prompt": "a", "seed": 1}, "y": {"prompt": "a", "seed": 3}}
    assert "(2 prompts x 2 seeds)" in _bench_lines("t", result)[2]
    assert _bench_lines("t", {"n_videos": 3, "mean_score": 0.5})[2].startswith("3 videos, **mean")  # nothing recorded


def test_pack_says_same_prompts_and_seeds_only_when_they_are():
    before = {"n_videos": 2, "mean_score": 0.5, "videos": {"a": {"prompt": "p", "seed": 0}, "b": {"prompt": "p", "seed": 1}}}
    after = dict(before, mean_score=0.6)
    line = _change_line(before, after, None, None)[0]
    assert line.endswith(", same prompts and seeds: default suite 0.500 -> 0.600 (+0.100).")
    other = dict(after, videos={"a": {"prompt": "p", "seed": 0}, "b": {"prompt": "q", "seed": 1}})
    line = _change_line(before, other, None, None)[0]
    assert "same prompts" not in line and "(+0.100; other videos: 2 then, 2 now)" in line
    assert _change_line(before, None, None, after) == []  # no suite measured on both
    # The same weights measured before and after (a sampling change): the line says so.
    was = {"model": "world-tiny", "weights": {"dit": "aaa", "vae": "bbb"}}
    line = _change_line(dict(before, source=was), dict(after, source=dict(was, model="OUT")), None, None)[0]
    assert "(`world-tiny`, dit weights aaa, vae weights bbb, the same weights as these: the change is in the sampling)" in line
    line = _change_line(dict(before, source=was), dict(after, source={"weights": {"dit": "ccc", "vae": "bbb"}}), None, None)[0]
    assert "(`world-tiny`, dit weights aaa, vae weights bbb)" in line and "same weights" not in line
    # With per-video scores, the paired 95 % interval says whether the change is more than seed noise.
    scored = {"a": {"prompt": "p", "seed": 0, "score": 0.4}, "b": {"prompt": "p", "seed": 1, "score": 0.6}}
    for bumps, noise in (((0.1, 0.1), "; paired 95 % interval ± 0.000)"), ((0.3, -0.1), "; paired 95 % interval ± 0.392, within noise)")):
        raised = {k: dict(v, score=v["score"] + d) for (k, v), d in zip(scored.items(), bumps)}
        line = _change_line(dict(before, videos=scored), dict(after, videos=raised), None, None)[0]
        assert line.endswith(f"default suite 0.500 -> 0.600 (+0.100{noise}."), line


def test_the_commands_run_each_stage_after_what_it_starts_from():
    """Every stage's recorded command, each latent cache before the first stage that saw it that
    large (a grown cache twice), and a decoder stage trained on a denoiser's estimates after it."""
    from worldreel.presets import get_preset

    def stage(part, run, extra="", data="", data_command="", kind="training"):
        return StageRecord(part=part, run=run, command=f"worldreel train {part} --out {run}{extra}", data=data,
                           data_command=data_command, kind=kind)

    small, big = (f"worldreel train cache --model runs/v1/model --out runs/c --count {n}" for n in (100, 200))
    vae = [stage("vae", "runs/v1"), stage("vae", "runs/v2", " --set task.init=runs/v1/model --set task.denoiser=runs/d2/model",
                                          kind="decoder only")]
    dit = [stage("dit", "runs/d1", " --data runs/c", "runs/c", small),
           stage("dit", "runs/d2", " --data runs/c --set task.init=runs/d1/model", "runs/c", big),
           stage("dit", "runs/d3", " --data runs/c --set task.init=runs/d2/model", "runs/c", big)]
    config = get_preset("world-micro").model
    got = commands(config, vae, dit)
    assert got == [vae[0].command, small, dit[0].command, big, dit[1].command, vae[1].command, dit[2].command,
                   "worldreel train pack --vae runs/v2 --dit runs/d3 --out OUT"]


def test_a_stage_on_preference_pairs_lists_the_command_that_made_them_before_it():
    from worldreel.presets import get_preset

    cache = "worldreel train cache --model runs/v1/model --out runs/c --count 100"
    pairs = "worldreel train pairs --model runs/m1 --out runs/p --prompts 64"
    vae = [StageRecord(part="vae", run="runs/v1", command="worldreel train vae --out runs/v1")]
    dit = [StageRecord(part="dit", run="runs/d1", command="worldreel train dit --out runs/d1 --data runs/c", data="runs/c",
                       data_command=cache),
           StageRecord(part="dit", run="runs/d2", data="runs/c", data_command=cache, pairs_command=pairs,
                       command="worldreel train dit --out runs/d2 --data runs/c --set task.init=runs/d1/model --set task.pairs=runs/p")]
    got = commands(get_preset("world-micro").model, vae, dit)
    assert got == [vae[0].command, cache, dit[0].command, pairs, dit[1].command,
                   "worldreel train pack --vae runs/v1 --dit runs/d2 --out OUT"]


def test_pack_refuses_a_denoiser_trained_on_another_autoencoder(tmp_path, tiny_folder):
    other = dict(json.loads((tiny_folder("o") / "config.json").read_text())["vae"])
    other["latent_scale"] = [3.0] * 16
    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder, cache_vae=other)
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "model")
    assert err.value.param == "vae" and "latent_scale" in err.value.message
    assert not (tmp_path / "model").exists()


def test_pack_bad_inputs_name_the_parameter(tmp_path, tiny_folder):
    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    with pytest.raises(UserError) as err:
        pack_model(tmp_path / "nowhere", dit_run, tmp_path / "m")
    assert err.value.param == "vae"
    with pytest.raises(UserError) as err:
        pack_model(vae_run, vae_run, tmp_path / "m")
    assert err.value.param == "dit"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "m", holdout_bench=tmp_path / "bad.json")
    assert err.value.param == "holdout_bench"
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "m", previous_bench=tmp_path / "bad.json")
    assert err.value.param == "previous_bench"
    cli = subprocess.run([sys.executable, "-m", "worldreel", "train", "pack", "--vae", str(vae_run), "--dit",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert cli.returncode == 2 and "dit" in cli.stderr and "Traceback" not in cli.stderr


def test_pack_sets_the_models_sampler_settings_and_checks_the_bench_used_them(tmp_path, tiny_folder):
    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    bench = tmp_path / "bench.json"
    used = {"sampler": "euler", "steps": 20, "guidance": 4.0, "shift": 3.0}
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": used}}))
    out = pack_model(vae_run, dit_run, tmp_path / "model", bench=bench, sampling=["shift=3"])
    assert load_model(str(out)).config.sampling.shift == 3.0
    card = (out / "README.md").read_text()
    assert "(euler, 20 steps, guidance 4, timestep shift 3: config.json" in card
    assert f"worldreel train pack --vae {vae_run} --dit {dit_run} --out OUT --sampling shift=3.0" in card
    with pytest.raises(UserError) as err:  # the scores were made with other settings than the card would claim
        pack_model(vae_run, dit_run, tmp_path / "other", bench=bench)
    assert err.value.param == "bench" and "shift" in err.value.message
    for bad in (["shift=0"], ["sampler=ddim"], ["temperature=1"], ["shift"], ["steps=many"]):
        with pytest.raises(UserError) as err:
            pack_model(vae_run, dit_run, tmp_path / "bad", sampling=bad)
        assert err.value.param in ("sampling", "sampling.steps"), bad
    assert not (tmp_path / "other").exists() and not (tmp_path / "bad").exists()


def test_pack_sets_a_guidance_mode_and_benches_must_have_used_it(tmp_path, tiny_folder):
    """guidance_mode (and interval) are sampling settings like the others; a result recorded
    before they existed counts as plain CFG."""
    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    bench = tmp_path / "bench.json"
    used = {"sampler": "euler", "steps": 20, "guidance": 4.0, "shift": 1.0, "guidance_mode": "interval",
            "guidance_interval": [0.1, 0.9]}
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": used}}))
    items = ["guidance_mode=interval", "guidance_interval=0.1,0.9"]
    out = pack_model(vae_run, dit_run, tmp_path / "model", bench=bench, sampling=items)
    sampling = load_model(str(out)).config.sampling
    assert (sampling.guidance_mode, sampling.guidance_interval) == ("interval", (0.1, 0.9))
    card = (out / "README.md").read_text()
    assert "guidance 4 (interval 0.1-0.9)," in card
    assert "--sampling guidance_mode=interval --sampling guidance_interval=0.1,0.9" in card
    for other in (["guidance_mode=interval"], []):  # another interval; plain CFG (the default)
        with pytest.raises(UserError) as err:
            pack_model(vae_run, dit_run, tmp_path / "other", bench=bench, sampling=other)
        assert err.value.param == "bench" and "guidance" in err.value.message
    old = {k: v for k, v in used.items() if not k.startswith("guidance_")}  # before the modes existed
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": old}}))
    pack_model(vae_run, dit_run, tmp_path / "plain", bench=bench)
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "apg", bench=bench, sampling=["guidance_mode=apg"])
    assert err.value.param == "bench"
    for bad in (["guidance_mode=cfg++"], ["guidance_interval=0.9,0.1"]):
        with pytest.raises(UserError) as err:
            pack_model(vae_run, dit_run, tmp_path / "bad", sampling=bad)
        assert err.value.param == "sampling", bad


def test_pack_sets_refine_and_a_bench_without_it_counts_as_refine_0(tmp_path, tiny_folder):
    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    bench = tmp_path / "bench.json"
    used = {"sampler": "euler", "steps": 20, "guidance": 4.0, "shift": 1.0, "guidance_mode": "cfg", "refine": 1}
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": used}}))
    out = pack_model(vae_run, dit_run, tmp_path / "model", bench=bench, sampling=["refine=1"])
    assert load_model(str(out)).config.sampling.refine == 1
    assert "timestep shift 1, refine 1 (latent frame 1 made again given the others): config.json" in \
        (out / "README.md").read_text()
    with pytest.raises(UserError) as err:  # measured with refine 1, packed without it
        pack_model(vae_run, dit_run, tmp_path / "plain", bench=bench)
    assert err.value.param == "bench" and "refine" in err.value.message
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": {
        k: v for k, v in used.items() if k != "refine"}}}))  # recorded before refine existed: 0
    pack_model(vae_run, dit_run, tmp_path / "old", bench=bench)
    for bad in (["refine=9"], ["refine=-1"], ["refine=half"]):
        with pytest.raises(UserError) as err:
            pack_model(vae_run, dit_run, tmp_path / "bad", sampling=bad)
        assert err.value.param in ("sampling", "sampling.refine"), bad


def test_pack_refuses_scores_measured_on_other_weights(tmp_path, tiny_folder):
    """A bench result that recorded its weights digest (bench world --model) must have measured
    the very weights the pack writes: the digest of the packed files, not another model's."""
    from worldreel.model_folder import weights_digest

    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    first = pack_model(vae_run, dit_run, tmp_path / "first")
    digests = weights_digest(str(first))
    bench, holdout = tmp_path / "bench.json", tmp_path / "holdout.json"
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"weights": digests}}))
    out = pack_model(vae_run, dit_run, tmp_path / "model", bench=bench)  # the same weights: accepted
    assert weights_digest(str(out)) == digests and "mean score 0.500" in (out / "README.md").read_text()
    holdout.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"weights": {**digests, "dit": "0" * 12}}}))
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "other", bench=bench, holdout_bench=holdout)
    assert err.value.param == "holdout_bench" and "0" * 12 in err.value.message
    assert not (tmp_path / "other").exists()


def _predict_result(weights, model_err=0.04):
    """A bench predict JSON as the command writes it (only what the card reads)."""
    def row(position):
        return {h: {"position": position, "lost": 0.1} for h in ("1s", "2s", "3s", "all")}
    table = {"model": {"all": row(model_err), "falls": row(0.05)}, "no_caption": {"all": row(0.1)},
             "copy_last": {"all": row(0.06), "falls": row(0.11)}, "constant_velocity": {"all": row(0.07), "falls": row(0.065)}}
    return {"benchmark": "bench predict", "version": 1, "table": table, "settings": {"weights": weights},
            "config": {"clips": 6, "suites": ["default", "holdout"], "horizon_seconds": 3}}


def test_pack_writes_the_prediction_section_from_bench_predict(tmp_path, tiny_folder):
    from worldreel.model_folder import weights_digest

    vae_run, dit_run, _ = _runs(tmp_path, tiny_folder)
    digests = weights_digest(str(pack_model(vae_run, dit_run, tmp_path / "first")))
    now, before = tmp_path / "predict.json", tmp_path / "before.json"
    now.write_text(json.dumps(_predict_result(digests)))
    before.write_text(json.dumps(_predict_result({"vae": "a" * 12, "dit": "b" * 12}, model_err=0.05)))
    card = (pack_model(vae_run, dit_run, tmp_path / "model", predict=now, previous_predict=before) / "README.md").read_text()
    section = card.split("## Prediction (bench predict)")[1].split("## Limits")[0]
    assert "12 held-out reel-world clips" in section and "for 3 s" in section
    assert "model 0.040/0.040/0.040 (the model this one replaces: 0.050/0.050/0.050)" in section
    assert "copy-last-frame 0.060/0.060/0.060" in section and "falls 0.050 against constant velocity 0.065" in section
    assert "It loses 10% of object-frames (10% without the caption)" in section
    assert "## Prediction" not in (pack_model(vae_run, dit_run, tmp_path / "plain") / "README.md").read_text()
    # Another model's prediction, or a file that is no bench predict result, is refused by name.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_predict_result({**digests, "dit": "0" * 12})))
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "m2", predict=other)
    assert err.value.param == "predict" and not (tmp_path / "m2").exists()
    (tmp_path / "bad.json").write_text(json.dumps({"mean_score": 0.5}))
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "m3", previous_predict=tmp_path / "bad.json")
    assert err.value.param == "previous_predict"
