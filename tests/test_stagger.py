"""Staggered sampling (earlier latent frames run ahead of later ones) and its training times."""
import dataclasses

import numpy as np
import pytest
import torch

from worldreel.diffusion.flow import stagger_timesteps, stagger_times, timesteps
from worldreel.diffusion.samplers import frame_condition_wrapper, sample_euler, sample_heun
from worldreel.errors import UserError
from worldreel.pipelines.generate import Generator


def test_stagger_schedule_runs_every_frame_from_noise_to_data_the_first_ahead():
    ts = stagger_timesteps(12, 3.0, 5, 1.0)  # (13, 5)
    assert ts.shape == (13, 5)
    assert torch.equal(ts[0], torch.ones(5)) and torch.equal(ts[-1], torch.zeros(5))
    assert (ts[1:] <= ts[:-1]).all()  # every frame only loses noise
    assert (ts[:, 1:] >= ts[:, :-1]).all() and (ts[6, 0] < ts[6, -1])  # earlier frames are ahead
    assert ts[6, 0] == 0 and ts[6, -1] == 1  # at mid-schedule the first is done, the last not started
    torch.testing.assert_close(stagger_timesteps(12, 3.0, 5, 0.0), timesteps(12, 3.0)[:, None].expand(13, 5))
    # Training times are the same map at a sample's place on the schedule.
    place = torch.linspace(0, 1, 13)
    torch.testing.assert_close(stagger_times(place, 5, torch.full((13,), 1.0), 3.0), ts)


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun])
def test_per_frame_schedules_move_each_frame_by_its_own_steps(sampler):
    """dx/dt = c: exact per frame; the model sees each frame's own time; frames wait at t = 1 and t = 0."""
    c = torch.tensor([1.5, -2.0, 0.5])[None, None, :, None, None]  # (1, 1, 3, 1, 1) one velocity per frame
    x1 = torch.randn(2, 4, 3, 2, 2)
    ts = stagger_timesteps(6, 1.0, 3, 2.0)
    seen = []

    def velocity(x, t):
        seen.append(t.clone())
        return c.expand_as(x)

    torch.testing.assert_close(sampler(velocity, x1.clone(), ts), x1 - c, atol=1e-6, rtol=0)
    assert seen[0].shape == (2, 3) and torch.equal(seen[0][0], ts[0])


def test_given_frames_stay_put_under_a_per_frame_schedule():
    clean = torch.randn(1, 2, 4, 2, 2)
    given = torch.tensor([[True, False, False, False]])
    x = torch.where(given[:, None, :, None, None], clean, torch.randn_like(clean))
    ts = torch.zeros(7, 4)
    ts[:, 1:] = stagger_timesteps(6, 1.0, 3, 1.0)
    seen = []

    def frame_fn(x, t_frames):
        seen.append(t_frames.clone())
        return torch.ones_like(x)

    out = sample_euler(frame_condition_wrapper(frame_fn, clean, given), x.clone(), ts)
    assert torch.equal(out[:, :, 0], clean[:, :, 0]) and all((t[:, 0] == 0).all() for t in seen)
    torch.testing.assert_close(out[:, :, 1:], x[:, :, 1:] - 1)


# -- generation ------------------------------------------------------------------------------

FAST = dict(steps=4, size="32x32", seconds=1)


@pytest.fixture(scope="module")
def gen(tiny_model):
    return Generator.load(tiny_model)


def test_generation_staggers_on_request_and_records_it(gen, dit_times):
    def _times_seen(**kwargs):
        return dit_times(gen, lambda: gen.generate("a red ball rolls left", seed=2, **FAST, **kwargs))

    plain, plain_t = _times_seen()
    same, _ = _times_seen(stagger=0.0)
    assert np.array_equal(plain.frames, same.frames) and "stagger" not in plain.sampling
    assert all(torch.equal(t[:, 0], t[:, -1]) for t in plain_t)  # every frame at one time
    staggered, times = _times_seen(stagger=1.0)
    assert staggered.sampling["stagger"] == 1.0 and not np.array_equal(staggered.frames, plain.frames)
    assert any((t[:, 0] < t[:, -1]).all() for t in times) and all((t[:, 0] <= t[:, -1]).all() for t in times)


def test_staggered_image_to_video_keeps_the_given_frame(gen):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    video = gen.animate(image, "a red ball rolls left", seed=1, stagger=2.0, steps=3, size="32x32", seconds=1)
    assert np.array_equal(video.frames[0], image) and video.sampling["stagger"] == 2.0


@pytest.mark.parametrize("value", [-0.5, "x", 100.0])
def test_bad_stagger_names_the_parameter(gen, value):
    with pytest.raises(UserError) as err:
        gen.generate("a red ball falls", stagger=value, **FAST)
    assert err.value.param == "stagger"


def test_a_models_own_stagger_applies(tiny_folder):
    import json

    folder = tiny_folder("staggered")
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("sampling", {})["stagger"] = 1.5
    (folder / "config.json").write_text(json.dumps(config))
    video = Generator.load(str(folder)).generate("a red ball falls", seed=0, **FAST)
    assert video.sampling["stagger"] == 1.5


# -- training --------------------------------------------------------------------------------

def _task(**options):
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-micro")
    none_given = dict(p_first=0.0, p_last=0.0, p_prefix=0.0, p_suffix=0.0, p_ends=0.0)
    return DiTTask(preset.model, preset.train_dit, DiTTaskConfig(**{**none_given, **options}))


def test_training_puts_a_share_of_clips_on_the_staggered_ramp():
    task = _task(p_stagger=0.5, stagger_max=2.0)
    B, f = 64, 9
    t = torch.full((B,), 0.7)
    given = torch.zeros(B, f, dtype=torch.bool)
    t_frames, given_out = task._stagger(t, given, 144, torch.Generator().manual_seed(0))
    flat = (t_frames == 0.7).all(1)
    assert 16 < int(flat.sum()) < 48  # about half keep the one time
    ramp = t_frames[~flat]
    assert (ramp[:, 1:] >= ramp[:, :-1]).all() and (ramp[:, -1] > ramp[:, 0]).any()
    assert torch.equal(given_out, t_frames == 0) and given_out.any()  # clean frames count as given


def test_staggered_training_loss_scores_only_the_noisy_frames():
    task = _task(p_stagger=1.0)
    model = task.build_model()
    cfg = task.model_cfg.dit
    B, f = 8, 9
    batch = {"latents": torch.randn(B, cfg.in_channels, f, 8, 8), "text": torch.randn(B, 4, cfg.text_dim),
             "text_mask": torch.ones(B, 4, dtype=torch.bool), "null_text": torch.zeros(1, 1, cfg.text_dim),
             "null_mask": torch.ones(1, 1, dtype=torch.bool), "step": 0}
    seen = []

    def spy(x, t, text, mask, facts=None):
        seen.append(t.clone())
        return model(x, t, text, mask, facts=facts)

    spy.parameters = model.parameters
    loss, logs = task.loss(spy, batch, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and seen[0].shape == (B, f)
    assert (seen[0][:, 1:] >= seen[0][:, :-1]).all() and logs["given"] > 0


@pytest.mark.parametrize("option,value", [("p_stagger", 1.5), ("p_stagger", -0.1), ("stagger_max", 0.0),
                                          ("stagger_max", float("inf"))])
def test_bad_stagger_options_name_the_parameter(option, value):
    with pytest.raises(UserError) as err:
        _task(**{option: value})
    assert err.value.param == f"task.{option}"
