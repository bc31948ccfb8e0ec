"""The denoiser: adaLN-Zero init, RoPE on unseen grids, U-ViT skips, text masks, per-frame times."""
import dataclasses

import pytest
import torch

from worldreel.errors import UserError
from worldreel.model_folder import load_dit
from worldreel.models.dit import DiT, DiTConfig, Rope3D, apply_rope, count_params, grow_depth, grown_positions

TINY = DiTConfig(in_channels=4, width=32, depth=2, heads=4, text_dim=24)


def _inputs(B=2, f=3, h=4, w=6, L=5, cfg=TINY, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, f, h, w, generator=g)
    t = torch.rand(B, f, generator=g)
    text = torch.randn(B, L, cfg.text_dim, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    return x, t, text, mask


def _trained_like(model: DiT, seed: int = 1) -> DiT:
    """Give every zero-initialised weight a random value, as if training had moved it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def test_zero_output_at_init_and_final_layer_learns():
    model = DiT(TINY)
    x, t, text, mask = _inputs()
    v = model(x, t, text, mask)
    assert v.shape == x.shape
    assert torch.equal(v, torch.zeros_like(v))  # adaLN-Zero + zero head
    (model(x, t, text, mask) - x).square().mean().backward()
    assert model.final.linear.weight.grad.abs().sum() > 0  # the head gets a gradient at step 1
    assert model.blocks[0].ada[-1].weight.grad is not None


@pytest.mark.parametrize("grid", [(3, 4, 6), (7, 10, 2), (1, 2, 2)])
def test_any_grid_size_and_length(grid):
    model = _trained_like(DiT(TINY))
    x, t, text, mask = _inputs(B=1, f=grid[0], h=grid[1], w=grid[2])
    v = model(x, t, text, mask)
    assert v.shape == x.shape
    assert torch.isfinite(v).all() and v.abs().max() > 0


def test_rope_scores_depend_only_on_offsets():
    """Shifting every position by the same amount leaves all attention scores unchanged."""
    rope = Rope3D(head_dim=12, theta=10000.0)
    assert rope.dims == (4, 4, 4)
    q, k = torch.randn(2, 1, 2, 3 * 4 * 5, 12).unbind(0)  # (1, 2, N, 12) each
    cos, sin = rope((3, 4, 5), torch.device("cpu"))
    cos2, sin2 = rope((3, 4, 5), torch.device("cpu"), offset=(11, -7, 40))
    s1 = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)
    s2 = apply_rope(q, cos2, sin2) @ apply_rope(k, cos2, sin2).transpose(-1, -2)
    torch.testing.assert_close(s1, s2, atol=1e-4, rtol=1e-4)
    # ...but it does see positions: without rotation the scores differ.
    assert not torch.allclose(s1, q @ k.transpose(-1, -2), atol=1e-3)


def test_model_sees_token_positions():
    """Swapping two latent frames' contents is not just swapping the outputs (time positions are encoded)."""
    model = _trained_like(DiT(TINY))
    x, _, text, mask = _inputs(B=1, f=3)
    t = torch.full((1, 3), 0.5)
    v = model(x, t, text, mask)
    v_swapped = model(x[:, :, [1, 0, 2]], t, text, mask)[:, :, [1, 0, 2]]
    assert not torch.allclose(v, v_swapped, atol=1e-4)


def test_uvit_runs_and_differs():
    plain = _trained_like(DiT(TINY))
    uvit = DiT(dataclasses.replace(TINY, skips="uvit", depth=3))
    assert uvit.blocks[2].skip is not None and uvit.blocks[1].skip is None and uvit.blocks[0].skip is None
    plain3 = DiT(dataclasses.replace(TINY, depth=3))
    _trained_like(plain3)
    missing, unexpected = uvit.load_state_dict(plain3.state_dict(), strict=False)
    assert not unexpected and all(".skip." in k for k in missing)
    _trained_like(uvit)  # its zero-init weights (none in the skip) are set; shared weights already equal
    x, t, text, mask = _inputs()
    v_uvit, v_plain = uvit(x, t, text, mask), plain3(x, t, text, mask)
    assert v_uvit.shape == x.shape and torch.isfinite(v_uvit).all()
    assert not torch.allclose(v_uvit, v_plain, atol=1e-4)
    assert count_params(uvit.cfg) == count_params(plain3.cfg) + (2 * 32 + 1) * 32
    v_uvit.square().mean().backward()
    assert uvit.blocks[2].skip.weight.grad.abs().sum() > 0
    assert plain(x, t, text, mask).shape == x.shape


def test_padded_text_tokens_do_not_matter():
    model = _trained_like(DiT(TINY))
    x, t, text, mask = _inputs(L=4)
    v = model(x, t, text, mask)
    garbage = torch.randn(2, 3, TINY.text_dim) * 10
    padded = torch.cat([text, garbage], dim=1)  # (B, 7, D)
    pad_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(x, t, padded, pad_mask), v, atol=1e-5, rtol=1e-5)
    # The real tokens do matter.
    assert not torch.allclose(model(x, t, torch.randn_like(text), mask), v, atol=1e-4)
    # A row with no real token at all still gives finite output.
    assert torch.isfinite(model(x, t, text, torch.zeros_like(mask))).all()


