"""Guidance variants: each reduces to plain CFG where it should, batched equals two calls,
interval skips the unconditional pass, CFG-Zero* zero-inits, APG projects and keeps momentum."""
import pytest
import torch

from worldreel.diffusion.guidance import APG, CFG, GUIDANCE_MODES, CFGZeroStar, IntervalCFG, make_rule
from worldreel.diffusion.samplers import cfg_batched_wrapper, cfg_wrapper, frame_condition_wrapper, sample_euler
from worldreel.errors import UserError
from test_samplers import _tiny_dit  # a 2-block DiT with nonzero output layers


def _pair(seed=0, shape=(2, 4, 3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _cfg(v_c, v_u, s):
    return v_u + s * (v_c - v_u)


@pytest.mark.parametrize("mode", GUIDANCE_MODES)
def test_batched_equals_two_calls_in_every_mode_over_a_whole_run(mode):
    """Over several steps (APG's momentum included), with given frames at t = 0 per frame."""
    model = _tiny_dit()
    text, mask = torch.randn(1, 6, 24), torch.ones(1, 6, dtype=torch.bool)
    null, null_mask = torch.randn(1, 2, 24), torch.ones(1, 2, dtype=torch.bool)
    clean = torch.randn(1, 4, 3, 4, 4)
    given = torch.tensor([[True, False, False]])
    scale = 4.0

    def cond(x, t):
        return model(x, t, text, mask)

    def uncond(x, t):
        return model(x, t, null, null_mask)

    ts = torch.linspace(1.0, 0.0, 6)
    x = torch.where(given[:, None, :, None, None], clean, torch.randn(1, 4, 3, 4, 4))
    two = sample_euler(frame_condition_wrapper(cfg_wrapper(cond, uncond, scale, mode, interval=(0.3, 0.7)), clean, given),
                       x.clone(), ts)
    one = sample_euler(frame_condition_wrapper(
        cfg_batched_wrapper(model, text, mask, null, null_mask, scale, mode, interval=(0.3, 0.7)), clean, given), x.clone(), ts)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-5)
    plain = sample_euler(frame_condition_wrapper(cfg_wrapper(cond, uncond, scale), clean, given), x.clone(), ts)
    if mode != "cfg":
        assert not torch.allclose(two, plain, atol=1e-4)  # the variant changed the run
    assert torch.equal(two[:, :, 0], clean[:, :, 0])  # given frames still come out unchanged


@pytest.mark.parametrize("mode", GUIDANCE_MODES)
def test_scale_one_is_the_conditional_model_alone(mode):
    def cond(x, t):
        return x

    def uncond(x, t):
        raise AssertionError("scale 1 must not run the unconditional pass")

    assert cfg_wrapper(cond, uncond, 1.0, mode) is cond


def test_interval_is_cfg_inside_and_conditional_outside():
    v_c, v_u, x = _pair()
    rule = IntervalCFG(3.0, (0.2, 0.6))
    t = torch.tensor([0.5, 0.8])  # first sample inside, second above the interval
    out = rule(v_c, v_u, x, t)
    torch.testing.assert_close(out[0], _cfg(v_c, v_u, 3.0)[0])
    torch.testing.assert_close(out[1], v_c[1])
    assert rule.needs_uncond(t) and not rule.needs_uncond(torch.tensor([0.9, 0.1]))
    assert not rule.needs_uncond(torch.tensor([0.2]))  # the interval is (lo, hi]
    torch.testing.assert_close(IntervalCFG(3.0, (0.0, 1.0))(v_c, v_u, x, torch.tensor([1.0, 0.01])),
                               _cfg(v_c, v_u, 3.0))  # the whole range is plain CFG
    per_frame = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.9, 0.9]])  # given frame at 0: the level is the max
    torch.testing.assert_close(rule(v_c, v_u, x, per_frame), out)


def test_interval_skips_the_unconditional_batch_outside():
    calls = []

    def net(x, t, text, mask):
        calls.append(x.shape[0])
        return x * text.mean()

    text, mask = torch.ones(1, 2, 3), torch.ones(1, 2, dtype=torch.bool)
    fn = cfg_batched_wrapper(net, text, mask, torch.zeros(1, 2, 3), mask, 3.0, "interval", interval=(0.2, 0.6))
    x = torch.randn(1, 4)
    fn(x, torch.tensor([0.9]))
    fn(x, torch.tensor([0.4]))
    fn(x, torch.tensor([0.1]))
    assert calls == [1, 2, 1]


