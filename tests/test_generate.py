"""The generation loop on a tiny random model: given frames stay given, seeds reproduce, windows overlap."""
import numpy as np
import pytest
import torch

from worldreel.errors import UserError
from worldreel.pipelines import conditioning as C
from worldreel.pipelines.generate import Generator, SamplingConfig, parse_seconds, parse_size, supported_sizes
from worldreel.model_folder import load_model, save_random_model

FAST = dict(steps=2, size="32x32")


@pytest.fixture(scope="module")
def gen(tiny_model):
    return Generator.load(tiny_model)


class _Spy(torch.nn.Module):
    """Wraps the DiT and records what every call sees."""

    def __init__(self, dit):
        super().__init__()
        self.dit, self.calls, self.outputs = dit, [], []
        self.fact_embed = dit.fact_embed

    def text_context(self, text, text_mask, facts=None):
        return self.dit.text_context(text, text_mask, facts)

    def forward(self, x, t, text=None, text_mask=None, *, context=None):
        v = self.dit(x, t, text, text_mask, context=context)
        self.calls.append((x.clone(), t.clone(), x.shape[0]))
        self.outputs.append(v.clone())
        return v


def _spy(gen):
    spy = _Spy(gen.dit)
    gen.dit, original = spy, gen.dit
    return spy, original


def _img(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_same_seed_same_video_and_another_seed_another(gen):
    a = gen.generate("a red ball falls", seconds=1, seed=7, **FAST)
    b = gen.generate("a red ball falls", seconds=1, seed=7, **FAST)
    c = gen.generate("a red ball falls", seconds=1, seed=8, **FAST)
    assert a.frames.shape == (9, 32, 32, 3) and a.frames.dtype == np.uint8 and a.fps == 8
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)
    assert a.seed == 7 and a.prompt == "a red ball falls"
    d = gen.generate("a red ball falls", seconds=1, **FAST)  # no seed: a random one, reported
    assert isinstance(d.seed, int)
    assert np.array_equal(gen.generate("a red ball falls", seconds=1, seed=d.seed, **FAST).frames, d.frames)


def test_still_image_and_any_aspect(gen):
    still = gen.generate("a blue box rests", seconds=0, seed=1, **FAST)
    assert still.frames.shape == (1, 32, 32, 3)
    portrait = gen.generate("a blue box rests", seconds=0.5, seed=1, steps=2, size="32x48")
    landscape = gen.generate("a blue box rests", seconds=0.5, seed=1, steps=2, size=(48, 16))
    assert portrait.frames.shape == (5, 48, 32, 3) and landscape.frames.shape == (5, 16, 48, 3)


def test_given_latents_stay_clean_at_t0_on_every_step_and_pixels_come_out_exact(gen):
    image = _img(1)
    spy, original = _spy(gen)
    try:
        video = gen.animate(image, "a green ball rolls left", seconds=1, seed=3, **FAST)
    finally:
        gen.dit = original
    assert np.array_equal(video.frames[0], image)
    pixels, given = C.place_conditions([C.Condition(image, 0)], 9, (32, 32))
    known, mask = C.encode_given(gen._encode, pixels, given, 4)
    assert mask.tolist() == [True, False, False]
    assert len(spy.calls) == 2  # 2 steps, one batched guidance call each
    for x, t, batch in spy.calls:
        assert batch == 2  # prompt and negative prompt in one batch
        assert (t[:, 0] == 0).all() and (t[:, 1:] > 0).all()
        assert torch.equal(x[:, :, 0], known[None, :, 0].expand(2, -1, -1, -1))