def test_per_frame_time_given_frame_with_noisy_rest():
    model = _trained_like(DiT(TINY))
    x, _, text, mask = _inputs(f=3)
    t_given = torch.tensor([[0.0, 0.9, 0.9], [0.0, 0.3, 0.3]])
    v = model(x, t_given, text, mask)
    assert torch.isfinite(v).all()
    # The time of frame 0 reaches frame 0's tokens through its own modulation.
    v_all_noisy = model(x, torch.tensor([[0.9, 0.9, 0.9], [0.3, 0.3, 0.3]]), text, mask)
    assert not torch.allclose(v[:, :, 0], v_all_noisy[:, :, 0], atol=1e-4)
    # Batch rows are independent: each row's times only affect that row.
    v_row = model(x[1:], t_given[1:], text[1:], mask[1:])
    torch.testing.assert_close(v_row, v[1:], atol=1e-5, rtol=1e-5)


def test_grad_checkpoint_same_gradients():
    model = _trained_like(DiT(TINY)).train()
    x, t, text, mask = _inputs()
    model(x, t, text, mask).square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, t, text, mask).square().mean().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


def test_temporal_patch_and_bad_grid():
    cfg = dataclasses.replace(TINY, patch=(2, 2, 2), pooled_text=False)
    model = _trained_like(DiT(cfg))
    x, t, text, mask = _inputs(f=4, h=4, w=4)
    assert model(x, t, text, mask).shape == x.shape
    with pytest.raises(ValueError, match="not divisible"):
        model(*_inputs(f=3))
    with pytest.raises(ValueError, match="head dim"):
        DiT(dataclasses.replace(TINY, heads=8))


def test_world_tiny_size():
    from worldreel.presets import get_preset

    n = count_params(get_preset("world-tiny").model.dit)
    assert 9e6 < n < 12e6


