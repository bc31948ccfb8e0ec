"""Picking the start (sampling ``best_of``): the layout score, ``rank_starts``, the generator, the
CLI and ``train pack``."""
import numpy as np
import pytest
import torch

from worldreel.data.captions import parse_caption
from worldreel.data.facts import COLORS
from worldreel.diffusion import steer
from worldreel.diffusion.steer import layout_score, rank_starts
from worldreel.errors import UserError
from worldreel.pipelines.generate import Generator, check_best_of, check_finalists, check_likelihood

FAST = dict(steps=6, size="32x32", seconds=1)  # 9 frames: 3 latent frames
RED, BLUE, GREEN = COLORS.index("red"), COLORS.index("blue"), COLORS.index("green")


def _occ(f=4, h=8, w=8):
    return torch.zeros(1, len(COLORS), f, h, w)


def _ball(occ, colour, col, row=4, mass=3.5, frames=None):
    """Spread ``mass`` of ``colour`` over a 2x2 block at (row, col) in each of ``frames`` (all by default)."""
    for k in frames if frames is not None else range(occ.shape[2]):
        occ[0, colour, k, row:row + 2, col:col + 2] = mass / 4
    return occ


def test_an_unstated_colour_lowers_the_score():
    facts = parse_caption("a red ball rests on the floor")
    tidy = _ball(_occ(), RED, 3)
    extra = _ball(_ball(_occ(), RED, 3), GREEN, 6)
    assert layout_score(tidy, facts).item() > layout_score(extra, facts).item()


def test_more_of_a_colour_than_stated_lowers_the_score_and_the_stated_count_does_not():
    one = parse_caption("a red ball rests on the floor")
    two = parse_caption("two red balls rest on the floor")
    pair = _ball(_ball(_occ(), RED, 1), RED, 5)
    single = _ball(_occ(), RED, 3)
    assert layout_score(pair, one).item() < layout_score(single, one).item() == pytest.approx(0.0, abs=1e-6)
    assert layout_score(pair, two).item() == pytest.approx(0.0, abs=1e-6)  # two stated, two there: tidy


def test_the_count_scales_with_the_frame_height_as_the_world_does():
    """At 128x128 (a 16x16 latent) an object covers four times the cells; at 128x64 as many as at 64x64."""
    one = parse_caption("a red ball rests on the floor")
    tall = _ball(_occ(h=16, w=16), RED, 6, row=6, mass=4 * 3.5)
    wide = _ball(_occ(h=8, w=16), RED, 6, mass=3.5)
    assert layout_score(tall, one).item() == pytest.approx(0.0, abs=1e-6)
    assert layout_score(wide, one).item() == pytest.approx(0.0, abs=1e-6)
    assert layout_score(_ball(_occ(h=8, w=16), RED, 6, mass=4 * 3.5), one).item() < 0


def test_an_object_that_pops_in_mid_frame_lowers_the_score_but_not_at_the_border_or_by_a_pillar():
    still = parse_caption("a red ball rests on the floor")
    steady = _ball(_occ(), RED, 3)
    pops = _ball(_occ(), RED, 3, frames=[2, 3])  # appears from nowhere in frame 2
    assert layout_score(pops, still).item() < layout_score(steady, still).item()
    # Entering across the side border is how a rolling object comes into a pan: not popping.
    rolls = parse_caption("a red ball rolls to the right; the camera pans left")
    entering = _ball(_occ(), RED, 6, frames=[2, 3])
    entering[0, RED, :2] = 0.0
    inside_pop = _ball(_occ(), RED, 3, frames=[2, 3])
    assert layout_score(entering, rolls).item() > layout_score(inside_pop, rolls).item()
    # With a pillar an object may come out from behind it: no popping term.
    pillar = parse_caption("a red ball rolls to the right behind a gray pillar")
    assert layout_score(pops, pillar).item() == pytest.approx(layout_score(steady, pillar).item(), abs=1e-6)


