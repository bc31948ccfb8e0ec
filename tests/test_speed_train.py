"""Mixed precision (issue 31): bf16 steps match fp32, fp32 can be forced, the --train bench's JSON keys."""
import dataclasses
import json

import pytest
import torch

from worldreel.errors import UserError
from worldreel.models.dit import DiT, DiTConfig, attention
from worldreel.precision import resolve

TINY = DiTConfig(in_channels=4, width=64, depth=2, heads=4, text_dim=24)


def _batch(seed=0, B=4, f=3, h=4, w=4, L=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, TINY.in_channels, f, h, w, generator=g)
    t = torch.rand(B, f, generator=g)
    text = torch.randn(B, L, TINY.text_dim, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False  # one padded prompt
    return x, t, text, mask


def _trained_like(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)  # move the zero-initialised layers off zero
    return model


def test_bf16_step_matches_fp32_within_tolerance():
    """A tiny denoiser trained 5 AdamW steps on one batch from the same init, bf16 autocast
    against fp32. Stated tolerances: each step's loss within 2 % of fp32's, the first
    gradient's direction within cosine 0.99 of fp32's (bf16 keeps 8 mantissa bits, ~0.4 %
    per rounding); weights, gradients and optimiser state stay fp32 throughout."""
    x, t, text, mask = _batch()
    results = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = _trained_like(DiT(TINY))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        losses, first_grad = [], None
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x, t, text, mask)
            assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
            loss = (out.float() - x).square().mean()
            loss.backward()
            assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # master gradients stay fp32
            if first_grad is None:
                first_grad = torch.cat([p.grad.flatten() for p in model.parameters()])
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
        assert all(v.dtype == torch.float32 for s in opt.state.values() for v in s.values() if v.dim())
        results[bf16] = (losses, first_grad)
    (l32, g32), (l16, g16) = results[False], results[True]
    assert l32[-1] < l32[0] and l16[-1] < l16[0]  # both learn
    assert all(abs(a - b) / a < 0.02 for a, b in zip(l32, l16)), (l32, l16)
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_explicit_bf16_attention_equals_sdpa():
    """The explicit bf16 CPU attention computes what SDPA does (masks included), forward and backward."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    mask[1, ..., 7:] = False
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qb, kb, vb = (a.bfloat16().requires_grad_(True) for a in (q, k, v))
    out = attention(qb, kb, vb, mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05
    out.float().sum().backward()
    q32 = q.clone().requires_grad_(True)
    torch.nn.functional.scaled_dot_product_attention(q32, k, v, attn_mask=mask).sum().backward()
    assert torch.nn.functional.cosine_similarity(qb.grad.float().flatten(), q32.grad.flatten(), dim=0) > 0.99


def test_precision_choices_and_forced_fp32(monkeypatch):
    import worldreel.precision as precision

    assert resolve("fp32", "cpu") == "fp32" and resolve("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert resolve("auto", "cpu") == "fp32"  # a CPU without native bf16
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert resolve("auto", "cpu") == "bf16"
    assert resolve("auto", "cuda") == "bf16"  # the GPU path as before
    with pytest.raises(UserError, match="train.precision"):
        resolve("fp16", "cpu", param="train.precision")


def test_trainer_forced_fp32_and_bf16_record_their_precision(tmp_path):
    """train.precision=fp32 trains in fp32 on any machine, bf16 in bf16; run.json and summary.json say which."""
    from worldreel.train.config import TrainConfig
    from worldreel.train.trainer import RunConfig, main

    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        tc = TrainConfig(steps=3, batch_size=2, lr=1e-3, warmup=1, log_every=1, save_every=3, eval_every=0,
                         progress=False, precision=precision, device="cpu")
        result = main(RunConfig(task="test_trainer:ToyTask", train=tc, run_dir=str(run)))  # the trainer tests' toy task
        assert result["step"] == 3 and torch.isfinite(torch.tensor(result["loss"]))
        assert json.loads((run / "run.json").read_text())["precision"] == precision
        assert json.loads((run / "summary.json").read_text())["precision"] == precision


def test_bench_speed_train_json_keys(tmp_path):
    """`worldreel bench speed --train` on toy shapes: every documented JSON key, sane values."""
    from worldreel.eval.train_speed import TrainSpeedConfig, run_train_speed

    cfg = TrainSpeedConfig(dit_shapes=[(2, 1, 2, 2)], vae_shapes=[(1, 5, 16, 16)], modes=["fp32", "bf16"], repeats=1,
                           warmup=0, seconds=0, gen_precisions=["bf16"], whole_repeats=1, peak_seconds=0.1)
    r = run_train_speed(cfg)
    for key in ("train.dit.fp32.step_s", "train.dit.best.step_s", "train.dit.best.name", "train.vae.fp32.step_s",
                "train.vae.best.step_s", "generate.whole_process_s", "generate.sampling_s"):
        assert key in r, key
    assert r["train.dit.best.name"] in ("fp32", "bf16")
    assert r["train.dit.best.step_s"] == min(r["train.dit.fp32.step_s"], r["train.dit.bf16.step_s"])
    assert r["train.dit.fp32.latent_tokens_per_s"] == pytest.approx(2 * 1 * 2 * 2 / r["train.dit.fp32.step_s"])
    assert r["matmul.bf16.gflops"] > 0 and r["matmul.fp32.gflops"] > 0
    assert 0 < r["generate.sampling_s"] < r["generate.bf16.generate_s"] < r["generate.whole_process_s"]
    json.dumps(r)  # JSON-able as it is
    with pytest.raises(UserError, match="modes"):
        run_train_speed(dataclasses.replace(cfg, modes=["fp16"]))
