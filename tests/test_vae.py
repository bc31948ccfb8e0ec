"""Video autoencoder: shapes, causality, chunked == one-shot, files, bad input, task."""
import json

import pytest
import torch

from worldreel.errors import UserError
from worldreel.model_folder import load_vae, write_weights
from worldreel.models.vae import VAEConfig, VideoVAE, vae_presets
from worldreel.models.vae2d import frame_vae_config, FrameVAE


def tiny_cfg(**kw) -> VAEConfig:
    base = dict(base_channels=8, channel_mult=(1, 2, 2), latent_channels=4, encoder_blocks=1, decoder_blocks=1)
    base.update(kw)
    return VAEConfig(**base)


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    model = VideoVAE(tiny_cfg()).eval()
    # non-trivial latent normalisation, so every path must apply it the same way
    model.set_latent_stats([0.1 * i for i in range(4)], [1.0 + 0.5 * i for i in range(4)])
    return model


def clip(frames: int, size: int = 16, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size) * 2 - 1


@pytest.mark.parametrize("frames", [1, 5, 9, 17, 7, 2])
def test_shapes_for_images_and_clips(vae, frames):
    x = clip(frames, batch=2)
    with torch.no_grad():
        z = vae.encode(x)
        y = vae.decode(z)
        recon = vae(x, sample=False)[0]
    f = 1 + -(-(frames - 1) // 4)
    assert tuple(z.shape) == (2, 4, f, 2, 2) == (2, *vae.latent_shape(frames, 16, 16))
    assert tuple(y.shape) == (2, 3, 1 + 4 * (f - 1), 16, 16)
    assert tuple(recon.shape) == tuple(x.shape)  # forward trims the padding back
    # non-square frames
    assert tuple(vae.encode(torch.zeros(1, 3, 5, 16, 24)).shape) == (1, 4, 2, 2, 3)


def test_temporal_causality_encode_and_decode(vae):
    x = clip(17)
    with torch.no_grad():
        z = vae.encode(x)
        for frames in (1, 5, 9):  # 1 + 4k prefixes give the prefix of the latents
            torch.testing.assert_close(vae.encode(x[:, :, :frames]), z[:, :, : 1 + (frames - 1) // 4], atol=1e-5, rtol=1e-4)
        y = vae.decode(z)
        for lat in (1, 2, 4):
            torch.testing.assert_close(vae.decode(z[:, :, :lat]), y[:, :, : 1 + 4 * (lat - 1)], atol=1e-5, rtol=1e-4)
        # changing a late frame changes no earlier latent
        x2 = x.clone()
        x2[:, :, 12] = -x2[:, :, 12]
        z2 = vae.encode(x2)
        torch.testing.assert_close(z2[:, :, :3], z[:, :, :3], atol=1e-5, rtol=1e-4)
        assert (z2[:, :, 3] - z[:, :, 3]).abs().max() > 1e-4


@pytest.mark.parametrize("chunk", [1, 4, 8, 11])
def test_chunked_equals_one_shot(vae, chunk):
    x = clip(21)  # not 1 + 4k: the last chunk is padded like the one-shot input
    with torch.no_grad():
        z = vae.encode(x)
        torch.testing.assert_close(vae.encode_chunked(x, chunk_frames=chunk), z, atol=1e-5, rtol=1e-4)
        y = vae.decode(z)
        lat = max(1, chunk // 4)
        torch.testing.assert_close(vae.decode_chunked(z, chunk_latents=lat), y, atol=1e-5, rtol=1e-4)


def test_chunked_decode_memory_does_not_grow_with_length(vae):
    """The carried cache is a fixed number of frames per temporal conv, whatever the length."""
    def cache_after(latents):
        cache: dict = {}
        with torch.no_grad():
            for start in range(0, latents, 2):
                vae._decode_raw(torch.zeros(1, 4, min(2, latents - start), 2, 2), cache)
        return sum(v.numel() for v in cache.values() if isinstance(v, torch.Tensor))
    assert cache_after(4) == cache_after(40) > 0


def test_tiled_decode(vae):
    z = torch.randn(1, 4, 2, 20, 20)
    with torch.no_grad():
        full = vae.decode(z)
        torch.testing.assert_close(vae.decode_tiled(z, tile_latents=20, overlap_latents=2), full, atol=1e-5, rtol=1e-4)
        tiled = vae.decode_tiled(z, tile_latents=16, overlap_latents=8, chunk_latents=1)
        seams = vae.decode_tiled(z, tile_latents=8, overlap_latents=0)
    assert tiled.shape == full.shape
    err = (tiled - full).abs()
    # latents 0-3 lie in tile (0, 0) alone, which holds their whole receptive field (< 8 cells)
    assert err[..., :32, :32].max() < 1e-4
    # elsewhere tiles lack some context near the seams; overlap blending keeps that small
    assert err.mean() < 0.5 * (seams - full).abs().mean()


def test_save_load_round_trip_fp16(vae, tmp_path):
    from worldreel.config import to_dict

    (tmp_path / "config.json").write_text(json.dumps({"vae": to_dict(vae.cfg)}))
    write_weights(tmp_path, "vae", vae)
    loaded = load_vae(tmp_path)
    assert loaded.cfg == vae.cfg
    x = clip(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), vae.encode(x), atol=0.05, rtol=0.05)  # fp16 weights
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float16 for t in load_file(str(tmp_path / "vae.safetensors")).values())


@pytest.mark.parametrize("bad, param", [
    (torch.zeros(1, 4, 5, 16, 16), "video"),  # wrong channel count
    (torch.full((1, 3, 5, 16, 16), 255.0), "video"),  # 0..255 pixels, not [-1, 1]
    (torch.zeros(1, 3, 0, 16, 16), "video"),  # empty
    (torch.full((1, 3, 5, 16, 16), float("nan")), "video"),  # NaN
    (torch.zeros(3, 5, 16, 16), "video"),  # wrong ndim
    (torch.zeros(1, 3, 5, 12, 16), "video"),  # not a multiple of 8
    ("a video", "video"),
])
def test_bad_video_is_a_user_error(vae, bad, param):
    with pytest.raises(UserError) as err:
        vae.encode(bad)
    assert err.value.param == param
    with pytest.raises(UserError):
        vae.encode_chunked(bad) if isinstance(bad, torch.Tensor) else vae.encode(bad)


@pytest.mark.parametrize("bad", [torch.zeros(1, 3, 2, 2, 2), torch.zeros(4, 2, 2, 2), torch.full((1, 4, 2, 2, 2), float("inf"))])
def test_bad_latents_are_user_errors(vae, bad):
    with pytest.raises(UserError) as err:
        vae.decode(bad)
    assert err.value.param == "z"


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError) as err:
        VideoVAE(tiny_cfg(channel_mult=(1, 2)))
    assert err.value.param == "vae.channel_mult"
    with pytest.raises(UserError):
        VideoVAE(tiny_cfg(latent_shift=[0.5] * 3))


def test_presets_and_baseline_budget():
    presets = vae_presets()
    for name, cfg in presets.items():
        t, s, _, c = (int(v) for v in name.split("x"))
        assert (cfg.time_factor, cfg.space_factor, cfg.latent_channels) == (t, s, c)
        assert t * s * s * 3 / c == 48  # each keeps 48x fewer values than RGB pixels
    # the per-frame baseline gets at least the spacetime model's latent values per clip, and
    # no more than one channel's worth beyond
    st = presets["4x8x8x16"]
    cfg2d = frame_vae_config(st, frames=33, height=64, width=64)
    c, f, h, w = VideoVAE(st).latent_shape(33, 64, 64)
    assert (c, f, h, w) == (16, 9, 8, 8)
    values = c * f * h * w  # 9216
    per_channel = 33 * (64 // cfg2d.space_factor) ** 2
    assert values <= cfg2d.latent_channels * per_channel < values + per_channel
    assert cfg2d.time_factor == 1 and cfg2d.temporal_kernel == 1


def test_frame_baseline_is_per_frame():
    torch.manual_seed(0)
    model = FrameVAE(frame_vae_config(tiny_cfg(), frames=9, height=16, width=16)).eval()
    x = clip(9)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape[2] == 9
        y = model.decode(z)
        torch.testing.assert_close(model.encode(x[:, :, 4:5]), z[:, :, 4:5], atol=1e-5, rtol=1e-4)
    assert y.shape == x.shape


# ----------------------------------------------------------------------------- the training task

from worldreel.train.vae_critic import VAEWithCritic  # noqa: E402
from worldreel.train.vae_task import VAETask, VAETaskConfig  # noqa: E402


def tiny_task(**kw) -> VAETask:
    opts = dict(pool_clips=4, clip_frames=9, clip_size=(32, 32), crop=(5, 16, 16), image_prob=0.3,
                stats_clips=2)
    opts.update(kw)
    return VAETask.for_vae(tiny_cfg(), batch_size=2, cfg=VAETaskConfig(**opts))


def test_task_batches_are_deterministic_and_resume_exactly():
    task = tiny_task()
    first = [b for _, b in zip(range(8), task.batches(seed=3, rank=0, world_size=1, start_step=0))]
    assert {tuple(b.shape) for b in first} == {(2, 3, 5, 16, 16), (2, 3, 1, 32, 32)}  # crops and whole images
    assert all(b.min() >= -1 and b.max() <= 1 for b in first)
    resumed = next(task.batches(seed=3, rank=0, world_size=1, start_step=5))
    assert torch.equal(resumed, first[5])
    other_rank = next(task.batches(seed=3, rank=1, world_size=2, start_step=5))
    assert not torch.equal(other_rank, first[5]) or other_rank.shape != first[5].shape


def test_task_loss_trains_and_export_measures_latent_stats(tmp_path):
    task = tiny_task(image_prob=0.0)
    model = task.build_model()
    batch = next(task.batches(seed=0, rank=0, world_size=1, start_step=0))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, logs = task.loss(model, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(logs) >= {"l1", "grad", "kl", "psnr"}
    assert losses[-1] < 0.7 * losses[0]
    (tmp_path / "config.json").write_text(json.dumps({"name": "x", "dit": {"depth": 2}}))
    task.export(model, str(tmp_path))
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["dit"] == {"depth": 2} and data["name"] == "x"  # other sections untouched
    assert data["vae"]["latent_shift"] != [0.0] * 4 and data["vae"]["latent_scale"] != [1.0] * 4
    loaded = load_vae(tmp_path)
    from worldreel.data.clips import world_videos

    clips = world_videos(task.cfg.stats_seed, 2, frames=9, size=(32, 32))
    with torch.no_grad():
        z = loaded.encode(clips).transpose(0, 1).flatten(1)  # (C, N)
    assert z.mean(1).abs().max() < 0.1 and (z.std(1) - 1).abs().max() < 0.1  # normalised by the measured stats


def test_adversarial_switch():
    task = tiny_task(adversarial=True, adv_start=0, image_prob=0.0)
    model = task.build_model()
    assert isinstance(model, VAEWithCritic)
    batch = next(task.batches(seed=0, rank=0, world_size=1, start_step=0))
    loss, logs = task.loss(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert "critic" in logs and "gen_adv" in logs
    assert all(p.grad is not None for p in model.critic.parameters())
    assert model.vae.decoder[0].conv.weight.grad.abs().sum() > 0


def test_the_critic_scores_an_image_batch_the_same_under_bf16_autocast():
    """The autoencoder's image batches are one frame; torch's CPU bf16 Conv3d got those wrong
    (NaN at 32x32) and a bf16 run with the critic diverged. The critic runs in fp32."""
    from worldreel.train.vae_critic import PatchCritic

    torch.manual_seed(0)
    critic = PatchCritic()
    for shape in [(2, 3, 1, 32, 32), (2, 3, 1, 64, 64), (2, 3, 9, 32, 32)]:
        video = torch.rand(shape) * 2 - 1
        plain = critic(video)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = critic(video)
        assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
        assert torch.allclose(mixed, plain, atol=1e-6)


def test_bench_cli_needs_a_model_or_training(tmp_path):
    from worldreel.cli import main

    assert main(["bench", "vae", "--json", str(tmp_path / "out.json")]) == 2
    assert main(["bench", "vae", "--json", str(tmp_path / "missing" / "out.json"), "--train-steps", "1"]) == 2
    assert not (tmp_path / "out.json").exists()


def test_bench_quality_and_speed_on_a_tiny_model():
    from worldreel.eval.vae_bench import quality, speed

    torch.manual_seed(0)
    model = VideoVAE(tiny_cfg()).eval()
    videos = clip(9, size=16, batch=2)
    q = quality(model, videos)
    assert q["latent_values"] == 4 * 3 * 2 * 2 and q["compression_ratio"] == round(3 * 9 * 16 * 16 / 48, 2)
    assert 0 < q["psnr"] < 60 and -1 <= q["ssim"] <= 1
    s = speed(model, videos)
    assert s["encode_fps"] > 0 and s["decode_fps"] > 0


def test_decoder_only_fine_tune_keeps_the_encoder(tmp_path):
    """task.init + task.freeze_encoder: the decoder trains, the encoder (so every cached
    latent) stays bit-identical, and the export measures the same latent statistics."""
    task = tiny_task(image_prob=0.0)
    start = task.build_model()
    task.export(start, str(tmp_path / "start"))
    tuned = tiny_task(image_prob=0.0, init=str(tmp_path / "start"), freeze_encoder=True)
    model = tuned.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        loss, _ = tuned.loss(model, next(tuned.batches(seed=0, rank=0, world_size=1, start_step=step)), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    tuned.export(model, str(tmp_path / "tuned"))
    a = json.loads((tmp_path / "start" / "config.json").read_text())["vae"]
    b = json.loads((tmp_path / "tuned" / "config.json").read_text())["vae"]
    assert a["latent_shift"] == b["latent_shift"] and a["latent_scale"] == b["latent_scale"]


def _with_denoiser(tmp_path, task):
    """A model folder: ``task``'s exported autoencoder plus a small random denoiser for its latents."""
    from dataclasses import replace

    from worldreel.models.dit import DiT
    from worldreel.model_folder import read_config, save_model

    start = task.build_model()
    task.export(start, str(tmp_path / "start"))
    config = read_config(tmp_path / "start")
    config.dit = replace(config.dit, in_channels=config.vae.latent_channels, width=32, depth=2, heads=2)
    torch.manual_seed(0)
    dit = DiT(config.dit)
    with torch.no_grad():
        for param in dit.parameters():  # adaLN-Zero starts at zero: make the output depend on the input
            if not param.any():
                param.normal_(0.0, 0.05)
    return save_model(tmp_path / "denoiser", config, start, dit)


def test_decoder_can_train_on_a_denoisers_estimates(tmp_path):
    """task.denoiser: with denoised_prob 1 every sample's latents are the denoiser's
    one-step estimate (near the clean latents at small t, not equal); with 0 the step is
    exactly the plain decoder-only step; the encoder stays frozen either way."""
    folder = _with_denoiser(tmp_path, tiny_task(image_prob=0.0))
    opts = dict(image_prob=0.0, init=str(tmp_path / "start"), freeze_encoder=True, denoiser=str(folder))
    batch = next(tiny_task(image_prob=0.0).batches(seed=0, rank=0, world_size=1, start_step=0))

    def step_loss(**kw):
        task = tiny_task(**{**opts, **kw})
        model = task.build_model()
        return task, model, task.loss(model, batch, torch.Generator().manual_seed(0))[0]

    plain = step_loss(denoiser="")[2]
    assert step_loss(denoised_prob=0.0)[2].item() == pytest.approx(plain.item(), rel=1e-6)
    task, model, loss = step_loss(denoised_prob=1.0)
    assert abs(loss.item() - plain.item()) > 1e-4 * plain.item()
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    z = torch.randn(2, 4, 2, 2, 2)
    estimate = task._denoiser(z, torch.Generator().manual_seed(1))
    assert not torch.equal(estimate, z) and (estimate - z).abs().max() < 10
    small = tiny_task(**opts, denoised_prob=1.0, denoised_t=1e-4)
    small.build_model()
    assert (small._denoiser(z, torch.Generator().manual_seed(1)) - z).abs().max() < 1e-2


def test_the_denoisers_estimate_can_be_a_several_step_sample(tmp_path):
    """task.denoised_steps: the estimate is K Euler steps of the flow from the same x_t to 0
    (the same draws of pick, t and noise as one step), not one jump; out of range is refused."""
    from worldreel.diffusion import flow

    folder = _with_denoiser(tmp_path, tiny_task(image_prob=0.0))
    opts = dict(image_prob=0.0, init=str(tmp_path / "start"), freeze_encoder=True, denoiser=str(folder),
                denoised_prob=1.0, denoised_t=0.8)
    z = torch.randn(2, 4, 2, 2, 2)
    one, three = tiny_task(**opts), tiny_task(**opts, denoised_steps=3)
    one.build_model(), three.build_model()
    a = one._denoiser(z, torch.Generator().manual_seed(3))
    b = three._denoiser(z, torch.Generator().manual_seed(3))
    # The same draws by hand: pick (all, prob 1), t, noise; then three Euler steps.
    gen = torch.Generator().manual_seed(3)
    torch.rand(2, generator=gen)
    t = torch.rand(2, generator=gen) * 0.8
    noise = torch.randn(z.shape, generator=gen)
    den = three._denoiser
    states, mask = (x.expand(2, *x.shape[1:]) for x in den.text)
    x = flow.noisy(z, noise, t[:, None].expand(2, 2))
    with torch.no_grad():
        first = x - t.view(2, 1, 1, 1, 1) * den.dit(x, t[:, None].expand(2, 2), states, mask)
        for k in range(3):
            x = x - (t / 3).view(2, 1, 1, 1, 1) * den.dit(x, (t * (1 - k / 3))[:, None].expand(2, 2), states, mask)
    assert torch.allclose(a, first, atol=1e-5) and torch.allclose(b, x, atol=1e-5)
    assert (a - b).abs().max() > 1e-4
    for bad in (0, 51, 2.5, True):
        with pytest.raises(UserError) as err:
            tiny_task(**opts, denoised_steps=bad).build_model()
        assert err.value.param == "task.denoised_steps"


def test_a_denoiser_for_the_decoder_needs_its_encoder(tmp_path):
    folder = _with_denoiser(tmp_path, tiny_task(image_prob=0.0))
    with pytest.raises(UserError) as err:  # the encoder would move away from the denoiser's latents
        tiny_task(init=str(tmp_path / "start"), denoiser=str(folder)).build_model()
    assert err.value.param == "task.denoiser"
    other = tiny_task(image_prob=0.0)
    other.export(other.build_model(), str(tmp_path / "other"))  # another random encoder: other statistics
    with pytest.raises(UserError) as err:
        tiny_task(init=str(tmp_path / "other"), freeze_encoder=True, denoiser=str(folder)).build_model()
    assert err.value.param == "task.denoiser"
    with pytest.raises(UserError) as err:
        tiny_task(init=str(tmp_path / "start"), freeze_encoder=True, denoiser=str(folder), denoised_t=0.0).build_model()
    assert err.value.param == "task.denoised_t"
    with pytest.raises(UserError) as err:  # no such model
        tiny_task(init=str(tmp_path / "start"), freeze_encoder=True, denoiser=str(tmp_path / "nope")).build_model()
    assert err.value.param == "task.denoiser"


def test_detail_weight_puts_the_loss_on_objects():
    """detail_mask marks object pixels (and their ring), not the sky; with detail_weight the
    same error costs more on an object than on the sky."""
    from worldreel.train.vae_losses import detail_mask

    video = torch.full((1, 3, 2, 16, 16), -0.8)
    video[:, 0, :, 6:9, 6:9] = 0.9  # a red 3x3 square in both frames
    mask = detail_mask(video, 0.1)
    assert mask[0, 0, 0, 7, 7] == 1 and mask[0, 0, 0, 5, 5] == 1 and mask[0, 0, 0, 0, 0] == 0
    assert mask.sum() == 2 * 25  # the square grown by one pixel
    task = tiny_task(detail_weight=10.0)
    model = task.build_model()

    class Fixed(torch.nn.Module):  # a "model" whose reconstruction is the input plus a chosen error
        def __init__(self, error):
            super().__init__()
            self.error, self.p = error, torch.nn.Parameter(torch.zeros(()))

        def parameters(self, recurse=True):
            return model.parameters(recurse)

        def forward(self, x, sample=True, generator=None):
            z = torch.zeros(1, 4, 1, 2, 2)
            return x + self.error, z, z

    on_object, on_sky = torch.zeros_like(video), torch.zeros_like(video)
    on_object[:, :, :, 7, 7] = 0.5
    on_sky[:, :, :, 1, 1] = 0.5
    gen = torch.Generator().manual_seed(0)
    assert task.loss(Fixed(on_object), video, gen)[0] > 3 * task.loss(Fixed(on_sky), video, gen)[0]
    plain = tiny_task()
    assert plain.loss(Fixed(on_object), video, gen)[0].item() == pytest.approx(plain.loss(Fixed(on_sky), video, gen)[0].item(), rel=1e-4)


def test_freeze_encoder_needs_init():
    with pytest.raises(UserError) as err:
        tiny_task(freeze_encoder=True).build_model()
    assert err.value.param == "task.freeze_encoder"


def test_motion_weight_puts_the_loss_on_what_moves():
    """motion_mask marks pixels that change into or out of a frame (and their ring), not what
    stays; with motion_weight the same error costs more on a moving tick than on a still one."""
    from worldreel.train.vae_losses import motion_mask

    video = torch.full((1, 3, 3, 16, 16), -0.8)
    video[:, :, :, 12:, 2] = 0.0  # a still 1-px tick
    for f in range(3):
        video[:, :, f, 12:, 8 + f] = 0.0  # a tick that moves one pixel per frame
    mask = motion_mask(video, 0.1)
    assert mask.shape == (1, 1, 3, 16, 16)
    assert mask[0, 0, :, 13, 2].sum() == 0 and mask[0, 0, :, 13, 1].sum() == 0  # the still tick and its ring
    assert all(mask[0, 0, f, 13, 8 + f] == 1 for f in range(3))  # the moving tick, in every frame
    assert mask[0, 0, 1, 0, 8] == 0  # the sky above it
    assert motion_mask(video[:, :, :1], 0.1).sum() == 0  # one frame: nothing moves

    class Fixed(torch.nn.Module):
        def __init__(self, error, model):
            super().__init__()
            self.error, self.model = error, model

        def parameters(self, recurse=True):
            return self.model.parameters(recurse)

        def forward(self, x, sample=True, generator=None):
            z = torch.zeros(1, 4, 1, 2, 2)
            return x + self.error, z, z

    moving, still = torch.zeros_like(video), torch.zeros_like(video)
    moving[:, :, 1, 13, 9] = 0.5
    still[:, :, 1, 13, 2] = 0.5
    gen = torch.Generator().manual_seed(0)
    for weighted, factor in ((tiny_task(motion_weight=10.0), 3.0), (tiny_task(), None)):
        model = weighted.build_model()
        a = weighted.loss(Fixed(moving, model), video, gen)[0].item()
        b = weighted.loss(Fixed(still, model), video, gen)[0].item()
        assert a > factor * b if factor else a == pytest.approx(b, rel=1e-4)


def test_spectral_loss_charges_a_faded_pattern_not_a_moved_one():
    """Pixel losses prefer a faded tick to one a pixel off; the spectral term does the opposite:
    a circularly shifted pattern costs nothing, the same pattern at half contrast does."""
    from worldreel.train.vae_losses import spectral_loss

    video = torch.full((1, 3, 2, 16, 16), -0.8)
    video[:, :, :, 12:, ::4] = 0.0  # 1-px ticks every 4 pixels
    moved = video.roll(1, dims=4)
    faded = -0.8 + 0.5 * (video + 0.8)
    assert spectral_loss(video, video).item() == 0.0
    assert spectral_loss(moved, video).item() < 1e-6
    assert spectral_loss(faded, video).item() > 0.01
    # The pixel L1 ranks them the other way round: that is what the spectral term is for.
    assert (faded - video).abs().mean() < (moved - video).abs().mean()

    gen = torch.Generator().manual_seed(0)
    task = tiny_task(spectral_weight=1.0)
    assert "spectral" in task.loss(task.build_model(), video, gen)[1]
    assert "spectral" not in tiny_task().loss(tiny_task().build_model(), video, gen)[1]
