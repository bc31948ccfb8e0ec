"""world-bench: the evaluator's own validation.

Ground truth must score ~1 (also after an H.264 round trip); corrupted videos (shuffled,
frozen, noise, wrong colours, time-reversed falls) must score low; each check must catch
the fault it is about (wrong pan, wrong gravity, wrong direction, popping, extras,
flicker). Plus the folder scorer, the CLI and the prompt suites.
"""
import json
from dataclasses import replace

import numpy as np
import pytest

from worldreel.data.facts import (
    BACKGROUND, COLORS, FLOOR, FLOOR_TOP, MOTIONS, PALETTE, PILLAR, SHAPES, TICK, TICK_SPACING,
)
from worldreel.errors import UserError
from worldreel.eval import tracking
from worldreel.eval.worldbench import CHECKS, default_prompt_suite, holdout_prompt_suite, score_video

N_TRUTH = 200  # WORLD.md: truth scores >= 0.99 on average over >= 200 varied clips
N_CORRUPT = 60  # clips per corruption


# ---------------------------------------------------------------------------------------
# Helpers


def draw(objects, *, cam_x=0.0, size=64, ss=4):
    """A reel-world-looking frame drawn with numpy (4x supersampling), independent of render.py.

    objects: (colour, shape, size, x, y, angle) in world units, y up.
    """
    h = w = size * ss
    yy, xx = np.mgrid[0:h, 0:w]
    wx, wy = (xx + 0.5) / h + cam_x, 1.0 - (yy + 0.5) / h
    img = np.empty((h, w, 3), np.float32)
    img[:] = BACKGROUND
    floor = wy < FLOOR_TOP
    img[floor] = FLOOR
    img[floor & (np.abs((wx + TICK_SPACING / 2) % TICK_SPACING - TICK_SPACING / 2) < 0.5 / 64)] = TICK
    for color, shape, s, x, y, angle in objects:
        dx, dy = wx - x, wy - y
        if shape == "ball":
            inside = dx**2 + dy**2 <= s**2
        else:
            c, n = np.cos(angle), np.sin(angle)
            inside = (np.abs(c * dx + n * dy) <= s / 2) & (np.abs(-n * dx + c * dy) <= s / 2)
        img[inside] = PALETTE[color]
    img = img.reshape(size, ss, size, ss, 3).mean((1, 3))
    return np.round(img).astype(np.uint8)


def mean_score(items) -> float:
    return float(np.mean([score_video(frames, facts).score for frames, facts in items]))


@pytest.fixture(scope="module")
def clips():
    """(scene, frames) for N_TRUTH sampled scenes, rendered once."""
    from worldreel.data.render import render_clip
    from worldreel.data.world import sample_scene

    out = []
    for seed in range(N_TRUTH):
        scene = sample_scene(seed)
        out.append((scene, render_clip(scene)))
    return out


# ---------------------------------------------------------------------------------------
# Segmentation, shape, camera on frames drawn here


def test_palette_labels():
    colors = np.array([[PALETTE[c] for c in COLORS] + [BACKGROUND, FLOOR, TICK, PILLAR, (0, 255, 0)]], np.uint8)
    labels = tracking.label_pixels(colors[None])[0, 0]
    assert list(labels) == list(range(len(COLORS) + 4)) + [tracking.UNKNOWN]


def test_blob_position_and_shape_on_drawn_objects():
    rng = np.random.default_rng(0)
    for k in range(24):
        shape = SHAPES[k % 2]
        size = rng.uniform(0.06, 0.10) if shape == "ball" else rng.uniform(0.12, 0.18)
        x, y, angle = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.7), rng.uniform(0, np.pi / 2)
        color = COLORS[k % len(COLORS)]
        frame = draw([(color, shape, size, x, y, angle)])
        per_frame, _ = tracking.detect_objects(frame[None])
        (det,) = per_frame[0]
        assert det.color == color
        assert abs(det.x + 0.5 - x * 64) < 0.3 and abs(det.y + 0.5 - (1 - y) * 64) < 0.3  # pixel centres at +0.5
        assert (det.kurtosis >= tracking.SHAPE_KURTOSIS) == (shape == "box"), (shape, size, angle, det.kurtosis)


