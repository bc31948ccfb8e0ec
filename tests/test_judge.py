"""The judge (diffusion/judge.py): its data from a model's own finalists, its training, its reading
of the finalists when sampling, and bench judge's exact replay of that reading."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from worldreel.data.captions import parse_caption
from worldreel.data.facts import CAMERAS, COLORS, MOTIONS
from worldreel.diffusion import judge as J
from worldreel.diffusion.steer import StateProbe, pick_finalist
from worldreel.errors import UserError
from worldreel.train import judge as T

FAST = {"steps": 2, "best_of": 3, "finalists": 2}


def test_the_facts_are_read_per_colour_and_for_the_scene():
    from worldreel.eval.worldbench import CHECKS

    assert J.CHECK_NAMES == CHECKS
    facts = parse_caption("a red ball rolls to the right and hits a blue box; the camera pans left")
    per_color, scene = J.fact_features(facts)
    red, blue = COLORS.index("red"), COLORS.index("blue")
    assert per_color.shape == (len(COLORS), J.COLOR_FACTS) and scene.shape == (J.SCENE_FACTS,)
    assert per_color[red, MOTIONS.index("rolls_right")] == pytest.approx(1 / 3)
    assert per_color[red, -1] == per_color[blue, -1] == pytest.approx(1 / 3)  # one object each
    assert per_color[red, len(MOTIONS) + 1] > 0 and per_color[blue, len(MOTIONS) + 1] > 0  # both in the hit
    assert per_color[COLORS.index("green")].abs().sum() == 0
    assert scene[CAMERAS.index("pan_left")] == 1 and scene[len(CAMERAS)] == 0
    assert scene[len(CAMERAS) + 1] == pytest.approx(2 / 3)


def test_palette_tracks_follow_each_colour_through_the_frames():
    from worldreel.data.render import render_clip
    from worldreel.data.world import scene_from_facts
    from worldreel.eval.tracking import palette_tracks

    facts = parse_caption("a red ball rolls to the right")
    frames = render_clip(scene_from_facts(facts, seed=3, seconds=2.0))
    tracks = palette_tracks(frames)
    red, blue = COLORS.index("red"), COLORS.index("blue")
    assert tracks.shape == (len(COLORS), len(frames), J.TRACK_FEATURES)
    assert 0.3 < tracks[red, :, 0].mean() < 3  # about one object's cover
    assert tracks[red, -1, 1] > tracks[red, 0, 1] + 0.2  # its centre moves right
    assert tracks[blue].abs().sum() == 0  # a colour not drawn: nothing


def test_the_judge_reads_the_tracks_and_what_the_caption_states():
    torch.manual_seed(0)
    judge = J.Judge(width=8).eval()
    tracks = torch.rand(2, len(COLORS), 9, J.TRACK_FEATURES)
    per_color, scene = torch.rand(2, len(COLORS), J.COLOR_FACTS), torch.rand(2, J.SCENE_FACTS)
    logits = judge(tracks, per_color, scene)
    assert logits.shape == (2, len(J.CHECK_NAMES))
    assert torch.allclose(judge(tracks[:1], per_color[:1], scene[:1]), logits[:1], atol=1e-5)  # clip by clip
    swap = torch.randperm(len(COLORS))  # colours relabelled, tracks and facts together: the same verdicts
    assert torch.allclose(judge(tracks[:, swap], per_color[:, swap], scene), logits, atol=1e-5)
    other = per_color.clone()
    other[:, 0, 0] += 1  # what the caption states changes the verdicts, and so does the clip
    assert not torch.allclose(judge(tracks, other, scene), logits)
    assert not torch.allclose(judge(tracks.flip(2), per_color, scene), logits)
    assert J.expected_score(torch.zeros(1, 7)).item() == pytest.approx(0.5)


def test_the_judge_weighs_in_when_the_finalists_are_read():
    fits, errors, judged = [1.0, 0.0, 0.5], [0.1, 0.1, 0.1], [0.2, 0.9, 0.5]
    assert pick_finalist(fits, errors, 1.0) == 0
    assert pick_finalist(fits, errors, 1.0, judged, 0.0) == 0  # weight 0: not read
    assert pick_finalist(fits, errors, 1.0, judged, 10.0) == 1  # a heavy judge decides
    assert pick_finalist(fits, None, 0.0, [0.5, 0.5, 0.5], 10.0) == 0  # a judge that cannot tell them apart counts 0


@pytest.mark.parametrize("field, value", [("prompts", 0), ("seed", -1), ("suite", "other"), ("seeds", 0)])
def test_bad_data_settings_name_themselves(field, value):
    with pytest.raises(UserError) as err:
        T.check_data_config(dataclasses.replace(T.JudgeDataConfig(), **{field: value}))
    assert err.value.param == field


@pytest.mark.parametrize("field, value", [("steps", 0), ("lr", 0.0), ("validation", 0.95), ("width", 2)])
def test_bad_judge_settings_name_themselves(field, value):
    with pytest.raises(UserError) as err:
        T.check_judge_config(dataclasses.replace(T.JudgeConfig(), **{field: value}))
    assert err.value.param == field


def test_a_suite_replays_bench_worlds_prompts_and_seeds():
    from worldreel.eval.worldbench import default_prompt_suite

    jobs = T.data_jobs(T.JudgeDataConfig(suite="default", seeds=2, seed_base=80))
    prompts = default_prompt_suite()
    assert jobs[:3] == [(prompts[0], 80), (prompts[0], 81), (prompts[1], 80)] and len(jobs) == 2 * len(prompts)
    drawn = T.data_jobs(T.JudgeDataConfig(prompts=4))
    assert [seed for _, seed in drawn] == [0, 1, 2, 3] and not {t for t, _ in drawn} & set(prompts)


@pytest.fixture(scope="module")
def probed_model(tiny_model, tmp_path_factory):
    """The tiny model's folder with a random state probe file of its denoiser."""
    from safetensors.torch import save_file

    from worldreel.model_folder import PROBE_FILE, weights_digest

    folder = tmp_path_factory.mktemp("judged") / "m"
    shutil.copytree(tiny_model, folder)
    torch.manual_seed(3)
    probe = StateProbe(16, width=8)
    meta = {"kind": "worldreel state probe", "channels": "16", "width": "8", "colors": str(len(COLORS)),
            "dit": weights_digest(folder)["dit"], "command": "worldreel train probe --model M --out P.safetensors"}
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(folder / PROBE_FILE), metadata=meta)
    return folder


