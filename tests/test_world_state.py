"""Issue 32's levers 1 and 2: world-state targets, object-weighted flow loss, the state head."""
import dataclasses
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from worldreel.data.facts import BACKGROUND, COLORS, PALETTE
from worldreel.data.render import render_clip
from worldreel.data.world import sample_scene, simulate
from worldreel.data.world_state import (
    HIDDEN, OCCUPANCY, STATE_CHANNELS, VELOCITY, CacheStates, latent_groups, scene_targets, state_targets,
)
from worldreel.errors import UserError

PILLAR_SEED = 1826701615  # a green ball thrown behind the pillar, a white box falls, the camera pans left
ROLL_SEED = 1121323794  # a yellow ball rolls right, a magenta ball falls, the camera pans right


def _cells(a: np.ndarray) -> np.ndarray:
    """(F, H, W) per-pixel values -> (F, H/8, W/8) cell means."""
    F, H, W = a.shape
    return a.reshape(F, H // 8, 8, W // 8, 8).mean(axis=(2, 4))


def test_latent_groups_follow_the_causal_autoencoder():
    assert latent_groups(list(range(9)), 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert latent_groups([17], 4) == [[0]]  # an image: one latent frame
    with pytest.raises(ValueError):
        latent_groups(list(range(8)), 4)


@pytest.mark.parametrize("seed", [PILLAR_SEED, ROLL_SEED])
def test_occupancy_matches_the_rendered_pixels(seed):
    """Each colour's occupancy covers at least the pixels rendered exactly in that colour, and all
    colours together no more than the pixels that objects change (per cell, per latent frame)."""
    scene = sample_scene(seed)
    traj = simulate(scene)
    frames = list(range(scene.frames))
    out = state_targets(scene, traj, frames)
    assert out.shape == (STATE_CHANNELS, 9, 8, 8) and out.dtype == np.float32
    video = render_clip(scene, traj).astype(int)  # (F, H, W, 3)
    empty = render_clip(replace(scene, objects=()), traj).astype(int)  # the same frames without objects
    touched = _cells((np.abs(video - empty).sum(-1) > 0).astype(float))  # (F, h, w)
    groups = latent_groups(frames, 4)
    per_latent = lambda a: np.stack([a[g].mean(0) for g in groups])  # noqa: E731  (F, h, w) -> (f, h, w)
    total = out[OCCUPANCY].sum(0)
    assert (total <= per_latent(touched) + 0.02).all()  # (a coverage of a few /255 may leave a pixel unchanged)
    for o in scene.objects:
        c = COLORS.index(o.color)
        exact = _cells((np.abs(video - np.array(PALETTE[o.color])).sum(-1) == 0).astype(float))
        assert exact.sum() > 0
        assert (out[OCCUPANCY][c] >= per_latent(exact) - 0.01).all()
    others = [COLORS.index(c) for c in COLORS if c not in {o.color for o in scene.objects}]
    assert out[OCCUPANCY][others].max() == 0 and out[HIDDEN][others].max() == 0
    sky = _cells(np.all(video == np.array(BACKGROUND), axis=-1).astype(float))  # (F, h, w) untouched sky
    assert (total[per_latent(sky) == 1.0] == 0).all()  # cells of pure sky hold no object


def test_hidden_and_velocity():
    scene = sample_scene(PILLAR_SEED)
    out = state_targets(scene, simulate(scene), list(range(scene.frames)))
    green, white = COLORS.index("green"), COLORS.index("white")
    assert out[HIDDEN][green].max() > 0.1  # the ball passes behind the pillar ...
    assert out[HIDDEN][white].max() == 0  # ... the box does not
    # The pillar hides the ball there: less visible than in frames where it is in the open.
    seen = out[OCCUPANCY][green].sum(axis=(1, 2))  # (f,)
    assert seen[out[HIDDEN][green].sum(axis=(1, 2)).argmax()] < seen.max()
    # A falling object moves down the screen (dy > 0) where it is, nothing moves where nothing is.
    roll = sample_scene(ROLL_SEED)
    out = state_targets(roll, simulate(roll), list(range(roll.frames)))
    magenta, yellow = COLORS.index("magenta"), COLORS.index("yellow")
    where = out[OCCUPANCY][magenta, 1] > 0.15  # latent frame 1: falling, alone in those cells
    assert where.any() and (out[VELOCITY.start + 1, 1][where] > 0.2).all()
    empty = out[OCCUPANCY].sum(0) + out[HIDDEN].sum(0) == 0
    assert (out[VELOCITY][:, empty] == 0).all()
    # The yellow ball rolls right in the world; on screen its speed is the world's minus the pan.
    cells = out[OCCUPANCY][yellow] > 0.5
    assert cells.any()
    x = simulate(roll).x[:, [o.color for o in roll.objects].index("yellow")]
    world_dx = (x[8] - x[4]) * 64 / 8  # cells per latent frame at latent frame 2
    pan = roll.pan_speed * 4 / 8 * 64 / 8
    vx = out[VELOCITY.start, 2][out[OCCUPANCY][yellow, 2] > 0.5]
    np.testing.assert_allclose(vx, world_dx - pan, atol=1e-4)


def test_targets_are_deterministic_and_cached():
    scene_targets.cache_clear()
    a, facts = scene_targets(ROLL_SEED, (64, 64), 4.0, tuple(range(33)))
    b, _ = scene_targets(ROLL_SEED, (64, 64), 4.0, tuple(range(33)))
    assert a is b and not a.flags.writeable  # served from memory, shared read-only
    scene_targets.cache_clear()
    c, facts_again = scene_targets(ROLL_SEED, (64, 64), 4.0, tuple(range(33)))
    assert c is not a and np.array_equal(a, c) and facts == facts_again
    image, _ = scene_targets(ROLL_SEED, (64, 64), 4.0, (12,))
    assert image.shape == (STATE_CHANNELS, 1, 8, 8)
    np.testing.assert_array_equal(image[OCCUPANCY, 0] > 0, state_targets(
        sample_scene(ROLL_SEED), simulate(sample_scene(ROLL_SEED)), [12])[OCCUPANCY, 0] > 0)


def _toy_encode(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, 16, f, H/8, W/8): a deterministic stand-in for the autoencoder."""
    B, _, F, H, W = video.shape
    first = torch.nn.functional.avg_pool3d(video[:, :, :1], (1, 8, 8))
    rest = torch.nn.functional.avg_pool3d(video[:, :, 1:], (4, 8, 8)) if F > 1 else first[:, :, :0]
    z = torch.cat([first, rest], dim=2)  # (B, 3, f, h, w)
    return torch.cat([z] * 5 + [z[:, :1]], dim=1)  # (B, 16, f, h, w)


def _toy_text(prompts):
    g = torch.Generator().manual_seed(len(prompts))
    return torch.randn(len(prompts), 3, 384, generator=g), torch.ones(len(prompts), 3, dtype=torch.bool)


@pytest.fixture(scope="module")
def world_cache(tmp_path_factory):
    """A reel-world latent cache of 8 items (4 s clips and single frames) with toy latents."""
    from worldreel.data.latents import WorldItems, build_cache

    out = tmp_path_factory.mktemp("cache") / "cache"
    items = WorldItems(8, sizes=[(64, 64)], seconds=[4.0, 0.0], seed=5)
    build_cache(out, items, count=8, encode_video=_toy_encode, encode_text=_toy_text, progress=False,
                meta={"vae": {"time_factor": 4, "space_factor": 8}, "sizes": [[64, 64]], "seconds": [4.0, 0.0],
                      "source": "world", "seed": 5, "command": "toy"})
    return out


def test_cache_items_get_their_targets(world_cache):
    from worldreel.data.latents import LatentCache

    cache = LatentCache(world_cache)
    states = CacheStates(cache.info, cache.entries)
    images = [i for i, e in enumerate(cache.entries) if e["seconds"] == 0]
    clips = [i for i, e in enumerate(cache.entries) if e["seconds"] > 0]
    assert images and clips
    for i in images + clips:
        e = cache.entries[i]
        got = states.targets(i, tuple(e["shape"][1:]))
        assert got is not None and got.shape == (STATE_CHANNELS, *e["shape"][1:])
        # the cache's own pixels agree: the toy latents are the clip's cell means, so a cell the
        # target calls fully covered by one colour has (nearly) that colour's mean value
        z = cache[i]["latents"][:3].numpy()  # (3, f, h, w) in [-1, 1]
        full = np.argwhere(got[OCCUPANCY].max(0) > 0.999)
        for k, y, x in full[:4]:
            c = int(got[OCCUPANCY][:, k, y, x].argmax())
            rgb = (z[:, k, y, x] + 1) / 2 * 255
            np.testing.assert_allclose(rgb, PALETTE[COLORS[c]], atol=3.0)
    # The frame of an image item is replayed as WorldItems drew it.
    e = cache.entries[images[0]]
    rng = np.random.default_rng([5, int(e["key"])])
    rng.integers(1), rng.integers(2), rng.integers(2**31)
    frame = int(rng.integers(33))
    np.testing.assert_array_equal(states.targets(images[0], (1, 8, 8)),
                                  scene_targets(e["seed"], (64, 64), 4.0, (frame,))[0])
    # Facts that differ from the re-simulated scene (another sampler version), no seed, a user's videos: none.
    tampered = [dict(e, facts={**e["facts"], "camera": "pan_left" if e["facts"]["camera"] != "pan_left" else "static"})
                for e in cache.entries]
    assert CacheStates(cache.info, tampered).targets(clips[0], (9, 8, 8)) is None
    unseeded = [{k: v for k, v in e.items() if k != "seed"} for e in cache.entries]
    assert CacheStates(cache.info, unseeded).targets(clips[0], (9, 8, 8)) is None
    videos = dict(cache.info, meta={**cache.info["meta"], "source": "my-videos"})
    batch = CacheStates(videos, cache.entries).batch(clips[:2], (9, 8, 8))
    assert not batch["has_state"].any() and batch["state"].abs().sum() == 0


def test_cache_states_replay_the_layout_the_cache_was_built_with(tmp_path):
    """A --starts wide cache records it, and its targets are re-simulated with it (the facts
    alone cannot tell: the same plan laid out the other way states the same facts)."""
    from worldreel.data.latents import LatentCache, WorldItems, build_cache

    out = tmp_path / "wide"
    items = WorldItems(6, sizes=[(64, 64)], seconds=[4.0], seed=3, starts="wide")
    build_cache(out, items, count=6, encode_video=_toy_encode, encode_text=_toy_text, progress=False,
                meta={"vae": {"time_factor": 4, "space_factor": 8}, "sizes": [[64, 64]], "seconds": [4.0],
                      "source": "world", "seed": 3, "starts": "wide", "command": "toy"})
    cache = LatentCache(out)
    states = CacheStates(cache.info, cache.entries)
    differs = 0
    for i, e in enumerate(cache.entries):
        got = states.targets(i, (9, 8, 8))
        np.testing.assert_array_equal(got, scene_targets(e["seed"], (64, 64), 4.0, tuple(range(33)), starts="wide")[0])
        differs += not np.array_equal(got, scene_targets(e["seed"], (64, 64), 4.0, tuple(range(33)))[0])
    assert states.mismatches == 0 and differs >= 1


def test_object_weights_have_mean_one_are_capped_and_sit_on_objects():
    from worldreel.train.state_head import object_weights

    _, facts = scene_targets(ROLL_SEED, (64, 64), 4.0, tuple(range(33)))
    state = torch.from_numpy(np.array(scene_targets(ROLL_SEED, (64, 64), 4.0, tuple(range(33)))[0]))
    state = torch.stack([state, state, state])  # (3, K, f, h, w)
    has = torch.tensor([True, True, False])
    given = torch.zeros(3, 9, dtype=torch.bool)
    given[1, :3] = True
    w = object_weights(state, has, given, strength=5.0, cap=3.0)  # (B, 1, f, h, w)
    assert w.shape == (3, 1, 9, 8, 8)
    torch.testing.assert_close(w[0].mean(), torch.tensor(1.0))
    torch.testing.assert_close(w[1, :, 3:].mean(), torch.tensor(1.0))  # over the generated frames only
    assert torch.equal(w[2], torch.ones_like(w[2]))  # no targets: uniform
    ratio = w[0].max() / w[0].min()
    torch.testing.assert_close(ratio, torch.tensor(3.0))  # capped: an object cell weighs 3 background cells
    occupied = state[0, OCCUPANCY].sum(0) > 0.5
    assert w[0, 0][occupied].min() > w[0, 0][state[0, OCCUPANCY].sum(0) == 0].max()
    # mild strength: below the cap, moving cells weigh more than resting ones of equal cover
    soft = object_weights(state, has, given, strength=0.5, cap=10.0)
    assert soft[0].max() / soft[0].min() < 2.0 + 1e-6


def test_weighted_flow_loss_is_backward_compatible():
    from worldreel.diffusion.flow import flow_loss

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    t = torch.tensor([0.3, 0.8])
    given = torch.tensor([[True, False, False], [False, False, False]])
    fn = lambda x, tf: x * 0.5  # noqa: E731
    plain = flow_loss(fn, x0, t=t, noise=noise, given=given)
    torch.testing.assert_close(flow_loss(fn, x0, t=t, noise=noise, given=given, weight=torch.ones(2, 1, 3, 4, 4)), plain)
    w = torch.ones(2, 1, 3, 4, 4)
    w[:, :, :, 0, 0] = 0.0
    assert flow_loss(fn, x0, t=t, noise=noise, given=given, weight=w) < plain


def _task(tmp_path, depth=4, **options):
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-micro")
    model_cfg = dataclasses.replace(preset.model, dit=dataclasses.replace(preset.model.dit, depth=depth))
    return DiTTask(model_cfg, preset.train_dit, DiTTaskConfig(vae=str(tmp_path / "no-vae"), **options))


def _batch(world_cache, task):
    from worldreel.data.latents import LatentCache

    cache = LatentCache(world_cache)
    clips = [i for i, e in enumerate(cache.entries) if e["seconds"] > 0][:2]
    batch = cache.collate([cache[i] for i in clips])
    batch.update(CacheStates(cache.info, cache.entries).batch(clips, (9, 8, 8)), step=0)
    return batch


def test_state_loss_trains_the_head_and_the_blocks_up_to_its_block_only(tmp_path, world_cache):
    on = _task(tmp_path, state_loss=1.0, state_block=2)
    model = on.build_model()
    assert any(k.startswith("state_head.") for k in model.state_dict())
    batch = _batch(world_cache, on)

    def grads(task, step=0):
        model.zero_grad()
        loss, logs = task.loss(model, dict(batch, step=step), torch.Generator().manual_seed(3))
        loss.backward()
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}, logs

    with_state, logs = grads(on)
    assert logs["state"] > 0 and {"state_occupancy", "state_hidden", "state_velocity"} <= set(logs)
    # Past state_until the head is idle: same randomness, the flow loss alone (the head's gradient is zero).
    without, logs_off = grads(_task(tmp_path, state_loss=1.0, state_block=2, state_until=1), step=1)
    assert "state" not in logs_off
    assert all(without[n].abs().max() == 0 for n in without if n.startswith("state_head."))
    assert all(with_state[n].abs().max() > 0 for n in with_state if n.startswith("state_head.") and "bias" not in n)
    changed = {n for n in with_state if not torch.equal(with_state[n], without[n])}
    assert any(n.startswith("blocks.1.") for n in changed) and any(n.startswith("blocks.0.") for n in changed)
    assert not any(n.startswith(("blocks.2.", "blocks.3.", "final.")) for n in changed)  # nothing after block 2
    # Gradient checkpointing recomputes the blocks in backward: the hook keeps the first output, same gradients.
    model.set_grad_checkpointing(True)
    again, _ = grads(on)
    for n in with_state:
        torch.testing.assert_close(again[n], with_state[n], rtol=1e-5, atol=1e-7)


def test_object_weight_changes_the_loss_not_the_model(tmp_path, world_cache):
    plain, weighted = _task(tmp_path), _task(tmp_path, object_weight=4.0)
    model = plain.build_model()
    assert not any(k.startswith("state_head.") for k in weighted.build_model().state_dict())
    batch = _batch(world_cache, plain)
    a, _ = plain.loss(model, batch, torch.Generator().manual_seed(0))
    b, _ = weighted.loss(model, batch, torch.Generator().manual_seed(0))
    c, _ = weighted.loss(model, {k: v for k, v in batch.items() if k not in ("state", "has_state")},
                         torch.Generator().manual_seed(0))
    assert torch.isfinite(b) and not torch.isclose(a, b)
    assert torch.equal(a, c)  # no targets: the plain loss


def test_early_weight_moves_the_loss_onto_latent_frames_1_and_2(tmp_path, world_cache):
    """task.early_weight counts an error on latent frame 1 about 2x (3 / mean(1, 3, 3, 1, ...)), no world state needed."""
    t2v = dict(p_first=0.0, p_last=0.0, p_prefix=0.0, p_suffix=0.0, p_ends=0.0)  # no given frames
    plain, early = _task(tmp_path, **t2v), _task(tmp_path, early_weight=2.0, **t2v)
    model = plain.build_model()
    batch = {k: v for k, v in _batch(world_cache, plain).items() if k not in ("state", "has_state")}

    def off_on_frame_1(x, t, text, mask, facts=None):  # the model, plus an error on latent frame 1 only
        out = model(x, t, text, mask, facts=facts)
        return out + torch.nn.functional.pad(torch.ones_like(out[:, :, 1:2]), (0, 0, 0, 0, 1, out.shape[2] - 2))

    off_on_frame_1.parameters = model.parameters

    def added(task):
        base, _ = task.loss(model, batch, torch.Generator().manual_seed(0))
        worse, _ = task.loss(off_on_frame_1, batch, torch.Generator().manual_seed(0))
        return (worse - base).item()

    ratio = added(early) / added(plain)
    assert 1.8 < ratio < 2.4  # 27 / 13 = 2.08 up to the model's own error on frame 1


@pytest.mark.parametrize("option,value", [("object_weight", -1.0), ("state_loss", float("nan")), ("object_cap", 0.5),
                                          ("state_block", 5), ("state_until", -2), ("early_weight", -0.5)])
def test_bad_lever_values_name_the_parameter(tmp_path, option, value):
    with pytest.raises(UserError) as err:
        _task(tmp_path, **{option: value})
    assert err.value.param == f"task.{option}"


def test_state_loss_refuses_a_compiled_model(tmp_path):
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-micro")
    with pytest.raises(UserError) as err:
        DiTTask(preset.model, dataclasses.replace(preset.train_dit, compile=True), DiTTaskConfig(state_loss=0.1))
    assert err.value.param == "task.state_loss"
    DiTTask(preset.model, dataclasses.replace(preset.train_dit, compile=True), DiTTaskConfig(object_weight=1.0))


def test_resume_is_exact_with_the_levers_on_and_export_has_no_head(tmp_path, world_cache):
    from safetensors.torch import load_file

    from worldreel.model_folder import load_dit
    from worldreel.presets import get_preset
    from worldreel.train import checkpoint
    from worldreel.train.config import TrainConfig
    from worldreel.train.trainer import RunConfig, main

    preset = get_preset("world-micro")
    options = ["object_weight=2", "state_loss=0.5", "state_block=1", "state_until=3", f"vae={tmp_path / 'no-vae'}"]

    def cfg(run, resume=False):
        tc = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup=1, log_every=1, save_every=2, keep=3, eval_every=0,
                         progress=False, ema=0.9, data=str(world_cache), precision="fp32")
        return RunConfig(task="dit", model=preset.model, train=tc, run_dir=str(run), resume=resume, task_options=options)

    main(cfg(tmp_path / "full"))
    # A second run that starts from the first one's step-2 checkpoint and resumes.
    split = tmp_path / "split" / "checkpoints"
    split.mkdir(parents=True)
    step2 = checkpoint.checkpoint_path(tmp_path / "full" / "checkpoints", 2)
    shutil.copy(step2, split / step2.name)
    main(cfg(tmp_path / "split", resume=True))
    rows = {name: {r["step"]: r for r in map(json.loads, (tmp_path / name / "log.jsonl").read_text().splitlines())
                   if "loss" in r} for name in ("full", "split")}
    assert "state" in rows["full"][3] and "state" not in rows["full"][4]  # state_until=3: steps 1-3 only
    for s in (3, 4):
        assert rows["split"][s]["loss"] == pytest.approx(rows["full"][s]["loss"], rel=1e-6)
    ca = torch.load(checkpoint.checkpoint_path(tmp_path / "full/checkpoints", 4), weights_only=True)
    cb = torch.load(checkpoint.checkpoint_path(tmp_path / "split/checkpoints", 4), weights_only=True)
    assert any(k.startswith("state_head.") for k in ca["model"])  # the head is checkpointed
    for k in ca["model"]:
        torch.testing.assert_close(cb["model"][k], ca["model"][k], rtol=1e-6, atol=1e-7)
    exported = load_file(str(tmp_path / "full/model/dit.safetensors"))
    assert exported and not any(k.startswith("state_head.") for k in exported)
    load_dit(tmp_path / "full" / "model")  # the unchanged loader (strict) reads it
