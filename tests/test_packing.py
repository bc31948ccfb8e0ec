"""worldreel train pack: two half models become one complete folder with a model card."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from worldreel.errors import UserError
from worldreel.pipelines.loading import load_model, save_random_model
from worldreel.pipelines.packing import pack_model

TINY = ["dit.width=32", "dit.depth=2", "dit.heads=2", "vae.base_channels=8"]


def _runs(tmp_path, *, cache_vae=None):
    """A fake autoencoder run and denoiser run, as the trainer leaves them (model/, summary, log)."""
    full = save_random_model(tmp_path / "full", overrides=TINY, seed=3)
    config = json.loads((full / "config.json").read_text())
    config["vae"]["latent_shift"] = [0.5] * 16  # measured statistics: only the autoencoder run has them
    config["vae"]["latent_scale"] = [2.0] * 16
    vae_run, dit_run, cache = tmp_path / "vae", tmp_path / "dit", tmp_path / "cache"
    (vae_run / "model").mkdir(parents=True)
    (dit_run / "model").mkdir(parents=True)
    cache.mkdir()
    shutil.copy(full / "vae.safetensors", vae_run / "model")
    (vae_run / "model" / "config.json").write_text(json.dumps(config))
    shutil.copy(full / "dit.safetensors", dit_run / "model")
    dit_config = json.loads((full / "config.json").read_text())  # the preset's identity statistics
    (dit_run / "model" / "config.json").write_text(json.dumps(dit_config))
    (vae_run / "summary.json").write_text(json.dumps({"task": "vae", "steps": 3000, "train_seconds": 1800.0,
                                                      "processes": 1, "device": "cpu", "loss": 0.1}))
    (vae_run / "log.jsonl").write_text(json.dumps({"step": 3000, "eval": {"psnr": 31.5, "ssim": 0.97}}) + "\n{cut")
    (dit_run / "summary.json").write_text(json.dumps({"task": "dit", "steps": 4000, "train_seconds": 5400.0,
                                                      "processes": 1, "device": "cpu", "loss": 0.5}))
    (dit_run / "run.json").write_text(json.dumps({"train": {"data": str(cache), "batch_size": 32, "lr": 7e-4},
                                                  "task_options": ["p_first=0.3"]}))
    (cache / "cache.json").write_text(json.dumps({"meta": {"vae": cache_vae or config["vae"]}}))
    return vae_run, dit_run, config


def test_pack_joins_the_autoencoder_statistics_with_the_denoiser(tmp_path):
    vae_run, dit_run, config = _runs(tmp_path)
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
    assert "--set train.lr=0.0007" in card and "--set task.p_first=0.3" in card
    assert "Compositional hold-out" in card and "Not measured yet." in card
    assert "score **0.500**" in card and "| camera | 0.0% |" in card
    assert ("replace (`runs/old`, dit weights 0123456789ab, vae weights ba9876543210), same prompts and seeds: "
            "default suite 0.800 -> 0.875 (+0.075).") in card
    assert "- 1 video, permanence: the COLOUR box vanishes after frame N" in card


def test_card_says_which_prompts_and_seeds_a_result_holds():
    from worldreel.pipelines.packing import _bench_lines

    videos = {f"{i}.mp4": {"prompt": p, "seed": s} for i, (p, s) in enumerate((p, s) for p in "ab" for s in range(8, 12))}
    result = {"n_videos": 8, "mean_score": 0.5, "videos": videos, "prompts": {"a": {}, "b": {}}}
    assert "8 videos (2 prompts x seeds 8-11), **mean score 0.500**" in _bench_lines("t", result)[2]
    del videos["0.mp4"], videos["5.mp4"]  # seeds 9-11 and 8, 10, 11: every seed still there
    assert "(2 prompts x seeds 8-11)" in _bench_lines("t", result)[2]
    result["videos"] = {"x": {"prompt": "a", "seed": 1}, "y": {"prompt": "a", "seed": 3}}
    assert "(2 prompts x 2 seeds)" in _bench_lines("t", result)[2]
    assert _bench_lines("t", {"n_videos": 3, "mean_score": 0.5})[2].startswith("3 videos, **mean")  # nothing recorded


def test_pack_says_same_prompts_and_seeds_only_when_they_are():
    from worldreel.pipelines.packing import _change_line

    before = {"n_videos": 2, "mean_score": 0.5, "videos": {"a": {"prompt": "p", "seed": 0}, "b": {"prompt": "p", "seed": 1}}}
    after = dict(before, mean_score=0.6)
    line = _change_line(before, after, None, None)[0]
    assert line.endswith(", same prompts and seeds: default suite 0.500 -> 0.600 (+0.100).")
    other = dict(after, videos={"a": {"prompt": "p", "seed": 0}, "b": {"prompt": "q", "seed": 1}})
    line = _change_line(before, other, None, None)[0]
    assert "same prompts" not in line and "(+0.100; other videos: 2 then, 2 now)" in line
    assert _change_line(before, None, None, after) == []  # no suite measured on both
    # With per-video scores, the paired 95 % interval says whether the change is more than seed noise.
    scored = {"a": {"prompt": "p", "seed": 0, "score": 0.4}, "b": {"prompt": "p", "seed": 1, "score": 0.6}}
    for bumps, noise in (((0.1, 0.1), "; paired 95 % interval ± 0.000)"), ((0.3, -0.1), "; paired 95 % interval ± 0.392, within noise)")):
        raised = {k: dict(v, score=v["score"] + d) for (k, v), d in zip(scored.items(), bumps)}
        line = _change_line(dict(before, videos=scored), dict(after, videos=raised), None, None)[0]
        assert line.endswith(f"default suite 0.500 -> 0.600 (+0.100{noise}."), line


def test_pack_refuses_a_denoiser_trained_on_another_autoencoder(tmp_path):
    other = dict(json.loads((save_random_model(tmp_path / "o", overrides=TINY) / "config.json").read_text())["vae"])
    other["latent_scale"] = [3.0] * 16
    vae_run, dit_run, _ = _runs(tmp_path, cache_vae=other)
    with pytest.raises(UserError) as err:
        pack_model(vae_run, dit_run, tmp_path / "model")
    assert err.value.param == "vae" and "latent_scale" in err.value.message
    assert not (tmp_path / "model").exists()


def test_pack_bad_inputs_name_the_parameter(tmp_path):
    vae_run, dit_run, _ = _runs(tmp_path)
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


def test_pack_sets_the_models_sampler_settings_and_checks_the_bench_used_them(tmp_path):
    vae_run, dit_run, _ = _runs(tmp_path)
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


def test_pack_sets_a_guidance_mode_and_benches_must_have_used_it(tmp_path):
    """guidance_mode (and interval) are sampling settings like the others; a result recorded
    before they existed counts as plain CFG."""
    vae_run, dit_run, _ = _runs(tmp_path)
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


def test_pack_refuses_scores_measured_on_other_weights(tmp_path):
    """A bench result that recorded its weights digest (bench world --model) must have measured
    the very weights the pack writes: the digest of the packed files, not another model's."""
    from worldreel.pipelines.loading import weights_digest

    vae_run, dit_run, _ = _runs(tmp_path)
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