def test_floor_shift_is_subpixel_exact():
    offsets = np.array([0.0, 0.013, 0.021, 0.0, -0.017])  # world units moved by the camera each frame
    frames = np.stack([draw([], cam_x=c, ss=16) for c in np.cumsum(offsets)])  # fine supersampling: sub-pixel ticks
    shifts, strength = tracking.floor_shifts(frames, tracking.label_pixels(frames))
    assert np.all(strength > tracking.TICK_MIN_STRENGTH)
    np.testing.assert_allclose(shifts, -offsets[1:] * 64, atol=0.05)  # the camera moves right: ticks move left


def test_tracks_through_the_pillar_and_merge_free():
    # A ball rolls right behind a pillar drawn in front; one track from start to end.
    xs = np.linspace(0.15, 0.85, 33)
    frames = []
    for x in xs:
        f = draw([("red", "ball", 0.06, x, FLOOR_TOP + 0.06, 0.0)])
        f[64 - 8 - 32 : 64 - 8, 29:37] = PILLAR  # 8 px wide, 32 px high, standing on the floor
        frames.append(f)
    obs = tracking.observe(np.stack(frames))
    (track,) = obs.tracks
    assert track.birth == "start" and track.death == "end"
    assert len(track.dets) < 33 and any(d.occluded for d in track.dets)  # hidden for a while


# ---------------------------------------------------------------------------------------
# Truth scores ~1


@pytest.mark.slow
def test_truth_scores_high(clips):
    scores = [score_video(frames, scene.facts) for scene, frames in clips]
    assert np.mean([s.score for s in scores]) >= 0.99
    for name in CHECKS:
        judged = [s.checks[name].status == "pass" for s in scores if s.checks[name].status != "n/a"]
        assert judged and np.mean(judged) >= 0.97, name
    # varied: every motion, both cameras moves and the pillar are in there, and gravity is judged often
    facts = [scene.facts for scene, _ in clips]
    assert {o.motion for f in facts for o in f.objects} == set(MOTIONS)
    assert {f.camera for f in facts} == {"static", "pan_left", "pan_right"} and any(f.pillar for f in facts)
    assert sum(s.checks["gravity"].status != "n/a" for s in scores) >= N_TRUTH // 3


def test_truth_survives_h264(clips, tmp_path):
    from worldreel.data.video_io import read_video, write_video

    items = []
    for k, (scene, frames) in enumerate(clips[:16]):
        write_video(tmp_path / f"{k}.mp4", frames, 8)
        decoded, fps = read_video(tmp_path / f"{k}.mp4")
        assert fps == 8
        items.append((decoded, scene.facts))
    assert mean_score(items) >= 0.99


def test_other_sizes_and_lengths():
    from worldreel.data.render import render_clip
    from worldreel.data.world import sample_scene

    for size, seconds in (((128, 64), 4.0), ((64, 64), 8.0), ((128, 128), 2.0)):
        scenes = [sample_scene(seed, size=size, seconds=seconds) for seed in range(4)]
        assert mean_score([(render_clip(s), s.facts) for s in scenes]) >= 0.95, (size, seconds)


# ---------------------------------------------------------------------------------------
# Corruptions score low


def _shuffled(scene, frames, k):
    return frames[np.random.default_rng(k).permutation(len(frames))]


def _frozen(scene, frames, k):
    return np.repeat(frames[:1], len(frames), 0)


def _noise(scene, frames, k):
    return np.random.default_rng(k).integers(0, 256, frames.shape, dtype=np.uint8)


def _swapped(scene, frames, k):
    from worldreel.data.render import render_clip

    shift = 1 + k % (len(COLORS) - 1)
    swap = dict(zip(COLORS, COLORS[shift:] + COLORS[:shift]))  # every colour becomes another
    return render_clip(replace(scene, objects=tuple(replace(o, color=swap[o.color]) for o in scene.objects)))


