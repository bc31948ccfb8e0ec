"""Refining the start: after a window is made, its latent frames 1..refine are made again given the others."""
import json

import numpy as np
import pytest
import torch

from worldreel.errors import UserError
from worldreel.pipelines.generate import Generator, refine_mask

FAST = dict(steps=4, size="32x32", seconds=1)  # 9 frames: 3 latent frames


@pytest.fixture(scope="module")
def gen(tiny_model):
    return Generator.load(tiny_model)


def test_refine_mask_picks_the_frames_after_the_first_that_were_not_given():
    none = torch.zeros(5, dtype=torch.bool)
    assert refine_mask(none, 0).tolist() == [False] * 5
    assert refine_mask(none, 2).tolist() == [False, True, True, False, False]
    assert refine_mask(none, 8).tolist() == [False, True, True, True, True]  # never the first
    prefix = torch.tensor([True, True, False, False, False])  # a later window: its overlap is given
    assert refine_mask(prefix, 2).tolist() == [False, False, True, False, False]
    assert refine_mask(torch.ones(5, dtype=torch.bool), 3).tolist() == [False] * 5


def test_refine_remakes_frame_one_given_the_others_and_keeps_frame_zero(gen, dit_times):
    def _times_seen(**kwargs):
        return dit_times(gen, lambda: gen.generate("a red ball rolls left", seed=2, **FAST, **kwargs))

    plain, plain_t = _times_seen()
    off, _ = _times_seen(refine=0)
    assert np.array_equal(plain.frames, off.frames) and "refine" not in plain.sampling
    refined, times = _times_seen(refine=1)
    assert refined.sampling["refine"] == 1
    # Four more steps, each with only latent frame 1 noisy: the others are given, clean, at t = 0.
    assert len(times) == len(plain_t) + 4
    for t in times[len(plain_t):]:
        assert (t[:, [0, 2]] == 0).all() and (t[:, 1] > 0).all()
    # The causal decoder draws pixel frame 0 from latent frame 0 alone: unchanged. Frames 1-4 are re-made.
    assert np.array_equal(refined.frames[0], plain.frames[0])
    assert not np.array_equal(refined.frames[1:5], plain.frames[1:5])


def test_image_to_video_refines_after_its_given_frame_and_keeps_it(gen, dit_times):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    video, times = dit_times(gen, lambda: gen.animate(image, "a red ball rolls left", seed=2, refine=2, **FAST))
    assert np.array_equal(video.frames[0], image) and video.sampling["refine"] == 2
    last = times[-1]
    assert (last[:, 0] == 0).all() and (last[:, 1:] > 0).all()  # frames 1 and 2 re-made together


def test_an_edit_does_not_refine(gen):
    source = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    plain = gen.edit(source, "a red ball falls", strength=0.5, seed=3, steps=4)
    refined = gen.edit(source, "a red ball falls", strength=0.5, seed=3, steps=4, refine=2)
    assert np.array_equal(plain.frames, refined.frames) and "refine" not in refined.sampling


def test_long_videos_refine_only_their_first_window(gen, dit_times):
    """Later windows start from frames already made (given), so only the first has frames to re-make."""
    ticks = []
    _, seen = dit_times(gen, lambda: gen.generate("a red ball rolls left", seed=2, refine=1, progress=ticks.append,
                                                  **dict(FAST, seconds=6)))
    one_free = [t for t in seen if int((t[0] > 0).sum()) == 1]
    assert len(one_free) == 4  # one refine pass of 4 steps
    assert ticks[-1] == 1.0 and all(b >= a for a, b in zip(ticks, ticks[1:]))


@pytest.mark.parametrize("value", [-1, 9, 1.5, "x", True])
def test_bad_refine_names_the_parameter(gen, value):
    with pytest.raises(UserError) as err:
        gen.generate("a red ball falls", refine=value, **FAST)
    assert err.value.param == "refine"


def test_a_models_own_refine_applies_and_the_cli_takes_it(tiny_folder, tmp_path, capsys):
    from worldreel.cli import main

    folder = tiny_folder("refined")
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("sampling", {})["refine"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    assert Generator.load(str(folder)).generate("a red ball falls", seed=0, **FAST).sampling["refine"] == 1
    out = tmp_path / "x.mp4"
    assert main(["generate", "a red ball falls", "--model", str(folder), "--size", "32x32", "--steps", "1",
                 "--seed", "1", "--refine", "9", "--out", str(out)]) == 2
    assert "refine" in capsys.readouterr().err and not out.exists()