def test_pack_card_lists_every_training_stage_in_order(tmp_path):
    """Runs that started from another run's weights (task.init) are stages of one recipe: the
    card has a row and a command for each, and each cache is made by the autoencoder it records."""
    vae_run, dit_run, config = _runs(tmp_path)
    # The autoencoder run becomes stage 2 (decoder only) of a first run with another latent config.
    first = tmp_path / "vae-first"
    shutil.copytree(vae_run, first)
    old = dict(config["vae"], latent_scale=[1.5] * 16)
    (first / "model" / "config.json").write_text(json.dumps({**config, "vae": old}))
    # Its crop was the default of its day: the full task config it recorded says so.
    from worldreel.config import to_dict
    from worldreel.train.vae_task import VAETaskConfig

    then = dict(to_dict(VAETaskConfig()), crop=[9, 32, 32])
    (first / "run.json").write_text(json.dumps({"train": {"batch_size": 8}, "task_options": [], "task_config": then}))
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": [
        f"init={first}/model", "freeze_encoder=true"]}))
    (vae_run / "summary.json").write_text(json.dumps({"steps": 450, "train_seconds": 600.0, "processes": 1,
                                                      "device": "cpu", "loss": 0.05}))
    # The denoiser run becomes stage 2 of a first denoiser trained on the first autoencoder's cache.
    dit_first, old_cache = tmp_path / "dit-first", tmp_path / "old-cache"
    shutil.copytree(dit_run, dit_first)
    old_cache.mkdir()
    (old_cache / "cache.json").write_text(json.dumps({"meta": {"vae": old}}))
    (dit_first / "run.json").write_text(json.dumps({"train": {"data": str(old_cache), "batch_size": 32}, "task_options": []}))
    run_cfg = json.loads((dit_run / "run.json").read_text())
    run_cfg["task_options"] = [f"init={dit_first}/model"]
    (dit_run / "run.json").write_text(json.dumps(run_cfg))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model")
    card = (out / "README.md").read_text()
    assert "| autoencoder, stage 1 | 3000 | 8 |" in card and "| autoencoder, stage 2 (decoder only) | 450 | 2 |" in card
    assert "| denoiser, stage 1 | 4000 | 32 |" in card and "| denoiser, stage 2 | 4000 | 32 |" in card
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    kinds = [line.split()[2] for line in commands]
    assert kinds == ["vae", "vae", "cache", "dit", "cache", "dit", "pack"]
    assert f"--out {first} " in commands[0] and f"--set task.init={first}/model" in commands[1]
    assert "--set 'task.crop=[9,32,32]'" in commands[0] and "task.crop" not in commands[1]
    assert commands[2].startswith(f"worldreel train cache --model {first}/model --out {old_cache}")
    assert commands[4].startswith(f"worldreel train cache --model {vae_run}/model --out {tmp_path / 'cache'}")
    assert f"--data {old_cache}" in commands[3] and f"--set task.init={dit_first}/model" in commands[5]