def test_given_frames_are_preserved_in_every_mode(gen):
    clip = gen.generate("a red ball falls", seconds=1, seed=1, **FAST).frames  # 9 frames
    first, last = _img(2), _img(3)
    kw = dict(seed=5, **FAST)
    fwd = gen.extend(clip, "a red ball falls", seconds=1, **kw)
    assert len(fwd.frames) == 17 and np.array_equal(fwd.frames[:9], clip)
    back = gen.extend(clip, "a red ball falls", seconds=1, backward=True, **kw)
    assert np.array_equal(back.frames[-9:], clip) and len(back.frames) > 9
    inter = gen.interpolate(first, last, "a red ball falls", seconds=1, **kw)
    assert np.array_equal(inter.frames[0], first) and np.array_equal(inter.frames[-1], last)
    joined = gen.interpolate(clip, clip[::-1].copy(), "a red ball falls", seconds=1, **kw)  # two videos
    assert np.array_equal(joined.frames[:9], clip) and np.array_equal(joined.frames[-9:], clip[::-1])
    loop = gen.loop("a red ball falls", seconds=1, image=first, **kw)
    assert np.array_equal(loop.frames[0], first) and len(loop.frames) >= 4
    kept = gen.edit(clip, "a blue ball falls", strength=0.0, **kw)
    assert np.array_equal(kept.frames, clip)


def test_loop_ends_one_step_before_its_first_frame(gen):
    spy, original = _spy(gen)
    try:
        loop = gen.loop("a red ball rolls right", seconds=1, seed=4, **FAST)
    finally:
        gen.dit = original
    # Phase 1 makes the first frame (1 latent); phase 2 holds it at both ends of the window.
    x, t, _ = spy.calls[-1]
    assert t.shape[1] == 3 and (t[:, 0] == 0).all() and (t[:, -1] == 0).all()
    assert loop.frames.shape == (5, 32, 32, 3)
    still = gen.generate("a red ball rolls right", seconds=0, seed=4, **FAST)  # phase 1, on its own
    assert np.array_equal(loop.frames[0], still.frames[0])


def test_edit_starts_part_way_from_the_noised_source(gen):
    clip = gen.generate("a red ball falls", seconds=1, seed=1, **FAST).frames
    spy, original = _spy(gen)
    try:
        edited = gen.edit(clip, "a blue ball falls", strength=0.3, seed=2, **FAST)
    finally:
        gen.dit = original
    assert edited.frames.shape == clip.shape and not np.array_equal(edited.frames, clip)
    # SDEdit: the first step sees x = (1 - s) * source + s * noise at t = s on every frame.
    source, _ = C.encode_given(gen._encode, clip, np.ones(len(clip), bool), 4)
    noise = torch.randn(source.shape, generator=torch.Generator().manual_seed(2))
    x, t, _ = spy.calls[0]
    assert torch.allclose(t, torch.full_like(t, 0.3))
    assert torch.allclose(x[0], 0.7 * source + 0.3 * noise, atol=1e-5)
    assert len(spy.calls) <= 2  # part of the schedule only
    with pytest.raises(UserError) as err:
        gen.edit(clip, "a blue ball falls", strength=1.5)
    assert err.value.param == "strength"


def test_long_video_windows_overlap_the_previous_windows_latents(gen):
    old = gen.sampling
    gen.sampling = SamplingConfig(steps=2, window_latents=3, overlap_latents=1)
    spy, original = _spy(gen)
    try:
        video = gen.generate("a red ball rolls right", seconds=2, seed=1, size="32x32")  # 17 frames, 5 latents
    finally:
        gen.dit, gen.sampling = original, old
    assert video.frames.shape == (17, 32, 32, 3)
    windows = [(x.shape[2], t[0].tolist()) for x, t, _ in spy.calls]
    assert [w[0] for w in windows] == [3, 3, 3, 3]  # two windows of 3 latents, 2 steps each
    assert all(t > 0 for t in windows[0][1])  # the first window is all noise
    assert windows[2][1][0] == 0 and all(t > 0 for t in windows[2][1][1:])  # the second gets 1 latent given
    # The given latent of window 2 is window 1's last latent after its last Euler step.
    x, t, _ = spy.calls[1]
    v_cond, v_uncond = spy.outputs[1].chunk(2)
    v = v_uncond + gen.sampling.guidance * (v_cond - v_uncond)
    final = x[0, :, 2] + (0.0 - t[0, 2]) * v[0, :, 2]
    assert torch.allclose(spy.calls[2][0][0, :, 0], final, atol=1e-5)


