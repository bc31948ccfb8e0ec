"""bench predict (eval/predict.py, predict_score.py, cli/predict.py): the truth scores perfect,
corrupted continuations score worse than the baselines, the clips are held out, bad input is named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from worldreel.cli import main
from worldreel.errors import UserError
from worldreel.eval import predict as P
from worldreel.eval.predict_score import score_continuation
from worldreel.eval.tracking import detect_objects

G = P.GIVEN_FRAMES


@pytest.fixture(scope="module")
def cases():
    return [P.make_case(suite, P.SEED_BASE + k) for suite in P.SUITES for k in range(12)]


def _moving(case) -> bool:
    """Some object travels more than 0.15 frame heights after the given second."""
    traj = case.scene.trajectory
    steps = np.hypot(np.diff(traj.x[G - 1:], axis=0), np.diff(traj.y[G - 1:], axis=0))  # (P, N)
    return bool((steps.sum(0) > 0.15).any())


# Corrupted continuations: the world plays backwards from the last given frame (then stays at
# its start), jumps back to its first frame and stops, or is moved a quarter of the frame sideways.
def _rewound(frames):
    out = frames.copy()
    out[G:] = frames[np.maximum(2 * (G - 1) - np.arange(G, len(frames)), 0)]
    return out


def _frozen(frames):
    out = frames.copy()
    out[G:] = frames[0]
    return out


def _shifted(frames):
    out = frames.copy()
    out[G:] = np.roll(frames[G:], frames.shape[2] // 4, axis=2)
    return out


def test_truth_scores_perfect(cases):
    rows = [P.score_row(c, {"truth": c.frames}) for c in cases]
    truth = P.summarize(rows)["table"]["truth"]
    measured = 0
    for cat, by_h in truth.items():
        for h, v in by_h.items():
            if v["object_frames"]:
                measured += 1
                assert v["position"] == 0.0 and v["lost"] == 0.0 and v["invented"] == 0.0, (cat, h, v)
                assert v["spatial_iou"] == 1.0 and v["st_iou"] == 1.0, (cat, h, v)
                assert v["timing"] in (None, 0.0), (cat, h, v)
    assert measured >= 4 * 5  # every horizon of most categories has objects to measure
    assert truth["all"]["all"]["events"] > 0  # bounces and hits were found and timed exactly


def test_truth_after_h264_is_nearly_perfect(cases, tmp_path):
    """The metrics read video, not renderer internals: the truth through H.264 still scores near 1."""
    from worldreel.data.video_io import read_video, write_video

    rows = []
    for c in cases[:8]:
        write_video(tmp_path / "t.mp4", c.frames, 8)
        frames, _ = read_video(tmp_path / "t.mp4")
        frames[:G] = c.frames[:G]
        rows.append(P.score_row(c, {"truth": frames}))
    v = P.summarize(rows)["table"]["truth"]["all"]["all"]
    assert v["position"] < 0.005 and v["lost"] == 0.0 and v["invented"] < 0.01
    assert v["st_iou"] > 0.8


def test_corruptions_score_worse_than_the_baselines(cases):
    moving = [c for c in cases if _moving(c)]
    assert len(moving) >= 8
    rows = []
    for c in moving:
        rows.append(P.score_row(c, {
            "truth": c.frames, "copy_last": P.copy_last(c.frames, G), "constant_velocity": P.constant_velocity(c.frames, G),
            # the corruptions ride in the model's slots (the summary is keyed by method name)
            "model": _rewound(c.frames), "no_caption": _frozen(c.frames), "autoencoder": _shifted(c.frames),
        }))
    table = P.summarize(rows)["table"]
    best = min(table[b]["all"]["all"]["position"] for b in ("copy_last", "constant_velocity"))
    for name in ("model", "no_caption", "autoencoder"):
        v = table[name]["all"]["all"]
        assert v["position"] > best, (name, v["position"], best)
        assert v["st_iou"] < table["truth"]["all"]["all"]["st_iou"]
        assert v["spatial_iou"] < 1.0


def test_baselines_keep_the_given_frames_and_move_on(cases):
    roller = next(c for c in cases if any(t[0] == "rolls" for t in c.tags) and c.scene.facts.camera == "static")
    cv = P.constant_velocity(roller.frames, G)
    held = P.copy_last(roller.frames, G)
    assert np.array_equal(cv[:G], roller.frames[:G]) and np.array_equal(held[:G], roller.frames[:G])
    assert (held[G:] == roller.frames[G - 1]).all()
    i = next(k for k, t in enumerate(roller.tags) if t[0] == "rolls")
    color = roller.scene.objects[i].color
    xs = [next(d.x for d in dets if d.color == color) for dets in detect_objects(cv[G - 2:G + 3])[0]]
    step = xs[1] - xs[0]
    assert abs(step) > 0.3  # it rolls ...
    assert np.allclose(np.diff(xs[1:]), step, atol=0.1)  # ... on at its last velocity


def test_scores_catch_a_lost_object(cases):
    c = next(c for c in cases if len(c.scene.objects) >= 2)
    bad = c.frames.copy()
    i = 0
    d = next(d for d in detect_objects(c.frames[G - 1:G])[0][0] if d.color == c.scene.objects[i].color)
    x0, y0, x1, y1 = d.box
    bad[G:, max(y0 - 2, 0):y1 + 3, max(x0 - 2, 0):x1 + 3] = c.frames[0, 0, 0]  # paint it out with sky
    s = score_continuation(c.frames, bad, c.scene, G)
    assert s.lost[i, 0] and not s.lost[1:, 0].any()


def test_clips_are_seeds_training_never_draws():
    from worldreel.data.latents import WorldItems
    from worldreel.data.world import WorldClips

    assert P.SEED_BASE >= 2**31
    items = WorldItems(50, sizes=[(64, 64)], seconds=[4.0], seed=0)
    clips = WorldClips(seed=0)
    for k in range(50):
        rng = np.random.default_rng([items.seed, k])  # how WorldItems draws item k's scene seed
        assert int(rng.integers(2**31)) < P.SEED_BASE
        assert clips.item_seed(k) < P.SEED_BASE


def test_holdout_suite_holds_holdout_combinations(cases):
    from worldreel.data.world import is_holdout

    assert all(is_holdout(c.scene.facts) == (c.suite == "holdout") for c in cases)


def test_caption_blind_generator_hears_nothing():
    class Encoder:
        def encode(self, prompts):
            return prompts

    assert P._CaptionBlind(Encoder()).encode(["a red ball falls", "x"]) == ["", ""]


@pytest.mark.parametrize("cfg, param", [
    (P.PredictConfig(clips=0), "clips"),
    (P.PredictConfig(suites=("default", "nope")), "suites"),
    (P.PredictConfig(suites=()), "suites"),
    (P.PredictConfig(seed_base=-1), "seed_base"),
    (P.PredictConfig(seed=-3), "seed"),
])
def test_bad_config_names_the_parameter(cfg, param):
    with pytest.raises(UserError) as err:
        P.check_config(cfg)
    assert err.value.param == param


def test_cli_baselines_resume_and_refuse(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "predict", "--baselines-only", "--clips", "1", "--suites", "default", "--out", str(out)]) == 0
    summary = json.loads((out / "predict.json").read_text())
    assert summary["methods"] == ["copy_last", "constant_velocity", "truth"]
    assert (out / "predict.png").stat().st_size > 10_000
    # --add grows it: only the new clip is made
    assert main(["bench", "predict", "--baselines-only", "--clips", "2", "--suites", "default", "--out", str(out),
                 "--add"]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [P.SEED_BASE, P.SEED_BASE + 1]
    assert "kept 1 clips" in capsys.readouterr().err
    # the same folder without --add, or with other settings, is refused with the parameter named
    assert main(["bench", "predict", "--baselines-only", "--clips", "1", "--out", str(out)]) == 2
    assert "out:" in capsys.readouterr().err
    assert main(["bench", "predict", "--baselines-only", "--clips", "1", "--seed", "5", "--out", str(out), "--add"]) == 2
    assert "add:" in capsys.readouterr().err
    assert main(["bench", "predict", "--baselines-only", "--suites", "default,sideways", "--out", str(tmp_path / "x")]) == 2
    assert "suites must be" in capsys.readouterr().err
    assert main(["bench", "predict", "--baselines-only", "--steps", "0", "--out", str(tmp_path / "y")]) == 2
    assert "steps" in capsys.readouterr().err


def test_model_methods_run_on_a_tiny_model(tiny_model):
    from worldreel.pipelines.generate import Generator

    gen = Generator.load(tiny_model)
    rows = P.run_predict(P.PredictConfig(clips=1, suites=("holdout",), steps=1), gen)
    (row,) = rows
    assert list(row["methods"]) == ["model", "no_caption", "copy_last", "constant_velocity", "truth", "autoencoder"]
    summary = P.summarize(rows)
    assert summary["methods"] == list(P.METHODS)
    # an untrained model is no world model: worse than the truth, and its given second is kept
    assert summary["table"]["model"]["all"]["all"]["st_iou"] < 1.0