def test_pack_puts_a_decoder_trained_on_a_denoiser_after_that_denoiser(tmp_path):
    """A decoder stage with task.denoiser needs the denoiser to exist: its command comes after
    the denoiser stages and names the last of them, not the moving shipped model it named."""
    vae_run, dit_run, config = _runs(tmp_path)
    first = tmp_path / "vae-first"
    shutil.copytree(vae_run, first)
    (first / "run.json").write_text(json.dumps({"train": {"batch_size": 8}, "task_options": []}))
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": [
        f"init={first}/model", "freeze_encoder=true", "denoiser=world-tiny", "denoised_prob=0.35"]}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model")
    commands = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "vae", "pack"]
    assert commands[1].startswith(f"worldreel train cache --model {first}/model ")  # the encoder the denoiser knows
    assert f"--set task.denoiser={dit_run}/model" in commands[3] and "denoiser=world-tiny" not in commands[3]
    assert f"--set task.init={first}/model" in commands[3] and "--set task.denoised_prob=0.35" in commands[3]
    record = json.loads((out / "training.json").read_text())
    assert f"denoiser={dit_run}/model" in record["vae"][-1]["task_options"]


def _shipped_first_stages(tmp_path):
    """_runs plus a first stage of each part (copies of the runs), packed into tmp_path/shipped:
    (vae run, dit run, first vae run, first dit run, the packed folder)."""
    vae_run, dit_run, _ = _runs(tmp_path)
    first, dit_first = tmp_path / "vae-first", tmp_path / "dit-first"
    shutil.copytree(vae_run, first)
    shutil.copytree(dit_run, dit_first)
    (first / "run.json").write_text(json.dumps({"train": {"batch_size": 8}, "task_options": []}))
    return vae_run, dit_run, first, dit_first, pack_model(first / "model", dit_first, tmp_path / "shipped")


def test_pack_names_the_packed_denoiser_a_decoder_trained_on_when_it_is_a_stage(tmp_path):
    """An older decoder trained on a packed model's denoiser, packed with a newer denoiser
    stage that started from that model: its command names that model's last denoiser stage
    (not the newer one) and comes between the two."""
    vae_run, dit_run, first, dit_first, shipped = _shipped_first_stages(tmp_path)
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": [
        f"init={first}/model", "freeze_encoder=true", f"denoiser={shipped}"]}))
    run_cfg = json.loads((dit_run / "run.json").read_text())
    (dit_run / "run.json").write_text(json.dumps({**run_cfg, "task_options": [f"init={dit_first}/model"]}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model")
    commands = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "vae", "dit", "pack"]
    assert f"--out {dit_first} " in commands[2] and f"--out {dit_run} " in commands[4]
    assert f"--set task.denoiser={dit_first}/model" in commands[3]
    record = json.loads((out / "training.json").read_text())
    assert f"denoiser={dit_first}/model" in record["vae"][-1]["task_options"]
    # Named as a run folder (not its model/), the denoiser stage is found all the same.
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": [
        f"init={first}/model", "freeze_encoder=true", f"denoiser={dit_first}"]}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model2")
    commands = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "vae", "dit", "pack"]