def test_guidance_one_is_a_single_pass_and_the_negative_prompt_matters(gen):
    spy, original = _spy(gen)
    try:
        gen.generate("a red ball falls", seconds=0, seed=1, guidance=1.0, **FAST)
        assert spy.calls[-1][2] == 1
    finally:
        gen.dit = original
    a = gen.generate("a red ball falls", seconds=0, seed=1, guidance=5.0, **FAST)
    b = gen.generate("a red ball falls", seconds=0, seed=1, guidance=5.0, negative_prompt="a blue box", **FAST)
    assert not np.array_equal(a.frames, b.frames)


def test_progress_reaches_one(gen):
    seen = []
    gen.generate("a red ball falls", seconds=1, seed=1, progress=seen.append, **FAST)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 2


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(prompt="   "), "prompt"),
        (dict(size="30x32"), "size"),
        (dict(size="1024x64"), "size"),
        (dict(size="big"), "size"),
        (dict(seconds=-1), "seconds"),
        (dict(seconds="soon"), "seconds"),
        (dict(seconds=1e6), "seconds"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(seed=True), "seed"),
        (dict(guidance=False), "guidance"),
        (dict(guidance="x"), "guidance"),
        (dict(shift=0), "shift"),
        (dict(shift="high"), "shift"),
        (dict(seed=-3), "seed"),
        (dict(guidance_mode="cfg++"), "guidance_mode"),
        (dict(guidance_mode="interval", guidance_interval="0.9,0.1"), "guidance_interval"),
        (dict(guidance_interval="low"), "guidance_interval"),
    ],
)
def test_bad_arguments_name_the_parameter(gen, kwargs, param):
    args = dict(prompt="a red ball falls", seconds=1, steps=1)
    args.update(kwargs)
    with pytest.raises(UserError) as err:
        gen.generate(args.pop("prompt"), **args)
    assert err.value.param == param


@pytest.mark.parametrize("kwargs, param", [(dict(sampler="dpm"), "sampler"), (dict(sampler="heun", steps=0), "steps")])
def test_a_bad_sampler_names_it(gen, kwargs, param):
    with pytest.raises(UserError) as err:
        gen.generate("a red ball falls", seconds=1, **kwargs)
    assert err.value.param == param


def test_the_sampler_options_are_one_table():
    """Every SamplingDefaults field is an option checked in one place, a call's keyword, a
    SamplingConfig field and (but the sampler) a CLI option of every generation command and of
    bench world; a name that is none of them is a caller's bug, not a user's."""
    import dataclasses

    import typer

    from worldreel.cli import app
    from worldreel.cli.generate import SAMPLER_OPTIONS
    from worldreel.pipelines.generate import SAMPLING_OPTIONS, check_sampling
    from worldreel.presets import SamplingDefaults

    plain = dataclasses.asdict(SamplingDefaults())
    assert set(SAMPLING_OPTIONS) == set(plain)
    assert check_sampling(**plain) == {k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()}
    assert check_sampling(steps=None, guidance="2") == {"guidance": 2.0}  # None: not given; values read
    assert set(SAMPLING_OPTIONS) <= {f.name for f in dataclasses.fields(SamplingConfig)}
    flags = [name for name, _, _ in SAMPLER_OPTIONS]
    assert flags == [name for name in SAMPLING_OPTIONS if name != "sampler"]
    group = typer.main.get_command(app)
    bench = [p.name for p in group.commands["bench"].commands["world"].params]
    assert bench[-len(flags):] == flags
    with pytest.raises(TypeError, match="stepz"):
        check_sampling(stepz=3)


def test_an_edit_records_only_what_it_did(gen):
    """An edit does not stagger, refine, steer or pick: its video's record says so."""
    clip = gen.generate("a red ball falls", seconds=1, seed=1, **FAST).frames
    edited = gen.edit(clip, "a blue ball falls", strength=0.3, seed=2, stagger=1.0, refine=1, **FAST)
    made = gen.generate("a red ball falls", seconds=1, seed=2, stagger=1.0, refine=1, **FAST)
    assert "stagger" not in edited.sampling and "refine" not in edited.sampling
    assert made.sampling["stagger"] == 1.0 and made.sampling["refine"] == 1