@pytest.fixture(scope="module")
def judge_data(probed_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("jd") / "data"
    summary = T.build_judge_data(str(probed_model), out, T.JudgeDataConfig(prompts=6), sampling=FAST, precision="fp32",
                                 command=f"worldreel train judge-data --model M --out {out} --prompts 6")
    return out, summary


def test_the_data_keeps_every_finalist_with_its_readings_and_verdicts(judge_data, probed_model):
    out, summary = judge_data
    assert summary["groups"] == 6 and summary["finalists"] == 12
    assert summary["best_score"] >= summary["picked_score"] and summary["best_score"] >= summary["random_score"]
    rows = [json.loads(line) for line in (out / T.ROWS_FILE).read_text().splitlines()]
    assert [r["seed"] for r in rows] == list(range(6))
    row = rows[0]
    assert len(row["scores"]) == len(row["checks"]) == len(row["readings"]["fit"]) == 2 and row["picked"] in (0, 1)
    assert set(row["checks"][0]) == set(J.CHECK_NAMES) and "error" not in row["readings"]  # likelihood 0: not read
    assert row["picked"] == pick_finalist(row["readings"]["fit"])
    # Rerun: nothing made again; made with other settings: refused, naming what differs.
    before = (out / T.ROWS_FILE).read_text()
    assert T.build_judge_data(str(probed_model), out, T.JudgeDataConfig(prompts=6), sampling=FAST,
                              precision="fp32")["groups"] == 6
    assert (out / T.ROWS_FILE).read_text() == before
    info = json.loads((out / T.INFO_FILE).read_text())  # made before an option existed: it had its default
    del info["sampling"]["judge"]
    (out / T.INFO_FILE).write_text(json.dumps(info))
    T.build_judge_data(str(probed_model), out, T.JudgeDataConfig(prompts=6), sampling=FAST, precision="fp32")
    assert (out / T.ROWS_FILE).read_text() == before
    with pytest.raises(UserError, match=r"differ in sampling\.steps\)") as err:
        T.build_judge_data(str(probed_model), out, T.JudgeDataConfig(prompts=6), sampling={**FAST, "steps": 3})
    assert err.value.param == "out"
    with pytest.raises(UserError) as err:  # one finalist: nothing to learn to pick among
        T.build_judge_data(str(probed_model), out.parent / "one", T.JudgeDataConfig(prompts=1),
                           sampling={**FAST, "finalists": 1})
    assert err.value.param == "finalists"


@pytest.fixture(scope="module")
def judged_model(probed_model, judge_data, tmp_path_factory):
    """A judge trained a few steps on the data, packed with the probe into a model that reads it."""
    from worldreel.model_folder import PROBE_FILE
    from worldreel.train.pack import pack_model

    out, _ = judge_data
    root = tmp_path_factory.mktemp("jm")
    result = T.train_judge(str(probed_model), [out], root / "judge.safetensors",
                           T.JudgeConfig(steps=20, batch=4, width=8, validation=0.34),
                           command=f"worldreel train judge --model M --data {out} --out J.safetensors")
    folder = pack_model(probed_model, probed_model, root / "m", probe=probed_model / PROBE_FILE,
                        judge=root / "judge.safetensors", sampling=["best_of=3", "finalists=2", "judge=2", "steps=2"])
    return folder, result, root / "judge.safetensors"


def test_the_suggested_weight_is_the_best_held_out_pick():
    picks = {"sampler": 0.70, "judge 0.5": 0.71, "judge 1": 0.74, "judge 2": 0.75, "judge 4": 0.75, "judge alone": 0.9,
             "best finalist": 0.95}
    assert T.suggested_weight(picks) == 2.0  # the smallest of the best; the judge alone and the ceiling are not weights
    assert T.suggested_weight({**picks, "judge 4": 0.76}) == 4.0
    assert T.suggested_weight({}) == 2.0


def test_the_judge_trains_on_held_out_captions_and_packs(judged_model, probed_model):
    from worldreel.model_folder import JUDGE_FILE, load_model, reader_info, weights_digest

    folder, result, file = judged_model
    assert result["validation_groups"] == 2 and result["groups"] == 4
    assert {"loss", "judge_pick", "sampler_pick"} <= set(result["kept"])
    assert len(result["history"]) == 1 and result["kept"]["step"] == 20
    meta = reader_info(file, "judge")
    assert meta["dit"] == weights_digest(probed_model)["dit"] and meta["vae"] == weights_digest(probed_model)["vae"]
    assert (folder / JUDGE_FILE).read_bytes() == file.read_bytes() and weights_digest(folder)["judge"]
    loaded = load_model(str(folder))
    assert isinstance(loaded.judge, J.Judge) and loaded.config.sampling.judge == 2
    card = (folder / "README.md").read_text()
    assert "| judge |" in card and "with the judge at weight 2" in card and "Judge (`judge.safetensors`" in card
    assert "the sampler's pick with the judge added at weight 2 scored" in card  # the held-out pick at its own weight
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    # the rebuild: a pack without the readers, the probe; a pack with it, the judge's data and the judge; the pack
    assert "judge=" not in commands[-6] and "--probe" not in commands[-6] and commands[-5].startswith("worldreel train probe")
    assert "--probe" in commands[-4] and "judge=" not in commands[-4]
    assert commands[-3].startswith("worldreel train judge-data --model OUT")
    assert commands[-2].startswith("worldreel train judge --model OUT")
    assert "--judge J.safetensors --out OUT" in commands[-1] and "judge=2" in commands[-1]
    # A judge of other weights is refused; so is sampling judge without one.
    from worldreel.train.pack import pack_model

    with pytest.raises(UserError) as err:
        pack_model(probed_model, probed_model, folder.parent / "x", sampling=["judge=1"],
                   probe=probed_model / "probe.safetensors")
    assert err.value.param == "judge"


def test_sampling_with_the_judge_keeps_the_finalist_it_reads_best(judged_model):
    from worldreel.pipelines.generate import Generator

    folder, _, _ = judged_model
    gen = Generator.load(str(folder))
    seen, marks, decodes = {}, [], []
    decode = gen.decode
    gen.decode = lambda *args, **kwargs: decodes.append(1) or decode(*args, **kwargs)
    video = gen.generate("a red ball rolls to the left and a blue box rests", seed=2, rewrite=False,
                         on_finalists=lambda latents, readings, picked: seen.update(readings, latents=latents,
                                                                                    picked=picked),
                         progress=marks.append)
    # every unit counted once: the judge's decodes, and not the video's own (skipped, below); the bar
    # fills with the last unit of work (then the final 1.0), never early and never with a jump at the end
    assert marks == sorted(marks) and marks[-1] == 1.0 and marks.count(1.0) == 2
    assert video.sampling["judge"] == 2 and len(seen["judge"]) == 2
    assert seen["picked"] == pick_finalist(seen["fit"], None, 0.0, seen["judge"], 2.0)
    # A one-window video: the kept finalist's decode for the judge is the video; nothing decoded twice.
    assert len(decodes) == 2
    assert np.array_equal(video.frames, decode(seen["latents"][seen["picked"]])[:len(video.frames)])
    gen.decode = decode
    off = gen.generate("a red ball rolls to the left and a blue box rests", seed=2, rewrite=False, judge=0)
    assert "judge" not in off.sampling
    from worldreel.eval.predict import caption_blind

    assert caption_blind(gen).judge is gen.judge  # bench predict's caption-blind twin samples as the model does
    gen.judge = None  # a model without a judge cannot read one
    with pytest.raises(UserError) as err:
        gen.generate("a red ball rolls to the left", seed=0, judge=1)
    assert err.value.param == "judge"


def test_bench_judge_replays_the_sampler_exactly_and_refuses_to_train_on_a_suite(judged_model, judge_data, tmp_path):
    from worldreel.eval.compare import compare
    from worldreel.eval.judge_bench import bench_judge

    folder, _, _ = judged_model
    out, summary = judge_data
    result = bench_judge(str(folder), [str(out)], [1.0, 2.0], tmp_path / "r")
    rows = {row["rule"]: row for row in result["table"]}
    assert rows["sampler"]["mean_score"] == pytest.approx(summary["picked_score"], abs=1e-4)
    assert rows["sampler"]["paired"] == 0 and rows["sampler"]["same_as_sampler"] == 1
    assert rows["best finalist"]["mean_score"] == pytest.approx(summary["best_score"], abs=1e-4)
    assert rows["one at random"]["mean_score"] == pytest.approx(summary["random_score"], abs=1e-4)
    assert rows["best finalist"]["mean_score"] >= max(r["mean_score"] for r in result["table"])
    both = compare([("s", json.loads((tmp_path / "r/sampler/worldbench.json").read_text())),
                    ("j", json.loads((tmp_path / "r/judge-2/worldbench.json").read_text()))])
    assert both["results"][1]["paired"]["difference"] == pytest.approx(rows["judge 2"]["paired"], abs=1e-4)
    # Each replayed rule records the settings and weights a bench world run of it would: the pack checks them.
    from worldreel.model_folder import weights_digest

    judged = json.loads((tmp_path / "r/judge-2/worldbench.json").read_text())["source"]
    assert judged["sampling"]["judge"] == 2.0 and judged["weights"] == weights_digest(folder)
    sampler = json.loads((tmp_path / "r/sampler/worldbench.json").read_text())
    assert sampler["source"]["sampling"]["judge"] == 0.0
    assert sampler["source"]["model"] == json.loads((out / T.INFO_FILE).read_text())["model"]  # the model that made them
    # the replayed failures say why, as bench world's do (the data keeps each failed check's reason)
    assert sampler["failures"] and all(k["reason"] != "(no reason given)" for k in sampler["failures"])
    with pytest.raises(UserError) as err:
        bench_judge(str(folder), [str(out)], [0.0])
    assert err.value.param == "weights"
    # A folder of a world-bench suite measures a judge and never trains one.
    info = json.loads((out / T.INFO_FILE).read_text())
    suite = tmp_path / "suite"
    shutil.copytree(out, suite)
    (suite / T.INFO_FILE).write_text(json.dumps({**info, "source": {"suite": "default", "seeds": 1, "seed_base": 0}}))
    assert len(T.read_finalists([suite], training=False).groups) == 6
    with pytest.raises(UserError, match="never trained") as err:
        T.read_finalists([suite], training=True)
    assert err.value.param == "data"
