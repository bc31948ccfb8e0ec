"""Rectified-flow schedule, timestep sampling and the frame-masked loss."""
import math

import torch

from worldreel.diffusion.flow import flow_loss, sample_t, shift_for_tokens, time_shift, timesteps


def test_schedule_runs_from_noise_to_data_and_shift_moves_towards_noise():
    ts = timesteps(8)
    assert ts.shape == (9,) and ts[0] == 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
    shifted = timesteps(8, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and (shifted[1:-1] > ts[1:-1]).all()
    torch.testing.assert_close(time_shift(torch.tensor(0.5), 3.0), torch.tensor(0.75))


def test_shift_grows_with_tokens():
    assert shift_for_tokens(144) == 1.0
    assert math.isclose(shift_for_tokens(4 * 144), 2.0)
    assert shift_for_tokens(16) < 1.0 < shift_for_tokens(576) < shift_for_tokens(2304)


def test_logit_normal_t_is_reproducible_and_centred():
    a = sample_t(4000, generator=torch.Generator().manual_seed(0))
    b = sample_t(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    assert abs(a.median().item() - 0.5) < 0.03  # logit-normal(0, 1) has median 1/2
    assert (a.sub(0.5).abs() < 0.25).float().mean() > 0.6  # mass concentrated in the middle (uniform: 0.5)
    assert sample_t(4000, generator=torch.Generator().manual_seed(0), shift=3.0).median() > 0.7


def test_loss_zero_for_the_true_velocity_and_ignores_given_frames():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    t = torch.tensor([0.3, 0.8])
    given = torch.tensor([[True, False, False, False], [False, False, True, True]])
    seen = {}

    def oracle(x_t, t_frames):
        seen["x_t"], seen["t"] = x_t, t_frames
        return noise - x0

    assert flow_loss(oracle, x0, t=t, noise=noise, given=given) == 0
    # Given frames are clean at t = 0; the others are on the straight path.
    assert torch.equal(seen["t"], torch.tensor([[0.0, 0.3, 0.3, 0.3], [0.8, 0.8, 0.0, 0.0]]))
    torch.testing.assert_close(seen["x_t"][0, :, 0], x0[0, :, 0])
    torch.testing.assert_close(seen["x_t"][1, :, 0], 0.2 * x0[1, :, 0] + 0.8 * noise[1, :, 0])

    def wrong_on_given(x_t, t_frames):
        v = noise - x0
        return torch.where(given[:, None, :, None, None], v + 5.0, v)

    assert flow_loss(wrong_on_given, x0, t=t, noise=noise, given=given) == 0  # not scored on given frames
    # Error on a generated frame is averaged over generated frames only: 5 of 8 frames.
    def wrong_by_one(x_t, t_frames):
        return noise - x0 + 1.0

    torch.testing.assert_close(flow_loss(wrong_by_one, x0, t=t, noise=noise, given=given), torch.tensor(1.0))
    torch.testing.assert_close(flow_loss(wrong_by_one, x0, t=t, noise=noise), torch.tensor(1.0))


def test_training_frame_masks_cover_every_mode():
    from worldreel.train.dit_task import DiTTaskConfig, sample_given

    g = torch.Generator().manual_seed(0)
    probs = DiTTaskConfig().mode_probs()
    given = sample_given(4000, 9, probs, g)
    assert given.shape == (4000, 9) and not given.all(dim=1).any()
    rows = {tuple(r) for r in given.int().tolist()}
    none, first, last = (0,) * 9, (1,) + (0,) * 8, (0,) * 8 + (1,)
    ends, prefix3, suffix2 = (1,) + (0,) * 7 + (1,), (1, 1, 1) + (0,) * 6, (0,) * 7 + (1, 1)
    assert {none, first, last, ends, prefix3, suffix2} <= rows
    assert abs((given.sum(1) == 0).float().mean().item() - probs[0]) < 0.03  # "none" at its probability
    # Images (1 frame) and 2-frame clips with both ends never have every frame given.
    assert not sample_given(100, 1, probs, g).any()
    assert not sample_given(500, 2, [0, 0, 0, 0, 0, 1.0], g).all(dim=1).any()