def test_zero_star_is_cfg_when_the_optimal_scale_is_one_and_zero_at_pure_noise():
    g = torch.Generator().manual_seed(1)
    v_u = torch.randn(2, 4, 3, 4, 4, generator=g)
    w = torch.randn(2, 4, 3, 4, 4, generator=g)
    w = w - (w * v_u).sum(dim=(1, 2, 3, 4), keepdim=True) / v_u.square().sum(dim=(1, 2, 3, 4), keepdim=True) * v_u
    v_c = v_u + w  # <v_c, v_u> = |v_u|^2: s* = 1
    x = torch.randn_like(v_u)
    rule = CFGZeroStar(5.0)
    t = torch.tensor([0.7, 0.3])
    torch.testing.assert_close(rule(v_c, v_u, x, t), _cfg(v_c, v_u, 5.0), atol=1e-5, rtol=1e-5)
    # s* rescales the unconditional velocity: v_u twice as long gives the same guided velocity.
    torch.testing.assert_close(rule(v_c, 2 * v_u, x, t), _cfg(v_c, v_u, 5.0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(CFG(5.0)(v_c, 2 * v_u, x, t), _cfg(v_c, v_u, 5.0))
    out = rule(v_c, v_u, x, torch.tensor([1.0, 0.3]))
    assert torch.equal(out[0], torch.zeros_like(out[0])) and out[1].abs().sum() > 0
    assert not rule.needs_uncond(torch.tensor([1.0, 1.0])) and rule.needs_uncond(torch.tensor([1.0, 0.5]))


def test_zero_star_ignores_given_frames_when_fitting_its_scale():
    v_c, v_u, x = _pair(2)
    t = torch.tensor([[0.0, 0.6, 0.6], [0.0, 0.6, 0.6]])  # frame 0 given
    rule = CFGZeroStar(4.0)
    a = rule(v_c, v_u, x, t)
    v_u2 = v_u.clone()
    v_u2[:, :, 0] *= 10  # what the network says about a given frame
    b = rule(v_c, v_u2, x, t)
    torch.testing.assert_close(a[:, :, 1:], b[:, :, 1:])


def test_apg_without_its_levers_is_cfg():
    """eta 1, no momentum, no norm cap: D_c + (s - 1)(D_c - D_u) in velocity terms is plain CFG."""
    v_c, v_u, x = _pair(3)
    t = torch.tensor([0.8, 0.25])
    rule = APG(4.0, momentum=0.0, eta=1.0, norm_per_value=0.0)
    torch.testing.assert_close(rule(v_c, v_u, x, t), _cfg(v_c, v_u, 4.0), atol=1e-5, rtol=1e-5)


def test_apg_update_is_orthogonal_to_the_prediction_capped_and_has_momentum():
    v_c, v_u, x = _pair(4)
    t = torch.tensor([0.8, 0.25])
    tt = t[:, None, None, None, None]
    rule = APG(4.0, momentum=-0.75, eta=0.0, norm_per_value=1e6)  # the cap never binds here
    out = rule(v_c, v_u, x, t)
    d_cond, d_out = x - tt * v_c, x - tt * out
    update = (d_out - d_cond) / 3.0  # (s - 1) update
    dot = (update * d_cond).sum(dim=(1, 2, 3, 4))
    assert dot.abs().max() < 1e-3 * update.norm() * d_cond.norm()  # no component along D_c
    again = rule(v_c, v_u, x, t)  # same inputs, but the momentum now leans against the last update
    fresh = APG(4.0, momentum=-0.75, eta=0.0, norm_per_value=1e6)(v_c, v_u, x, t)
    torch.testing.assert_close(fresh, out)
    assert not torch.allclose(again, out)
    capped = APG(4.0, momentum=0.0, eta=1.0, norm_per_value=1e-3)(v_c, v_u, x, t)
    cap = 1e-3 * v_c[0].numel() ** 0.5
    shift = ((x - tt * capped) - d_cond) / 3.0
    assert shift.flatten(1).norm(dim=1).max() <= cap * 1.001  # the guidance step is at most the cap
    assert torch.equal(APG(4.0)(v_c, v_u, x, torch.zeros(2)), v_c)  # at t = 0 guidance vanishes


def test_make_rule_and_bad_modes():
    assert [type(make_rule(m, 2.0)) for m in GUIDANCE_MODES] == [CFG, IntervalCFG, CFGZeroStar, APG]
    with pytest.raises(UserError) as err:
        make_rule("cfg++", 2.0)
    assert err.value.param == "guidance_mode"
    for bad in ("0.5", "0.7,0.3", "a,b", (0.0, 1.5)):
        with pytest.raises(UserError) as err:
            IntervalCFG(2.0, bad)
        assert err.value.param == "guidance_interval"