def _reversed(scene, frames, k):
    return frames[::-1].copy()


@pytest.mark.slow
@pytest.mark.parametrize("name, corrupt, limit", [
    ("shuffled", _shuffled, 0.6), ("noise", _noise, 0.6), ("colour-swapped", _swapped, 0.6),
    # A still frame of the truth keeps presence, extras, permanence and stability (and a
    # static camera): 4/7 is its floor, ~0.70 its mean. Time reversal keeps those too.
    ("frozen", _frozen, 0.75), ("time-reversed falls", _reversed, 0.72),
])
def test_corruptions_score_low(clips, name, corrupt, limit):
    chosen = clips
    if name == "time-reversed falls":
        chosen = [(s, f) for s, f in clips if any(o.motion == "falls" for o in s.facts.objects)]
    chosen = chosen[:N_CORRUPT]
    assert len(chosen) >= 40
    results = [score_video(corrupt(s, f, k), s.facts) for k, (s, f) in enumerate(chosen)]
    assert np.mean([r.score for r in results]) <= limit
    movers = [r for (s, _), r in zip(chosen, results) if any(o.motion != "rests" for o in s.facts.objects)]
    if name in ("frozen", "time-reversed falls", "shuffled"):
        assert np.mean([r.checks["motion"].status == "fail" for r in movers]) >= 0.9
    if name == "time-reversed falls":
        assert np.mean([r.checks["gravity"].status == "fail" for r in results]) >= 0.9
    if name == "shuffled":
        assert np.mean([r.checks["permanence"].status == "fail" for r in movers]) >= 0.8


# ---------------------------------------------------------------------------------------
# Each check catches its fault


def _first(clips, want):
    return next((s, f) for s, f in clips if want(s.facts))


def test_camera_detects_a_wrong_pan(clips):
    for camera in ("static", "pan_left", "pan_right"):
        scene, frames = _first(clips, lambda f, c=camera: f.camera == c)
        assert score_video(frames, scene.facts).checks["camera"].status == "pass"
        for other in {"static", "pan_left", "pan_right"} - {camera}:
            wrong = replace(scene.facts, camera=other)
            assert score_video(frames, wrong).checks["camera"].status == "fail", (camera, other)


def test_gravity_detects_wrong_acceleration(clips):
    scene, frames = _first(clips, lambda f: len(f.objects) == 1 and f.objects[0].motion == "falls")
    assert score_video(frames, scene.facts).checks["gravity"].status == "pass"
    # Played at half the frame rate the same fall means a quarter of the world's g.
    assert score_video(frames, scene.facts, fps=4).checks["gravity"].status == "fail"
    still = replace(scene.facts, objects=tuple(replace(o, motion="rests") for o in scene.facts.objects))
    assert score_video(frames, still).checks["gravity"].status == "n/a"


def test_motion_detects_the_wrong_direction(clips):
    scene, frames = _first(clips, lambda f: len(f.objects) == 1 and f.objects[0].motion == "rolls_right")
    assert score_video(frames, scene.facts).checks["motion"].status == "pass"
    left = replace(scene.facts, objects=(replace(scene.facts.objects[0], motion="rolls_left"),))
    assert score_video(frames, left).checks["motion"].status == "fail"


def test_permanence_detects_popping(clips):
    scene, frames, track = next(
        (s, f.copy(), t)
        for s, f in clips if s.facts.camera == "static" and not s.facts.pillar
        for t in tracking.observe(f).tracks if len(t.dets) == len(f) and np.ptp(t.xy, axis=0).max() < 1  # a still object
    )
    assert score_video(frames, scene.facts).checks["permanence"].status == "pass"
    x0, y0, x1, y1 = track.dets[0].box
    frames[14:18, max(y0 - 1, 0) : y1 + 2, max(x0 - 1, 0) : x1 + 2] = BACKGROUND  # gone for half a second
    result = score_video(frames, scene.facts)
    assert result.checks["permanence"].status == "fail"
    assert "vanishes" in result.checks["permanence"].reason