def test_pack_rebuilds_a_grown_cache_at_the_size_each_stage_saw(tmp_path):
    """A latent cache grows in place (train cache --count); the card's commands grow it again
    before each stage that saw it larger, so rerunning them feeds every stage what it had."""
    vae_run, dit_run, config = _runs(tmp_path)
    cache = tmp_path / "cache"
    meta = {"vae": config["vae"], "source": "world", "sizes": [[64, 64]], "seconds": [4.0, 0.0], "seed": 0}
    (cache / "cache.json").write_text(json.dumps({"items": 300, "count": 300, "meta": meta}))  # grown since
    dit_first = tmp_path / "dit-first"
    shutil.copytree(dit_run, dit_first)
    run_cfg = json.loads((dit_run / "run.json").read_text())
    (dit_first / "run.json").write_text(json.dumps({**run_cfg, "data": {"cache_items": 100}}))
    (dit_run / "run.json").write_text(json.dumps({**run_cfg, "task_options": [f"init={dit_first}/model"],
                                                  "data": {"cache_items": 200}}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model")
    commands = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train")]
    caches = [line for line in commands if line.split()[2] == "cache"]
    assert [line.split("--count ")[1].split()[0] for line in caches] == ["100", "200"]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "cache", "dit", "pack"]
    # A run without the record (trained before runs kept it) gets the cache's size today.
    (dit_first / "run.json").write_text(json.dumps(run_cfg))
    (dit_run / "run.json").write_text(json.dumps({**run_cfg, "task_options": [f"init={dit_first}/model"]}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model2")
    caches = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train cache")]
    assert len(caches) == 1 and "--count 300 " in caches[0]


def test_pack_gives_each_stage_its_own_denoiser_layout(tmp_path):
    """A stage grown deeper than the one it started from (task.grow) is rebuilt at its own
    depth, and the stage before it at its own: each command sets the layout its run recorded."""
    vae_run, dit_run, config = _runs(tmp_path)
    dit_first = tmp_path / "dit-first"
    shutil.copytree(dit_run, dit_first)
    run_cfg = json.loads((dit_run / "run.json").read_text())
    (dit_first / "run.json").write_text(json.dumps({**run_cfg, "model": {"dit": config["dit"]}}))
    deeper = dict(config["dit"], depth=config["dit"]["depth"] + 1)
    (dit_run / "run.json").write_text(json.dumps({**run_cfg, "model": {"dit": deeper},
                                                  "task_options": [f"init={dit_first}/model", "grow=true"]}))
    out = pack_model(vae_run / "model", dit_run, tmp_path / "model")
    dits = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("worldreel train dit")]
    assert len(dits) == 2
    depth = config["dit"]["depth"]
    assert f"--set model.dit.depth={depth} " in dits[0] and "task.grow" not in dits[0]
    assert f"--set model.dit.depth={depth + 1} " in dits[1] and dits[1].endswith("--set task.grow=true")
    assert "--set model.dit.width=32 " in dits[0] and "--set model.dit.width=32 " in dits[1]


def test_a_packed_model_keeps_its_stages_when_the_runs_are_gone(tmp_path):
    """training.json in the packed folder holds what the card was written from: packing again
    from the packed model alone (runs and cache deleted) writes the same training section, and a
    new run that started from the packed model (task.init) continues its stages."""
    vae_run, dit_run, config = _runs(tmp_path)
    cache = tmp_path / "cache"
    meta = {"vae": config["vae"], "source": "world", "sizes": [[64, 64]], "seconds": [4.0, 0.0], "seed": 0}
    (cache / "cache.json").write_text(json.dumps({"count": 300, "meta": meta}))
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": ["crop=[9,32,32]"]}))
    first = pack_model(vae_run, dit_run, tmp_path / "first")

    def training(card):
        return card.split("## Training")[1].split("## world-bench")[0]

    card = (first / "README.md").read_text()
    assert json.loads((first / "training.json").read_text())["vae"][0]["run"] == str(vae_run)
    # A decoder stage that started from the packed model, not from a run folder.
    dec = tmp_path / "dec"
    shutil.copytree(vae_run, dec)
    (dec / "run.json").write_text(json.dumps({"train": {"batch_size": 2, "seed": 15},
                                              "task_options": [f"init={first}", "freeze_encoder=true"]}))
    (dec / "summary.json").write_text(json.dumps({"steps": 700, "train_seconds": 1200.0, "processes": 1,
                                                  "device": "cpu", "loss": 0.04}))
    (dec / "log.jsonl").write_text(json.dumps({"step": 700, "eval": {"psnr": 33.25, "ssim": 0.98}}) + "\n")
    for gone in (vae_run, dit_run, cache):
        shutil.rmtree(gone)
    again = pack_model(first, first, tmp_path / "again")
    assert training((again / "README.md").read_text()) == training(card)
    second = pack_model(dec, first, tmp_path / "second")
    card2 = (second / "README.md").read_text()
    assert "| autoencoder, stage 1 | 3000 | 2 |" in card2 and "| autoencoder, stage 2 (decoder only) | 700 | 2 |" in card2
    assert "| denoiser | 4000 | 32 | 90 min | 1, cpu | 0.5000 |" in card2
    assert "PSNR 31.50 dB, SSIM 0.970 after stage 1 (step 3000); PSNR 33.25 dB, SSIM 0.980 after stage 2 (step 700)" in card2
    assert f"started from the packed model `{first}`" in card2
    commands = [line for line in card2.splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "vae", "cache", "dit", "pack"]
    assert "--set 'task.crop=[9,32,32]'" in commands[0] and f"--set task.init={vae_run}/model" in commands[1]
    assert commands[2].startswith(f"worldreel train cache --model {vae_run}/model --out {cache} --count 300 ")
    assert commands[4].startswith(f"worldreel train pack --vae {dec} --dit {dit_run} ")
    # The second pack's record holds both autoencoder stages: a third pack from it alone lists them.
    third = pack_model(second, second, tmp_path / "third")
    assert training((third / "README.md").read_text()) == training(card2)


def test_pack_follows_a_packed_model_as_it_was_when_the_run_started(tmp_path):
    """A run whose task.init / task.denoiser named a packed model records that model's stages
    when it starts (origins.json). Once that model is replaced by a pack of the run itself (a
    new shipped model), packing the run again lists each stage once, as before the swap."""
    from worldreel.pipelines.packing import record_origins

    vae_run, dit_run, first, dit_first, shipped = _shipped_first_stages(tmp_path)
    vae_options = [f"init={first}/model", "freeze_encoder=true", f"denoiser={shipped}"]
    dit_options = [f"init={shipped}"]
    (vae_run / "run.json").write_text(json.dumps({"train": {"batch_size": 2}, "task_options": vae_options}))
    run_cfg = json.loads((dit_run / "run.json").read_text())
    (dit_run / "run.json").write_text(json.dumps({**run_cfg, "task_options": dit_options}))
    for run, options in ((vae_run, vae_options), (dit_run, dit_options)):
        record_origins(run, options, resumed=False)
    record_origins(first, [], resumed=False)  # names no packed model: no record
    assert not (first / "origins.json").exists()
    assert json.loads((dit_run / "origins.json").read_text())["init"]["model"] == str(shipped)

    def commands(folder):
        return [line for line in (folder / "README.md").read_text().splitlines() if line.startswith("worldreel train")]

    before = pack_model(vae_run / "model", dit_run, tmp_path / "before")
    kinds = ["vae", "cache", "dit", "vae", "dit", "pack"]
    assert [line.split()[2] for line in commands(before)] == kinds
    # The new model ships: the packed folder the runs named now holds their own stages.
    shutil.rmtree(shipped)
    shutil.copytree(before, shipped)
    record_origins(dit_run, dit_options, resumed=True)  # a resumed run keeps its first record
    after = pack_model(vae_run / "model", dit_run, tmp_path / "after")
    assert commands(after) == [line.replace("/before", "/after") for line in commands(before)]
    assert json.loads((after / "training.json").read_text()) == json.loads((before / "training.json").read_text())
    # Packed again from the folder alone once the runs are gone, the decoder still names its denoiser.
    shutil.rmtree(dit_first)
    alone = pack_model(after, after, tmp_path / "alone")
    assert f"denoiser={dit_first}/model" in json.loads((alone / "training.json").read_text())["vae"][-1]["task_options"]
    shutil.copytree(dit_run, dit_first)
    # Without the record (runs from before it was kept) the swapped model's stages come twice.
    for run in (vae_run, dit_run):
        (run / "origins.json").unlink()
    twice = pack_model(vae_run / "model", dit_run, tmp_path / "twice")
    assert len(commands(twice)) > len(kinds)
