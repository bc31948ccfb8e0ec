"""Samplers are exact where they must be; guidance in one batch equals two calls; given frames stay put."""
import torch

from worldreel.diffusion.flow import timesteps
from worldreel.diffusion.samplers import (
    cfg_batched_wrapper,
    cfg_wrapper,
    frame_condition_wrapper,
    sample_euler,
    sample_heun,
)
from worldreel.models.dit import DiT, DiTConfig


def test_euler_exact_on_constant_velocity():
    """dx/dt = c: Euler integrates it exactly in any number of steps, on any schedule."""
    c = torch.tensor([[1.5, -2.0, 0.25]])
    x1 = torch.tensor([[0.3, 0.1, -0.7]])
    for steps, shift in [(1, 1.0), (3, 1.0), (17, 3.0)]:
        x0 = sample_euler(lambda x, t: c.expand_as(x), x1.clone(), timesteps(steps, shift))
        torch.testing.assert_close(x0, x1 - c, atol=1e-6, rtol=0)


def test_heun_exact_on_quadratic_path_and_euler_is_not():
    """x(t) = a + b t + q t^2, v = b + 2 q t: Heun (trapezoid) is exact, Euler is off by O(1/steps)."""
    a, b, q = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3]), torch.tensor([-1.2, 0.8])

    def velocity(x, t):
        return b + 2 * q * t[:, None]

    x1 = (a + b + q)[None]  # x at t = 1
    ts = timesteps(4, shift=2.0)
    torch.testing.assert_close(sample_heun(velocity, x1, ts), a[None], atol=1e-6, rtol=0)
    assert (sample_euler(velocity, x1, ts) - a).abs().max() > 1e-2


def test_callback_reports_progress():
    seen = []
    sample_heun(lambda x, t: torch.zeros_like(x), torch.zeros(2, 3), timesteps(5), callback=seen.append)
    assert [s["i"] for s in seen] == list(range(5)) and all(s["steps"] == 5 for s in seen)
    assert seen[0]["t"] == 1.0 and seen[-1]["t_next"] == 0.0 and seen[-1]["x"].shape == (2, 3)


def _tiny_dit():
    model = DiT(DiTConfig(in_channels=4, width=32, depth=2, heads=4, text_dim=24))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def test_cfg_batched_equals_two_calls():
    model = _tiny_dit()
    x = torch.randn(2, 4, 3, 4, 4)
    t = torch.rand(2, 3)
    text, mask = torch.randn(2, 6, 24), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    null, null_mask = torch.randn(1, 2, 24), torch.ones(1, 2, dtype=torch.bool)  # shorter negative prompt
    scale = 4.5

    def cond(x, t):
        return model(x, t, text, mask)

    def uncond(x, t):
        return model(x, t, null.expand(2, -1, -1), null_mask.expand(2, -1))

    with torch.no_grad():
        two_calls = cfg_wrapper(cond, uncond, scale)(x, t)
        one_batch = cfg_batched_wrapper(model, text, mask, null, null_mask, scale)(x, t)
    torch.testing.assert_close(one_batch, two_calls, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(two_calls, cond(x, t), atol=1e-3)  # guidance did something
    assert cfg_wrapper(cond, uncond, 1.0) is cond  # scale 1 skips the unconditional pass


def test_given_frames_come_out_unchanged():
    model = _tiny_dit()
    text, mask = torch.randn(1, 5, 24), torch.ones(1, 5, dtype=torch.bool)
    clean = torch.randn(1, 4, 4, 4, 4)
    given = torch.tensor([[True, False, False, True]])  # both ends: interpolation
    g = given[:, None, :, None, None]
    x = torch.where(g, clean, torch.randn_like(clean))
    fn = frame_condition_wrapper(lambda x, t: model(x, t, text, mask), clean, given)
    for sampler in (sample_euler, sample_heun):
        out = sampler(fn, x.clone(), timesteps(3))
        assert torch.equal(out[:, :, [0, 3]], clean[:, :, [0, 3]])
        assert not torch.allclose(out[:, :, 1:3], x[:, :, 1:3])