def test_the_stated_motion_counts_in_the_score():
    facts = parse_caption("a red ball rolls to the right")
    right, left = _occ(f=5), _occ(f=5)
    for k in range(5):
        _ball(right, RED, 1 + k, frames=[k])
        _ball(left, RED, 5 - k, frames=[k])
    assert layout_score(right, facts).item() > layout_score(left, facts).item()


def test_a_stated_object_missing_lowers_the_score_below_a_start_that_draws_it():
    """An empty scene moves nothing the wrong way; without the shortfall term it outscored every
    start that drew a resting ball that jitters (world-tiny: 'a white ball rests on the floor')."""
    facts = parse_caption("a red ball rests on the floor")
    empty = _occ()
    jitter = _occ()
    for k, col in enumerate([3, 4, 3, 4]):
        _ball(jitter, RED, col, frames=[k])
    assert layout_score(jitter, facts).item() < 0  # the jitter costs something
    assert layout_score(empty, facts).item() < layout_score(jitter, facts).item()
    # Two stated, one drawn (at 2.5, as the probe reads a whole object early on): short of the second.
    two = parse_caption("two red balls rest on the floor")
    one_drawn = _ball(_occ(), RED, 3, mass=2.5)
    both_drawn = _ball(_ball(_occ(), RED, 1, mass=2.5), RED, 5, mass=2.5)
    assert layout_score(one_drawn, two).item() < layout_score(both_drawn, two).item() == pytest.approx(0.0, abs=1e-6)


def test_read_by_its_worst_frame_one_ghost_frame_outweighs_a_faint_steady_tint():
    """Finished latents are read by each untidiness term's worst frame (``worst``): a ghost in
    one frame, or the stated object gone from one, fails the world's rules however short; the
    mean over frames ranks a faint tint in every frame below it."""
    facts = parse_caption("a red ball rests on the floor")
    flash = _ball(_ball(_occ(), RED, 3), GREEN, 6, mass=2.0, frames=[2])  # mean 0.5 a frame, worst 2.0
    tint = _ball(_ball(_occ(), RED, 3), GREEN, 6, mass=0.6)  # 0.6 in every frame
    assert layout_score(flash, facts).item() > layout_score(tint, facts).item()
    assert layout_score(flash, facts, worst=True).item() < layout_score(tint, facts, worst=True).item()
    gone = _ball(_occ(), RED, 3, frames=[0, 1, 3])  # missing in frame 2 (and popping out and in around it)
    steady = _ball(_ball(_occ(), RED, 3), GREEN, 6, mass=0.6)  # every frame alike: its worst is its mean
    assert layout_score(gone, facts, worst=True).item() < layout_score(gone, facts).item() < 0
    assert layout_score(steady, facts, worst=True).item() == pytest.approx(layout_score(steady, facts).item())


def test_world_drift_is_the_pan_against_the_camera_in_centre_units():
    # 64x64, 4 s: the camera pans 0.0625 frame heights a second = 0.5 px a frame, 2 px a latent
    # frame; the outer cells' centres are 56 px apart, 2 units.
    assert steer.world_drift("pan_left", 4.0, (64, 64), 8, 4, 8) == pytest.approx(2 * 2 / 56)
    assert steer.world_drift("pan_right", 4.0, (64, 64), 8, 4, 8) == pytest.approx(-2 * 2 / 56)
    assert steer.world_drift("static", 4.0, (64, 64), 8, 4, 8) == 0.0
    # A longer clip pans slower (0.25 frame heights in all), a taller frame as many heights.
    assert steer.world_drift("pan_left", 8.0, (64, 64), 8, 4, 8) == pytest.approx(1 * 2 / 56)
    assert steer.world_drift("pan_left", 4.0, (128, 128), 16, 4, 8) == pytest.approx(4 * 2 / 120)