def test_failure_kinds_group_reasons_without_numbers_and_colours(clips):
    from worldreel.eval.report import failure_kind, failure_kinds

    assert failure_kind("the red box appears from nowhere at frame 4") == "the COLOUR box appears from nowhere at frame N"
    assert failure_kind("the magenta ball accelerates at 0.35 g") == "the COLOUR ball accelerates at N g"
    assert failure_kind("") == "(no reason given)"

    def entry(**failed):
        checks = {name: {"status": "pass", "reason": ""} for name in CHECKS}
        checks.update({name: {"status": "fail", "reason": why} for name, why in failed.items()})
        return {"checks": checks}

    videos = {
        "a": entry(permanence="the red box vanishes after frame 3", gravity="the red box accelerates at 0.2 g"),
        "b": entry(permanence="the blue box vanishes after frame 12"),
        "c": entry(gravity="the green ball accelerates at 1.9 g"),
        "d": entry(camera="floor ticks not readable"),
    }
    kinds = failure_kinds(videos)
    assert kinds[0] == {"check": "permanence", "reason": "the COLOUR box vanishes after frame N", "videos": 2}
    assert {(k["check"], k["videos"]) for k in kinds[1:]} == {("gravity", 1), ("camera", 1)}
    assert len(kinds) == 4 and sum(k["videos"] for k in kinds) == 5  # the two gravity reasons differ by shape
    # A real failure from the scorer groups the same way.
    scene, frames = clips[0]
    blank = np.broadcast_to(frames[:, :1, :1], frames.shape).copy()  # every frame one colour: nothing to see
    real = score_video(blank, scene.facts).to_dict()
    assert failure_kinds({"x": real}) and all(k["videos"] == 1 for k in failure_kinds({"x": real}))
    assert not any(c in k["reason"] for k in failure_kinds({"x": real}) for c in ("red", "green", "blue", "0", "1", "2"))


def test_motion_detects_a_hit_that_never_happens(clips):
    def apart(scene, frames):  # two objects, no stated hit, never within 12 px of each other
        if len(scene.facts.objects) != 2 or any(o.hits is not None for o in scene.facts.objects):
            return False
        tracks = tracking.observe(frames).tracks
        return len(tracks) == 2 and min(
            tracking.box_gap(d, e) for d in tracks[0].dets for e in tracks[1].dets if d.frame == e.frame) > 12

    scene, frames = next((s, f) for s, f in clips if apart(s, f))
    assert score_video(frames, scene.facts).checks["motion"].status == "pass"
    mover = 0 if scene.facts.objects[0].motion != "rests" else 1
    objects = list(scene.facts.objects)
    objects[mover] = replace(objects[mover], hits=1 - mover)
    result = score_video(frames, replace(scene.facts, objects=tuple(objects)))
    assert result.checks["motion"].status == "fail" and "never touches" in result.checks["motion"].reason


def test_extras_detects_an_unasked_for_object(clips):
    scene, frames = _first(clips, lambda f: len(f.objects) == 1 and f.objects[0].color != "red")
    assert score_video(frames, scene.facts).checks["extras"].status == "pass"
    frames = frames.copy()
    frames[:, 4:12, 4:12] = PALETTE["red"]  # a red box hanging in the sky, in every frame
    assert score_video(frames, scene.facts).checks["extras"].status == "fail"
    asked = replace(scene.facts, objects=scene.facts.objects + (replace(scene.facts.objects[0], color="red", shape="box",
                                                                         motion="rests"),))
    assert score_video(frames, asked).checks["extras"].status == "pass"


def test_stability_detects_flicker(clips):
    scene, frames = clips[0]
    assert score_video(frames, scene.facts).checks["stability"].status == "pass"
    flicker = frames.astype(np.int16)
    flicker[1::2] += 12  # every other frame brighter
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)
    assert score_video(flicker, scene.facts).checks["stability"].status == "fail"