def test_task_loss_trains_and_export_loads(tmp_path):
    """The training task: a finite loss with gradients, a fall after a few steps, fp16 export that model_folder.load_dit reads."""
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-tiny")
    model_cfg = dataclasses.replace(preset.model, dit=dataclasses.replace(TINY, text_dim=384, in_channels=16))
    # No autoencoder next to the export (the default runs/<preset>/vae/model is relative to the cwd).
    task = DiTTask(model_cfg, preset.train_dit, DiTTaskConfig(vae=str(tmp_path / "no-vae")))
    model = task.build_model()
    g = torch.Generator().manual_seed(0)
    batch = {
        "latents": torch.randn(4, 16, 3, 4, 4, generator=g),
        "text": torch.randn(4, 5, 384, generator=g),
        "text_mask": torch.ones(4, 5, dtype=torch.bool),
        "null_text": torch.randn(1, 2, 384, generator=g),
        "null_mask": torch.ones(1, 2, dtype=torch.bool),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, logs = task.loss(model, batch, torch.Generator().manual_seed(1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert logs["tokens"] == 4 * 3 * 2 * 2 and torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < 0.9 * losses[0]
    task.export(model, str(tmp_path))
    loaded = load_dit(tmp_path)
    x, t = batch["latents"][:1], torch.rand(1, 3)
    with torch.no_grad():
        expect = model.eval()(x, t, batch["text"][:1], batch["text_mask"][:1])
        got = loaded(x, t, batch["text"][:1], batch["text_mask"][:1])
    torch.testing.assert_close(got, expect, atol=2e-2, rtol=2e-2)  # fp16 weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "dit.safetensors"]
    # task.init starts a new run from these weights (fine-tuning), and refuses another layout.
    resumed = DiTTask(model_cfg, preset.train_dit, DiTTaskConfig(vae=str(tmp_path / "no-vae"), init=str(tmp_path))).build_model()
    for k, v in loaded.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v.float()), k
    wider = dataclasses.replace(model_cfg, dit=dataclasses.replace(model_cfg.dit, depth=model_cfg.dit.depth + 1))
    with pytest.raises(UserError) as err:
        DiTTask(wider, preset.train_dit, DiTTaskConfig(init=str(tmp_path))).build_model()
    assert err.value.param == "task.init"
    with pytest.raises(UserError) as err:
        DiTTask(model_cfg, preset.train_dit, DiTTaskConfig(init=str(tmp_path / "nowhere"))).build_model()
    assert err.value.param == "task.init"


def test_grown_denoiser_starts_as_the_shallow_one_and_trains_its_new_blocks():
    """Depth up-scaling: old blocks spread evenly, new ones are the identity until trained."""
    assert grown_positions(8, 12) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert grown_positions(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        grown_positions(4, 3)
    shallow = _trained_like(DiT(TINY))
    deep = DiT(dataclasses.replace(TINY, depth=5))
    assert grow_depth(deep, shallow) == [1, 3, 4]
    assert torch.equal(deep.blocks[2].attn.qkv.weight, shallow.blocks[1].attn.qkv.weight)
    x, t, text, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(deep.eval()(x, t, text, mask), shallow(x, t, text, mask), atol=1e-6, rtol=1e-6)
    # One optimiser step moves the new blocks off the identity: the grown model now differs.
    deep.train()
    deep(x, t, text, mask).square().mean().backward()
    assert deep.blocks[1].ada[-1].weight.grad.abs().max() > 0
    assert deep.blocks[1].cross.proj.weight.grad.abs().max() > 0
    torch.optim.SGD(deep.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert not torch.allclose(deep.eval()(x, t, text, mask), shallow(x, t, text, mask), atol=1e-4)
    # Another width, or U-ViT skips (blocks paired by depth), cannot be grown into.
    with pytest.raises(ValueError):
        grow_depth(DiT(dataclasses.replace(TINY, depth=5, skips="uvit")), DiT(dataclasses.replace(TINY, skips="uvit")))
    with pytest.raises(ValueError):
        grow_depth(DiT(dataclasses.replace(TINY, depth=3, mlp_ratio=2.0)), shallow)


def test_task_grows_a_shallower_init_only_when_asked(tmp_path):
    """task.grow=true starts a deeper run from a shallower export; without it the error says how."""
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-tiny")
    model_cfg = dataclasses.replace(preset.model, dit=dataclasses.replace(TINY, text_dim=384, in_channels=16))
    task = DiTTask(model_cfg, preset.train_dit, DiTTaskConfig(vae=str(tmp_path / "no-vae")))
    task.export(_trained_like(task.build_model()), str(tmp_path))
    shallow = load_dit(tmp_path)
    deeper = dataclasses.replace(model_cfg, dit=dataclasses.replace(model_cfg.dit, depth=3))
    with pytest.raises(UserError, match="task.grow=true") as err:
        DiTTask(deeper, preset.train_dit, DiTTaskConfig(init=str(tmp_path))).build_model()
    assert err.value.param == "task.init"
    grown = DiTTask(deeper, preset.train_dit, DiTTaskConfig(init=str(tmp_path), grow=True)).build_model().eval()
    assert len(grown.blocks) == 3
    x, t, text, mask = _inputs(cfg=model_cfg.dit)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, text, mask), shallow(x, t, text, mask), atol=1e-5, rtol=1e-5)
    # Growing never shrinks, nor changes another part of the layout.
    for other in (dataclasses.replace(model_cfg.dit, depth=1), dataclasses.replace(model_cfg.dit, depth=3, mlp_ratio=2.0)):
        with pytest.raises(UserError) as err:
            DiTTask(dataclasses.replace(model_cfg, dit=other), preset.train_dit, DiTTaskConfig(init=str(tmp_path), grow=True)).build_model()
        assert err.value.param == "task.init" and "task.grow" not in str(err.value)


def test_speed_bench_rows():
    """The speed benchmark's denoiser rows on a toy token count (the real run is `worldreel bench speed`)."""
    from worldreel.errors import UserError
    from worldreel.eval.speed import SpeedConfig, grid_for_tokens, run_speed

    assert grid_for_tokens(144, (1, 2, 2)) == (9, 8, 8) and grid_for_tokens(2304, (1, 2, 2)) == (9, 32, 32)
    with pytest.raises(UserError, match="tokens"):
        grid_for_tokens(100, (1, 2, 2))
    result = run_speed(SpeedConfig(tokens=[9], repeats=1, warmup=0, peer=False, model="", peak_seconds=0.2))
    (row,) = result["denoiser"]
    assert result["machine"]["matmul_peak_gflops"] > 0
    assert row["tokens"] == 9 and row["forward_s"] > 0 and row["forward_backward_gflop"] > 2 * row["forward_gflop"] > 0
    assert 0 < row["forward_util"] < 1.5


def test_task_reads_a_latent_cache(tmp_path):
    """DiTTask batches from a LatentCache: pre-encoded text states used, "" states for dropped captions."""
    from worldreel.data.latents import build_cache
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    g = torch.Generator().manual_seed(0)
    items = [{"video": torch.zeros(3, 5 if i % 2 else 1, 16, 16), "caption": f"caption {i}"} for i in range(8)]
    build_cache(
        tmp_path / "cache", items, count=8, progress=False,
        encode_video=lambda v: torch.randn(v.shape[0], 16, 1 + (v.shape[2] - 1) // 4, 2, 2, generator=g),
        encode_text=lambda p: (torch.randn(len(p), 3, 384, generator=g), torch.ones(len(p), 3, dtype=torch.bool)),
        meta={"command": "worldreel train cache --count 8"},
    )
    preset = get_preset("world-tiny")
    model_cfg = dataclasses.replace(preset.model, dit=dataclasses.replace(TINY, text_dim=384, in_channels=16))
    train_cfg = dataclasses.replace(preset.train_dit, data=str(tmp_path / "cache"), batch_size=2)
    task = DiTTask(model_cfg, train_cfg, DiTTaskConfig(text_drop=0.5))
    batches = task.batches(seed=0, rank=0, world_size=1, start_step=0)
    shapes = {tuple(next(batches)["latents"].shape) for _ in range(6)}
    assert shapes == {(2, 16, 1, 2, 2), (2, 16, 2, 2, 2)}  # images and clips, one shape per batch
    batch = next(batches)
    text, mask = task._text_for(batch, torch.tensor([False, True]), torch.device("cpu"))
    torch.testing.assert_close(text[0, :3], batch["text"][0])
    torch.testing.assert_close(text[1, : batch["null_text"].shape[1]], batch["null_text"][0])
    assert task._text is None  # the cache's states were used: no text encoder loaded
    loss, logs = task.loss(task.build_model(), batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logs["items"] == 2
    # recorded in run.json and the stage record: the cache may grow later
    assert task.data_facts() == {"cache_items": 8, "cache_command": "worldreel train cache --count 8"}
    assert task.stage_facts() == {"data": str(tmp_path / "cache"), "data_command": "worldreel train cache --count 8"}
    world = DiTTask(model_cfg, dataclasses.replace(train_cfg, data="world"), DiTTaskConfig())
    assert world.data_facts() == {}


def test_eval_batch_is_the_same_whatever_repeat_multi(tmp_path):
    """task.repeat_multi changes what a run trains on, not the fixed batch its validation losses
    are measured on, so runs on one cache compare (it did differ before: stage 26's log)."""
    from worldreel.data.latents import build_cache
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    g = torch.Generator().manual_seed(0)
    items = [{"video": torch.zeros(3, 5, 16, 16), "caption": f"caption {i}",
              "facts": {"objects": [{"shape": "ball"}] * (1 + i % 3)}} for i in range(12)]
    build_cache(
        tmp_path / "cache", items, count=12, progress=False,
        encode_video=lambda v: torch.randn(v.shape[0], 16, 2, 2, 2, generator=g),
        encode_text=lambda p: (torch.randn(len(p), 3, 384, generator=g), torch.ones(len(p), 3, dtype=torch.bool)),
        meta={"command": "worldreel train cache --count 8"},
    )
    preset = get_preset("world-tiny")
    model_cfg = dataclasses.replace(preset.model, dit=dataclasses.replace(TINY, text_dim=384, in_channels=16))
    train_cfg = dataclasses.replace(preset.train_dit, data=str(tmp_path / "cache"), batch_size=2)
    plain, twice = (DiTTask(model_cfg, train_cfg, DiTTaskConfig(repeat_multi=k, eval_items=2)) for k in (1, 2))
    train_captions = {}
    for task in (plain, twice):
        it = task.batches(seed=10_007, rank=0, world_size=1, start_step=0)
        train_captions[task] = [next(it)["captions"] for _ in range(6)]
    assert train_captions[plain] != train_captions[twice]  # the option does change the training draws
    model = plain.build_model().eval()
    losses = [task._validation_losses(model) for task in (plain, twice)]
    assert plain._eval_batch["captions"] == twice._eval_batch["captions"] == train_captions[plain][0]
    assert losses[0] == losses[1]


def test_evaluate_writes_scored_sample_videos(tmp_path):
    """The evaluation hook samples prompts of world-bench's suite with the model being trained,
    writes them as MP4 with their captions, and logs their mean world-bench score."""
    import json

    from worldreel.data.video_io import read_video
    from worldreel.model_folder import read_config, save_random_model
    from worldreel.train.config import TrainConfig
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    folder = save_random_model(tmp_path / "model", overrides=["dit.width=32", "dit.depth=2", "dit.heads=2",
                                                               "vae.base_channels=8"])
    train_cfg = TrainConfig(batch_size=2, sizes=[(32, 32)], seconds=[1.0])
    task = DiTTask(read_config(folder), train_cfg, DiTTaskConfig(vae=str(folder), eval_items=2, eval_videos=2, eval_steps=1))
    model = task.build_model().eval()
    scores = task.evaluate(model, 7, str(tmp_path / "samples"))
    assert {"loss_t0.5", "loss_first_given", "worldbench"} <= set(scores) and 0 <= scores["worldbench"] <= 1
    out = tmp_path / "samples" / "step_00000007"
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == ["00.mp4", "01.mp4"] and rows[0]["caption"] != rows[1]["caption"]
    assert abs(sum(r["score"] for r in rows) / 2 - scores["worldbench"]) < 1e-3
    frames, fps = read_video(out / "00.mp4")
    assert frames.shape == (33, 64, 64, 3) and fps == 8
    quiet = DiTTask(read_config(folder), train_cfg, DiTTaskConfig(vae=str(folder), eval_items=2, eval_videos=0))
    assert "worldbench" not in quiet.evaluate(model, 8, str(tmp_path / "samples"))