def test_under_a_pan_a_resting_object_must_move_with_the_world():
    """Under 'the camera pans left' the world moves right across the screen: a resting ball that
    does scores above one fixed on the screen and one going left (world-tiny drew those)."""
    facts = parse_caption("a red ball rests on the floor; the camera pans left")
    drift = steer.world_drift("pan_left", 4.0, (64, 64), 8, 4, 8)
    f = 9
    with_world, fixed, against = _occ(f=f, w=8), _occ(f=f, w=8), _occ(f=f, w=8)
    for k in range(f):
        shift = k * drift * 3.5  # centre units -> cells (8 cells span 2 units from centre to centre: 3.5 a unit)
        for occ, at in ((with_world, 2 + shift), (fixed, 3.0), (against, 4 - shift)):
            lo = int(np.floor(at))
            occ[0, RED, k, 4:6, lo] = 3.5 / 2 * (1 - (at - lo))
            occ[0, RED, k, 4:6, lo + 1] = 3.5 / 2 * (at - lo)
    scores = [layout_score(o, facts, drift).item() for o in (with_world, fixed, against)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] == pytest.approx(0.0, abs=0.02)
    # Without the drift (unknown), only the height counts: all three the same.
    plain = [layout_score(o, facts).item() for o in (with_world, fixed, against)]
    assert plain == pytest.approx([plain[0]] * 3, abs=1e-6)


def test_rank_starts_puts_the_best_first_and_the_earlier_of_equals_before():
    calls = []

    def look(x):
        calls.append(float(x.sum()))
        return x + 1, x  # (the state after the look-ahead, the clean prediction)

    class Probe(torch.nn.Module):  # red where channel 0 is positive: more red cells, more untidy for a blue prompt
        def forward(self, x0):
            logits = torch.full((1, len(COLORS), *x0.shape[2:]), -20.0)
            logits[:, RED] = 40 * x0[:, 0] - 20
            return logits

    facts = parse_caption("a blue ball rests on the floor")
    starts = [torch.ones(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4)]
    order, states, scores = rank_starts(look, starts, Probe(), facts)
    assert len(calls) == 3 and order == [1, 2, 0] and torch.equal(states[1], starts[1] + 1)
    assert scores[0] < scores[1] == scores[2]


@pytest.mark.parametrize("value", [0, 17, 2.5, "x", True, None])
def test_bad_best_of_names_the_parameter(value):
    with pytest.raises(UserError) as err:
        check_best_of(value)
    assert err.value.param == "best_of"


# ----------------------------------------------------------------------------- the generator


def _fixed_scores(monkeypatch, scores):
    """layout_score returning ``scores`` in call order (one per start), recording the calls."""
    seen = []

    def fake(occupancy, facts, drift=None, worst=False):
        seen.append((occupancy.shape, worst))
        return torch.tensor([scores[len(seen) - 1]])

    monkeypatch.setattr(steer, "layout_score", fake)
    return seen


def test_the_seed_own_start_picked_is_the_seed_own_video(probed_gen, monkeypatch):
    """Picking runs each start a few steps and the picked one goes on from there: when the seed's
    own start wins, the video is the one best_of 1 makes, frame for frame."""
    plain = probed_gen.generate("a red ball rolls to the right", seed=4, **FAST)
    seen = _fixed_scores(monkeypatch, [1.0, 0.0, 0.0])
    own = probed_gen.generate("a red ball rolls to the right", seed=4, best_of=3, **FAST)
    assert len(seen) == 3 and np.array_equal(plain.frames, own.frames)
    assert own.sampling["best_of"] == 3 and "best_of" not in plain.sampling


def test_another_start_picked_makes_another_video_and_a_seed_still_means_one(probed_gen, monkeypatch):
    plain = probed_gen.generate("a red ball rolls to the right", seed=4, **FAST)
    _fixed_scores(monkeypatch, [0.0, 0.0, 1.0])
    third = probed_gen.generate("a red ball rolls to the right", seed=4, best_of=3, **FAST)
    _fixed_scores(monkeypatch, [0.0, 0.0, 1.0])
    again = probed_gen.generate("a red ball rolls to the right", seed=4, best_of=3, **FAST)
    assert not np.array_equal(plain.frames, third.frames) and np.array_equal(third.frames, again.frames)