def test_score_api_and_speed(clips):
    scene, frames = clips[3]
    result = score_video(frames, scene.facts)
    data = result.to_dict()
    assert set(data) == {"score", "failed", "checks"} and set(data["checks"]) == set(CHECKS)
    assert 0.0 <= data["score"] <= 1.0 and data["failed"] == result.failed
    with pytest.raises(ValueError):
        score_video(frames.astype(np.float32), scene.facts)
    # Its speed (about 30 ms per 33-frame 64x64 clip) is a benchmark, not a timed test:
    # `worldreel bench world` reports seconds per video.


# ---------------------------------------------------------------------------------------
# Folder scoring, the CLI, the prompt suites


def _prompts_file(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_truth_folder_json_and_report(tmp_path):
    from worldreel.cli import main

    prompts = _prompts_file(tmp_path / "p.txt", ["# two prompts", "a red ball falls", "",
                                                  "a blue box slides to the left; the camera pans right"])
    out = tmp_path / "truth"
    assert main(["bench", "world", "--truth", "--prompts", str(prompts), "--seeds", "2", "--out", str(out)]) == 0
    result = json.loads((out / "worldbench.json").read_text())
    assert result["n_videos"] == 4 and result["mean_score"] >= 0.99
    assert set(result["checks"]) == set(CHECKS) and result["checks"]["gravity"] is not None
    assert result["spread"]["prompts_with_several_videos"] == 2 and result["spread"]["fail_on_some_seed"] == 0.0
    assert result["failures"] == []  # nothing failed, so no kind of failure is listed
    assert sorted(result["videos"]) == [f"{k:06d}.mp4" for k in range(4)]
    assert (out / "worldbench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --videos on the same folder, JSON elsewhere, no figure
    other = tmp_path / "again.json"
    assert main(["bench", "world", "--videos", str(out), "--json", str(other), "--no-report"]) == 0
    assert json.loads(other.read_text())["mean_score"] == result["mean_score"]
    assert not other.with_suffix(".png").exists()


def test_folder_skips_prompts_outside_the_vocabulary(tmp_path):
    from worldreel.data.render import render_clip
    from worldreel.data.video_io import write_video
    from worldreel.data.world import sample_scene
    from worldreel.data.captions import caption
    from worldreel.eval.report import score_folder

    scene = sample_scene(5)
    write_video(tmp_path / "a.mp4", render_clip(scene), 8)
    write_video(tmp_path / "b.mp4", render_clip(scene), 8)
    rows = [{"file": "a.mp4", "caption": caption(scene.facts, np.random.default_rng(0))},
            {"file": "b.mp4", "caption": "a purple dragon flies"}, {"file": "c.mp4", "caption": "a red ball falls"}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_folder(tmp_path)
    assert list(result["videos"]) == ["a.mp4"] and result["videos"]["a.mp4"]["score"] == 1.0
    assert set(result["skipped"]) == {"b.mp4", "c.mp4"} and "colour" in result["skipped"]["b.mp4"]


def test_cli_bad_input(tmp_path, capsys):
    from worldreel.cli import main

    assert main(["bench", "world", "--videos", str(tmp_path)]) == 2  # no captions.jsonl
    assert "captions.jsonl" in capsys.readouterr().err
    assert main(["bench", "world", "--videos", str(tmp_path), "--truth", "--out", str(tmp_path / "o")]) == 2
    assert "exactly one" in capsys.readouterr().err
    bad = _prompts_file(tmp_path / "bad.txt", ["a red ball falls", "a purple ball falls"])
    assert main(["bench", "world", "--truth", "--prompts", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "colour" in err
    assert not (tmp_path / "o").exists()  # nothing written before the input was checked


def _fake_generator(monkeypatch, calls: list):
    """Generator replaced by one that renders the truth for (prompt, seed) and logs its calls;
    weights_digest says which model. Returns bench_world."""
    from worldreel.data.captions import parse_caption
    from worldreel.data.render import render_clip
    from worldreel.data.world import scene_from_facts
    from worldreel.pipelines import generate as generate_module
    from worldreel.pipelines.generate import Video

    class Fake:
        sampling = {"sampler": "euler", "steps": 20, "guidance": 4.0, "shift": 3.0}  # the model's own settings

        @classmethod
        def load(cls, model, device="cpu", precision="fp32"):
            calls.append(("load", model, device) if precision == "fp32" else ("load", model, device, precision))
            return cls()

        def generate(self, prompt, *, seed=None, **kwargs):
            calls.append(("generate", prompt, seed))
            frames = render_clip(scene_from_facts(parse_caption(prompt), seed))
            used = {**self.sampling, **{k: v for k, v in kwargs.items() if k in self.sampling and v is not None}}
            return Video(frames=frames, fps=8, prompt=prompt, model_prompt=prompt, seed=seed, sampling=used)

    monkeypatch.setattr(generate_module, "Generator", Fake)
    import worldreel.model_folder as loading_module
    from worldreel.cli.bench import bench_world

    monkeypatch.setattr(loading_module, "weights_digest", lambda model: {"dit": f"digest of {model}"})
    return bench_world


def test_model_mode_generates_then_scores(tmp_path, monkeypatch):
    """--model calls Generator.load(model).generate(prompt, seed=...) per prompt and seed."""
    calls = []
    bench_world = _fake_generator(monkeypatch, calls)
    prompts = _prompts_file(tmp_path / "p.txt", ["a green ball rolls to the right"])
    result = bench_world(model="fake-model", prompts=prompts, seeds=3, seed_base=10, out=tmp_path / "gen", no_report=True,
                         steps=7)
    assert calls[0] == ("load", "fake-model", "cpu")
    assert [c[2] for c in calls[1:]] == [10, 11, 12]
    lines = [json.loads(line) for line in (tmp_path / "gen" / "captions.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in lines] == [10, 11, 12] and all(row["model"] == "fake-model" for row in lines)
    assert result["n_videos"] == 3 and result["mean_score"] >= 0.99
    used = {"sampler": "euler", "steps": 7, "guidance": 4.0, "shift": 3.0}  # the model's settings, the call's steps
    assert all(row["sampling"] == used for row in lines) and result["source"]["sampling"] == used
    assert result["source"]["weights"] == {"dit": "digest of fake-model"}  # which weights, not only which name
    timing = result["timing"]  # the benchmark's own speed numbers
    assert timing["make_seconds_per_video"] > 0 and timing["score_seconds_per_video"] > 0


def test_precision_reaches_the_generator_and_is_recorded(tmp_path, monkeypatch, capsys):
    """--precision bf16 loads the generator in bf16 and the folder's settings say so (an --add in
    another precision is refused); with --truth it is an error naming --precision."""
    calls = []
    bench_world = _fake_generator(monkeypatch, calls)
    prompts = _prompts_file(tmp_path / "p.txt", ["a red box falls"])
    bench_world(model="fake-model", prompts=prompts, seeds=1, out=tmp_path / "gen", no_report=True, precision="bf16")
    assert calls[0] == ("load", "fake-model", "cpu", "bf16")
    row = json.loads((tmp_path / "gen" / "captions.jsonl").read_text().splitlines()[0])
    assert row["settings"]["precision"] == "bf16"
    with pytest.raises(UserError):
        bench_world(model="fake-model", prompts=prompts, seeds=2, out=tmp_path / "gen", no_report=True, add=True)
    from worldreel.cli import main

    assert main(["bench", "world", "--truth", "--prompts", str(prompts), "--out", str(tmp_path / "t"),
                 "--precision", "bf16"]) == 2
    assert "--precision" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_add_resumes_a_bench_and_grows_it_to_more_seeds(tmp_path, monkeypatch):
    """--add keeps the videos made the same way and makes only the missing (prompt, seed)
    pairs; a folder made another way (or before rows recorded how) is refused, naming --add."""
    calls = []
    bench_world = _fake_generator(monkeypatch, calls)
    prompts = _prompts_file(tmp_path / "p.txt", ["a green ball rolls to the right", "a red box falls"])
    out = tmp_path / "gen"
    bench_world(model="fake-model", prompts=prompts, seeds=2, out=out, no_report=True)
    first = (out / "000001.mp4").read_bytes()
    # Interrupted: the last video never written.
    (out / "000003.mp4").unlink()
    calls.clear()
    result = bench_world(model="fake-model", prompts=prompts, seeds=3, out=out, no_report=True, add=True)
    made = [(c[1], c[2]) for c in calls if c[0] == "generate"]
    assert made == [("a green ball rolls to the right", 2), ("a red box falls", 1), ("a red box falls", 2)]
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted((r["caption"], r["seed"]) for r in rows) == sorted((p, k) for p in ("a green ball rolls to the right",
                                                                                      "a red box falls") for k in range(3))
    assert len({r["file"] for r in rows}) == 6 and (out / "000001.mp4").read_bytes() == first
    assert result["n_videos"] == 6 and result["source"]["weights"] == {"dit": "digest of fake-model"}
    # Nothing missing: nothing made, the same score.
    calls.clear()
    again = bench_world(model="fake-model", prompts=prompts, seeds=3, out=out, no_report=True, add=True)
    assert not [c for c in calls if c[0] == "generate"] and again["mean_score"] == result["mean_score"]
    # Other settings, another model or rows without settings: refused, naming --add, before any video.
    calls.clear()
    assert "steps" in _add_error(bench_world, prompts, out, steps=7).message
    assert "guidance_mode" in _add_error(bench_world, prompts, out, guidance_mode="apg").message
    with pytest.raises(UserError) as err:  # a bad mode is named before any video is made
        bench_world(model="fake-model", prompts=prompts, seeds=4, out=out, no_report=True, guidance_mode="cfg++")
    assert err.value.param == "guidance_mode"
    assert "model, weights" in _add_error(bench_world, prompts, out, model="other-model").message
    assert not [c for c in calls if c[0] == "generate"]
    (out / "captions.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "settings"}) + "\n"
                                                for r in rows))
    assert "before rows recorded" in _add_error(bench_world, prompts, out).message
    with pytest.raises(UserError) as err:
        bench_world(videos=out, add=True, no_report=True)
    assert err.value.param == "add"


def _add_error(bench_world, prompts, out, **kwargs) -> UserError:
    """The error of a --add bench into ``out`` (fake-model, 4 seeds unless kwargs say otherwise)."""
    with pytest.raises(UserError) as err:
        bench_world(**{"model": "fake-model", **kwargs}, prompts=prompts, seeds=4, out=out, no_report=True, add=True)
    assert err.value.param == "add"
    return err.value


def test_prompt_suites_cover_the_world():
    from worldreel.data.captions import parse_caption
    from worldreel.data.world import HOLDOUT, is_holdout

    facts = [parse_caption(p) for p in default_prompt_suite()]
    objects = [o for f in facts for o in f.objects]
    assert {o.color for o in objects} == set(COLORS) and {o.shape for o in objects} == set(SHAPES)
    assert {o.motion for o in objects} == set(MOTIONS)
    assert {f.camera for f in facts} == {"static", "pan_left", "pan_right"}
    assert {len(f.objects) for f in facts} >= {1, 2, 3}
    assert any(o.behind_pillar for o in objects) and any(f.pillar and not any(o.behind_pillar for o in f.objects) for f in facts)
    assert any(o.hits is not None for o in objects)
    assert any(len({(o.color, o.shape) for o in f.objects}) < len(f.objects) for f in facts)  # counted ("two blue balls")
    assert not any(is_holdout(f) for f in facts)
    held = [parse_caption(p) for p in holdout_prompt_suite()]
    assert all(is_holdout(f) for f in held)
    assert {(o.color, o.shape, o.motion) for f in held for o in f.objects} == set(HOLDOUT)


def test_truth_through_an_autoencoder_measures_its_ceiling(tmp_path, capsys):
    """--truth --autoencoder MODEL scores the truth after the model's encode/decode: a random
    autoencoder wrecks it, and the rows say what the videos are."""
    from worldreel.cli import main
    from worldreel.data.video_io import read_video
    from worldreel.model_folder import save_random_model

    folder = save_random_model(tmp_path / "m", overrides=["dit.width=32", "dit.depth=2", "dit.heads=2",
                                                          "vae.base_channels=8"])
    prompts = _prompts_file(tmp_path / "p.txt", ["a red ball falls"])
    out = tmp_path / "through"
    assert main(["bench", "world", "--truth", "--autoencoder", str(folder), "--prompts", str(prompts),
                 "--out", str(out), "--no-report"]) == 0
    result = json.loads((out / "worldbench.json").read_text())
    assert result["source"]["autoencoder"] == str(folder) and result["mean_score"] < 0.9
    row = json.loads((out / "captions.jsonl").read_text())
    assert row["source"] == "truth through autoencoder"
    frames, _ = read_video(out / "000000.mp4")
    assert frames.shape == (33, 64, 64, 3)
    assert main(["bench", "world", "--videos", str(out), "--autoencoder", str(folder)]) == 2
    assert "--autoencoder goes with --truth" in capsys.readouterr().err


def _result_file(path, scores: dict):
    """A world-bench JSON with the given {(prompt, seed): score} videos."""
    videos = {f"{i:06d}.mp4": {"prompt": p, "seed": s, "score": v} for i, ((p, s), v) in enumerate(scores.items())}
    path.write_text(json.dumps({"videos": videos, "mean_score": sum(scores.values()) / len(scores),
                                "checks": {c: 0.5 for c in CHECKS}, "spread": {"fail_on_every_seed": 0.25}}))
    return path


def test_compare_pairs_videos_by_prompt_and_seed(tmp_path, capsys):
    """bench compare: the paired difference over common (prompt, seed) videos, its 95 % interval
    from the per-video differences, and whether it is within noise; bad input names 'results'."""
    from worldreel.cli import main
    from worldreel.eval.compare import compare, read_result

    keys = [(p, s) for p in ("a red ball falls", "a blue box falls") for s in range(4)]
    base = {k: 0.2 * (i % 5) for i, k in enumerate(keys)}  # wide spread between videos
    shifted = {k: v + (0.1 if i % 2 else 0.2) for i, (k, v) in enumerate(base.items())}  # +0.15 on every video, +-0.05
    a = _result_file(tmp_path / "a.json", base)
    (tmp_path / "b").mkdir()
    b = _result_file(tmp_path / "b" / "worldbench.json", shifted)
    noisy = _result_file(tmp_path / "c.json", {k: v + (0.3 if i % 2 else -0.3) for i, (k, v) in enumerate(base.items())})
    out = compare([("a", read_result(a)), ("b", read_result(tmp_path / "b")), ("c", read_result(noisy))])
    b_row, c_row = out["results"][1], out["results"][2]
    assert b_row["paired"]["videos"] == 8 and abs(b_row["paired"]["difference"] - 0.15) < 1e-9
    # Paired: the videos' own spread (0 to 0.8) drops out; only the +-0.05 remains.
    sd = (8 * 0.05 ** 2 / 7) ** 0.5
    assert abs(b_row["paired"]["interval95"] - 1.96 * sd / 8 ** 0.5) < 1e-9 and b_row["interval95"] > 0.2
    assert b_row["paired"]["prompts_up"] == 2 and abs(c_row["paired"]["difference"]) < 1e-9
    assert main(["bench", "compare", str(a), str(tmp_path / "b"), str(noisy), "--json", str(tmp_path / "cmp.json")]) == 0
    printed = capsys.readouterr().out
    assert "+0.150 ± 0.037" in printed and "(within noise)" in printed
    assert json.loads((tmp_path / "cmp.json").read_text())["baseline"] == str(a)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"mean_score": 0.5}))
    for args in ([str(a)], [str(a), str(tmp_path / "nowhere")], [str(a), str(tmp_path / "bad.json")],
                 [str(a), str(tmp_path / "other.json")]):
        assert main(["bench", "compare", *args]) == 2
        assert "results" in capsys.readouterr().err