def test_the_models_own_sampler_settings_apply_unless_the_call_gives_others(tmp_path):
    """config.json "sampling" sets the defaults; a call's steps/shift and a SamplingConfig's fields win."""
    from worldreel.diffusion.flow import shift_for_tokens, timesteps

    folder = save_random_model(tmp_path / "m", "world-micro", ["sampling.steps=3", "sampling.shift=3.0",
                                                                 "sampling.guidance=2.5"])
    tuned = Generator.load(str(folder))
    assert (tuned.sampling.steps, tuned.sampling.shift, tuned.sampling.guidance) == (3, 3.0, 2.5)
    spy, original = _spy(tuned)
    try:
        own = tuned.generate("a red ball falls", seconds=1, seed=1, size="32x32")  # 3 latents of 2x2 tokens
        made = [t[0, 0].item() for _, t, _ in spy.calls]
        spy.calls.clear()
        called = tuned.generate("a red ball falls", seconds=1, seed=1, size="32x32", steps=2, shift=1.0)
        given = [t[0, 0].item() for _, t, _ in spy.calls]
    finally:
        tuned.dit = original
    assert made == pytest.approx(timesteps(3, shift_for_tokens(12, base_shift=3.0))[:-1].tolist())
    assert made[1] > timesteps(3, shift_for_tokens(12))[1].item()  # shifted towards noise
    assert given == pytest.approx(timesteps(2, shift_for_tokens(12))[:-1].tolist())
    assert own.sampling == {"sampler": "euler", "steps": 3, "guidance": 2.5, "shift": 3.0,  # what made each video
                            "guidance_mode": "cfg"}
    assert called.sampling == {"sampler": "euler", "steps": 2, "guidance": 2.5, "shift": 1.0, "guidance_mode": "cfg"}
    tuned.sampling = SamplingConfig(steps=5)  # set fields win, the rest stay the model's
    assert (tuned.sampling.steps, tuned.sampling.shift, tuned.sampling.sampler) == (5, 3.0, "euler")


def test_size_and_seconds_parsing_lists_what_is_supported(gen):
    cfg = gen.config
    assert parse_size("96x64", cfg) == (96, 64) and parse_size((64, 128), cfg) == (64, 128)
    assert parse_size(None, cfg) == tuple(cfg.default_size)
    with pytest.raises(UserError) as err:
        parse_size("100x64", cfg)
    assert "multiple of 16" in str(err.value) and "portrait" in str(err.value)
    sizes = supported_sizes(cfg)
    assert (64, 64) in sizes and (128, 64) in sizes and (64, 128) in sizes and (100, 64) not in sizes
    assert all(w <= cfg.max_side and h <= cfg.max_side for w, h in sizes)
    assert parse_seconds("12", cfg) == 12.0 and parse_seconds(0, cfg) == 0.0
    with pytest.raises(UserError) as err:
        parse_seconds(500, cfg)
    assert "still image" in str(err.value)


def test_model_folder_round_trip(tmp_path):
    folder = save_random_model(tmp_path / "m", "world-micro", seed=3)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "vae.safetensors", "dit.safetensors", "README.md"}
    loaded = load_model(str(folder))
    assert loaded.config.dit.width == 32 and loaded.config.vae.base_channels == 8
    from safetensors.torch import load_file

    saved = load_file(str(folder / "dit.safetensors"))
    assert all(v.dtype == torch.float16 for v in saved.values())
    for k, v in loaded.dit.state_dict().items():
        assert torch.equal(v, saved[k].float())
    with pytest.raises(UserError) as err:
        load_model(str(tmp_path / "missing"))
    assert err.value.param == "model"
    from worldreel.model_folder import weights_digest

    digest = weights_digest(str(folder))
    assert set(digest) == {"vae", "dit"} and all(len(d) == 12 and int(d, 16) >= 0 for d in digest.values())
    assert weights_digest(str(save_random_model(tmp_path / "same", "world-micro", seed=3))) == digest
    (folder / "dit.safetensors").write_bytes(b"garbage")
    assert weights_digest(str(folder))["dit"] != digest["dit"] and weights_digest(str(folder))["vae"] == digest["vae"]
    with pytest.raises(UserError):
        load_model(str(folder))