def test_the_generator_scores_with_the_pan_of_its_clip(probed_gen, monkeypatch):
    """The drift the score gets is the world's pan for this clip: against the camera, at the
    clip's size, length and latent grid; none without a pan."""
    drifts = []
    score = steer.layout_score

    def spy(occupancy, facts, drift=None, worst=False):
        drifts.append(drift)
        return score(occupancy, facts, drift)

    monkeypatch.setattr(steer, "layout_score", spy)
    probed_gen.generate("a red box rests on the floor; the camera pans left", seed=0, best_of=2, **FAST)
    probed_gen.generate("a red box rests on the floor; the camera pans right", seed=0, best_of=2, **FAST)
    probed_gen.generate("a red box rests on the floor", seed=0, best_of=2, **FAST)
    vae = probed_gen.config.vae
    want = steer.world_drift("pan_left", 1.0, (32, 32), 32 // vae.space_factor, vae.time_factor, probed_gen.config.fps)
    assert want > 0 and drifts == pytest.approx([want, want, -want, -want, 0.0, 0.0])


def test_picking_with_the_real_score_and_a_progress_bar_that_ends_full(probed_gen):
    marks = []
    video = probed_gen.generate("a red ball rolls to the right and a blue box rests", seed=1, best_of=4,
                                progress=marks.append, **FAST)
    assert video.frames.shape == (9, 32, 32, 3) and video.sampling["best_of"] == 4
    assert marks == sorted(marks) and marks[-1] == 1.0 and max(marks[:-1]) <= 1.0


def test_finalists_are_made_to_the_end_and_the_best_read_there_is_kept(probed_gen, monkeypatch):
    """The look-ahead ranks the starts; the best two are made to the end and read again: the
    video is the finalist the end reading prefers, frame for frame the video that start makes
    alone, and a tie at the end goes to the look-ahead's first."""
    prompt = "a red ball rolls to the right"
    _fixed_scores(monkeypatch, [0.0, 1.0, 0.0])
    second = probed_gen.generate(prompt, seed=4, best_of=3, **FAST)  # start 1 alone
    _fixed_scores(monkeypatch, [1.0, 0.0, 0.0])
    first = probed_gen.generate(prompt, seed=4, best_of=3, **FAST)  # start 0 alone
    assert not np.array_equal(first.frames, second.frames)
    seen = _fixed_scores(monkeypatch, [1.0, 0.5, 0.0, 0.2, 0.9])  # look-ahead: 0 then 1; at the end 1 wins
    late = probed_gen.generate(prompt, seed=4, best_of=3, finalists=2, **FAST)
    assert len(seen) == 5 and np.array_equal(late.frames, second.frames)
    assert late.sampling["best_of"] == 3 and late.sampling["finalists"] == 2
    _fixed_scores(monkeypatch, [1.0, 0.5, 0.0, 0.3, 0.3])  # a tie at the end: the look-ahead's best
    assert np.array_equal(probed_gen.generate(prompt, seed=4, best_of=3, finalists=2, **FAST).frames, first.frames)


def test_finalists_read_the_clean_latents_and_the_progress_bar_counts_them(probed_gen, monkeypatch):
    shapes = _fixed_scores(monkeypatch, [0.0] * 6)
    marks = []
    video = probed_gen.generate("a red ball rolls to the right and a blue box rests", seed=1, best_of=4,
                                finalists=2, refine=1, progress=marks.append, **FAST)
    assert len(shapes) == 6 and shapes[4][0] == shapes[5][0] == shapes[0][0]  # 4 look-aheads, 2 finalists: one grid
    assert [worst for _, worst in shapes] == [False] * 4 + [True] * 2  # finished latents: read by the worst frame
    assert marks == sorted(marks) and marks[-2] == pytest.approx(1.0) and marks[-1] == 1.0
    assert video.sampling["finalists"] == 2
    _fixed_scores(monkeypatch, [0.0] * 4)
    more = probed_gen.generate("a red ball rolls to the right", seed=1, best_of=2, finalists=5, **FAST)
    assert more.sampling["finalists"] == 2  # at most the starts there are
    assert "finalists" not in probed_gen.generate("a red ball rolls to the right", seed=1, finalists=3,
                                                  **FAST).sampling  # nothing picked: nothing to make again


@pytest.mark.parametrize("name, check, value", [("finalists", check_finalists, v) for v in (0, 17, 2.5, "x", True, None)]
                         + [("likelihood", check_likelihood, v) for v in (-0.5, 11, "x", True, None)])
def test_bad_finalists_or_likelihood_names_the_parameter(name, check, value, probed_gen):
    with pytest.raises(UserError) as err:
        check(value)
    assert err.value.param == name
    if value is not None:
        with pytest.raises(UserError) as err:
            probed_gen.generate("a red ball falls", best_of=2, **{"finalists": 2, name: value}, **FAST)
        assert err.value.param == name


# --------------------------------------------------- likelihood (the finalists read by the denoiser too)


def test_flow_error_is_zero_for_the_clip_the_denoiser_expects_and_counts_free_frames_only():
    """A denoiser that believes the data is ``ref`` predicts the true velocity for ``ref`` at every
    noise level (error 0) and not for another clip; a difference in a given frame does not count."""
    torch.manual_seed(0)
    ref = torch.randn(1, 4, 3, 4, 4)
    noise = torch.randn(4, 3, 4, 4)

    def believes_ref(x, t):
        return (x - ref) / t[:, None, None, None, None]

    free = torch.tensor([False, True, True])
    other = ref.clone()
    other[:, :, 1] += 1.0
    assert steer.flow_error(believes_ref, ref, noise, free) == pytest.approx(0.0, abs=1e-10)
    assert steer.flow_error(believes_ref, other, noise, free) > 0.1
    given_only = ref.clone()
    given_only[:, :, 0] += 1.0  # differs in a given frame only
    assert steer.flow_error(believes_ref, given_only, noise, free) == pytest.approx(0.0, abs=1e-10)


def test_pick_finalist_weighs_both_readings_on_their_own_scales_and_a_tie_goes_to_the_first():
    fits = [1.0, 0.9, 0.0]
    assert steer.pick_finalist(fits) == 0 and steer.pick_finalist(fits, [9.0, 1.0, 5.0], 0.0) == 0
    assert steer.pick_finalist(fits, [9.0, 1.0, 5.0], 1.0) == 1  # 0 barely fits better and is far less typical
    # Each reading is standardised over the finalists: its units do not matter.
    assert steer.pick_finalist(fits, [9000.0, 1000.0, 5000.0], 1.0) == 1
    assert steer.pick_finalist(fits, [2.0, 2.0, 2.0], 5.0) == 0  # the same for all: counts nothing
    assert steer.pick_finalist([0.3, 0.3], [1.0, 1.0], 1.0) == 0  # a tie: the look-ahead's best
    assert steer.pick_finalist([0.3, 0.3], [1.0, 0.5], 0.1) == 1


def test_likelihood_keeps_the_finalist_the_denoiser_finds_more_typical(probed_gen, monkeypatch):
    """Two finalists the probe reads alike: with likelihood the one of lower flow error is kept,
    frame for frame the video its start makes alone; the progress bar counts the reading."""
    prompt = "a red ball rolls to the right"
    _fixed_scores(monkeypatch, [0.0, 1.0, 0.0])
    second = probed_gen.generate(prompt, seed=4, best_of=3, **FAST)  # start 1 alone
    _fixed_scores(monkeypatch, [1.0, 0.5, 0.0, 0.3, 0.3])  # the look-ahead ranks 0 then 1; the probe ties them
    errors = iter([0.5, 0.1])
    read = []

    def fake_error(model_fn, x0, noise, free):
        read.append((x0.shape, noise.shape, free.clone()))
        return next(errors)

    monkeypatch.setattr(steer, "flow_error", fake_error)
    marks = []
    typical = probed_gen.generate(prompt, seed=4, best_of=3, finalists=2, likelihood=1.0, progress=marks.append, **FAST)
    assert np.array_equal(typical.frames, second.frames)
    # each finalist read once, on a noise of the window's shape; every frame is free in text-to-video
    assert len(read) == 2 and read[0][0][1:] == read[0][1] and bool(read[0][2].all())
    assert typical.sampling["finalists"] == 2 and typical.sampling["likelihood"] == 1.0
    assert marks == sorted(marks) and marks[-2] == pytest.approx(1.0) and marks[-1] == 1.0


def test_likelihood_with_the_real_flow_error_is_repeatable_and_recorded_only_when_used(probed_gen):
    prompt = "a red ball rolls to the right and a blue box rests"
    one = probed_gen.generate(prompt, seed=3, best_of=3, finalists=3, likelihood=2.0, **FAST)
    assert np.array_equal(one.frames, probed_gen.generate(prompt, seed=3, best_of=3, finalists=3, likelihood=2.0,
                                                          **FAST).frames)  # a seed is still one video
    assert one.sampling["likelihood"] == 2.0
    assert "likelihood" not in probed_gen.generate(prompt, seed=3, best_of=3, likelihood=2.0, **FAST).sampling
    assert "likelihood" not in probed_gen.generate(prompt, seed=3, best_of=3, finalists=2, **FAST).sampling


def test_free_text_an_image_and_an_edit_are_not_picked(probed_gen, monkeypatch):
    seen = _fixed_scores(monkeypatch, [0.0, 0.0, 1.0])
    free = probed_gen.generate("zzz qqq", seed=2, best_of=3, rewrite=False, **FAST)
    assert np.array_equal(free.frames, probed_gen.generate("zzz qqq", seed=2, rewrite=False, **FAST).frames)
    image = probed_gen.generate("a red ball rests on the floor", seed=2, best_of=3, size="32x32", seconds=0, steps=4)
    assert image.frames.shape[0] == 1
    source = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    edit = probed_gen.edit(source, "a red ball rolls to the right", strength=0.6, seed=3, steps=4, best_of=3)
    plain_edit = probed_gen.edit(source, "a red ball rolls to the right", strength=0.6, seed=3, steps=4)
    assert np.array_equal(edit.frames, plain_edit.frames) and "best_of" not in edit.sampling
    assert seen == []  # nothing was scored


def test_best_of_without_a_probe_is_a_clear_error(tiny_model, capsys, tmp_path):
    from worldreel.cli import main

    gen = Generator.load(tiny_model)
    with pytest.raises(UserError) as err:
        gen.generate("a red ball falls", best_of=2, **FAST)
    assert err.value.param == "best_of" and "probe" in err.value.message
    out = tmp_path / "x.mp4"
    for value in ("2", "0"):
        assert main(["generate", "a red ball falls", "--model", tiny_model, "--size", "32x32", "--steps", "1",
                     "--seed", "1", "--best-of", value, "--out", str(out)]) == 2
        assert "best_of" in capsys.readouterr().err and not out.exists()


def test_pack_needs_a_probe_for_best_of_and_the_card_says_it(tiny_model, tmp_path):
    from worldreel.model_folder import load_model
    from worldreel.train.pack import pack_model

    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "n", sampling=["best_of=4"])
    assert err.value.param == "probe" and "best_of" in err.value.message
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "b", sampling=["best_of=0"])
    assert err.value.param == "sampling" and "best_of" in err.value.message
    plain = pack_model(tiny_model, tiny_model, tmp_path / "p", sampling=["best_of=1"])
    assert load_model(str(plain)).config.sampling.best_of == 1