def test_guidance_modes_apply_record_and_follow_the_models_config(tmp_path):
    """--guidance-mode reaches the loop (interval skips the unconditional pass outside its noise
    levels), is recorded with the video, and config.json "sampling.guidance_mode" is the default."""
    folder = save_random_model(tmp_path / "m", "world-micro", ["sampling.guidance_mode=interval",
                                                               "sampling.guidance_interval=0.2,0.6"])
    tuned = Generator.load(str(folder))
    spy, original = _spy(tuned)
    try:
        video = tuned.generate("a red ball falls", seconds=0, seed=1, steps=4, size="32x32")
        batches = [batch for _, _, batch in spy.calls]
        spy.calls.clear()
        plain = tuned.generate("a red ball falls", seconds=0, seed=1, steps=4, size="32x32", guidance_mode="cfg")
        plain_batches = [batch for _, _, batch in spy.calls]
    finally:
        tuned.dit = original
    from worldreel.diffusion.flow import shift_for_tokens, timesteps

    ts = timesteps(4, shift_for_tokens(4))[:-1].tolist()  # 1 latent of 2x2 tokens: 1, 0.33, 0.14, 0.05
    assert batches == [2 if 0.2 < t <= 0.6 else 1 for t in ts] and 1 in batches and 2 in batches
    assert plain_batches == [2, 2, 2, 2]
    assert video.sampling["guidance_mode"] == "interval" and video.sampling["guidance_interval"] == [0.2, 0.6]
    assert plain.sampling["guidance_mode"] == "cfg" and "guidance_interval" not in plain.sampling
    assert not np.array_equal(video.frames, plain.frames)
    made = {mode: tuned.generate("a red ball falls", seconds=1, seed=1, guidance_mode=mode, **FAST).frames
            for mode in ("cfg", "zero-star", "apg")}
    assert not np.array_equal(made["cfg"], made["zero-star"]) and not np.array_equal(made["cfg"], made["apg"])


def test_text_context_computes_what_the_text_does_and_bf16_sampling_matches_autocast(tiny_model):
    """The sampler's per-prompt text context gives the forward pass bit for bit, and the CPU bf16
    path (a bf16 copy of the weights) makes the video that bf16 autocast over fp32 weights makes."""
    gen = Generator.load(tiny_model)
    g = torch.Generator().manual_seed(0)
    dit = gen.dit
    x = torch.randn(2, dit.cfg.in_channels, 3, 4, 4, generator=g)
    t = torch.rand(2, 3, generator=g)
    text = torch.randn(2, 5, dit.cfg.text_dim, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        assert torch.equal(dit(x, t, text, mask), dit(x, t, context=dit.text_context(text, mask)))
    fp32 = gen.generate("a red ball falls", seed=3, rewrite=False, **FAST).frames
    gen.precision = "bf16"
    copy_ = gen._denoiser()
    assert copy_ is not gen.dit and next(copy_.parameters()).dtype == torch.bfloat16
    assert gen._denoiser() is copy_  # made once
    fast = gen.generate("a red ball falls", seed=3, rewrite=False, **FAST).frames
    gen._bf16_dit = (gen.dit, gen.dit)  # the fp32 weights under autocast: what bf16 meant before the copy
    autocast = gen.generate("a red ball falls", seed=3, rewrite=False, **FAST).frames
    diff = np.abs(fast.astype(int) - autocast.astype(int))
    assert diff.mean() < 1.0 and np.abs(fast.astype(int) - fp32.astype(int)).mean() < 4.0, (diff.mean(), diff.max())
