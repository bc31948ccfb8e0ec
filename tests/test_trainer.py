"""The trainer on a toy Task: exact resume, signals, LR schedule, run folder, errors.

The toy tasks here are also the ones tests/test_distributed.py launches under torchrun
(``test_trainer:ToyTaskExact``), so keep them importable without side effects.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from worldreel.config import to_dict
from worldreel.errors import UserError
from worldreel.presets import ModelConfig
from worldreel.train import checkpoint
from worldreel.train.config import TrainConfig
from worldreel.train.trainer import RunConfig, load_task, lr_at, main

W_TRUE = torch.tensor([[0.5], [-1.0], [2.0], [0.25]])


class ToyNet(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.inp = nn.Linear(4, 16)
        self.blocks = nn.ModuleList([nn.Linear(16, 16) for _ in range(2)])  # FSDP shards each block
        self.out = nn.Linear(16, 1)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("calls", torch.zeros(()))  # a buffer that export must carry over
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, on: bool) -> None:
        self.grad_checkpointing = on

    def forward(self, x):  # (B, 4) -> (B, 1)
        self.calls += 1
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = h + torch.tanh(block(self.drop(h)))
        return self.out(h)


class ToyTask:
    """Regression on seeded random data. Every RNG the trainer must restore is used: the loss
    generator (input noise), torch's global RNG (dropout), numpy and python (loss weights)."""

    name = "toy"
    exact = False  # ToyTaskExact: no randomness, so 1 process x 2B equals 2 processes x B
    stop_at = 0  # send SIGTERM to this process while drawing the first batch of this step (1-based)
    stop_rank = 0
    built: list = []

    def __init__(self, model_cfg, train_cfg):
        self.tc = train_cfg
        ToyTask.built = []  # shared by the subclasses: the models of the latest run

    def build_model(self):
        model = ToyNet(0.0 if self.exact else 0.2)
        ToyTask.built.append(model)
        return model

    def batches(self, *, seed, rank, world_size, start_step):
        i = start_step
        while True:
            if self.stop_at and i == (self.stop_at - 1) * self.tc.accum and rank == self.stop_rank:
                os.kill(os.getpid(), signal.SIGTERM)
            # The global batch of step i is fixed; each rank takes its slice of it.
            g = torch.Generator().manual_seed(seed * 100_003 + i)
            x = torch.randn(self.tc.batch_size * world_size, 4, generator=g)  # (B_global, 4)
            y = torch.sin(x @ W_TRUE)  # (B_global, 1)
            n = self.tc.batch_size
            yield {"x": x[rank * n:(rank + 1) * n], "y": y[rank * n:(rank + 1) * n]}
            i += 1

    def loss(self, model, batch, generator):
        x = batch["x"]
        if not self.exact:
            x = x + 0.05 * torch.randn(x.shape, generator=generator, device=generator.device)
        err = (model(x) - batch["y"]) ** 2
        weight = 1.0 if self.exact else float(np.random.uniform(0.9, 1.1) * random.uniform(0.9, 1.1))
        loss = err.mean() * weight
        return loss, {"mse": float(err.mean().detach()), "tokens": float(x.numel())}

    def export(self, model, out_dir):
        state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(Path(out_dir) / "toy.safetensors"))

    def evaluate(self, model, step, out_dir):
        noise = torch.randn(8, 4)  # global RNG on purpose: the trainer must isolate it
        np.random.rand(3)
        random.random()
        (Path(out_dir) / f"eval_{step:04d}.txt").write_text("ok\n")
        return {"score": float(model(noise).abs().mean())}


class ToyTaskExact(ToyTask):
    exact = True


class ToyStop6(ToyTask):
    stop_at = 6


class ToyPause(ToyTask):
    """Stops its own process for 2 s (SIGSTOP, then SIGCONT from a helper) before step 4's batch."""

    def batches(self, **kw):
        for i, batch in enumerate(super().batches(**kw)):
            if i == 3 * self.tc.accum:
                pid = os.getpid()  # the shell returns once the STOP is sent; the kernel stops us before we run on
                subprocess.run(["sh", "-c", f"(sleep 2; kill -CONT {pid}) & kill -STOP {pid}"], check=True)
            yield batch


@dataclass
class ToyOptions:
    init: str = ""  # read by nothing here; the trainer records a packed model named by it


class ToyTaskInit(ToyTask):
    def __init__(self, model_cfg, train_cfg, cfg: ToyOptions | None = None):
        super().__init__(model_cfg, train_cfg)
        self.cfg = cfg or ToyOptions()


def _cfg(run_dir, task="test_trainer:ToyTask", resume=False, **train):
    tc = dict(steps=12, batch_size=8, lr=1e-2, warmup=3, log_every=1, save_every=5, keep=2, eval_every=4,
              progress=False, ema=0.9)
    tc.update(train)
    return RunConfig(task=task, model=ModelConfig(), train=TrainConfig(**tc), run_dir=str(run_dir), resume=resume)


def _losses(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
    # Two micro-batches per step: the data position is step * accum batches.
    full = main(_cfg(tmp_path / "full", accum=2, batch_size=4))
    assert not full["stopped"] and full["step"] == 12

    # SIGTERM while step 6 runs: that step finishes, a checkpoint is written, main returns.
    first = main(_cfg(tmp_path / "split", task="test_trainer:ToyStop6", accum=2, batch_size=4))
    assert first["stopped"] and first["step"] == 6
    assert checkpoint.list_checkpoints(tmp_path / "split" / "checkpoints")[-1][0] == 6
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    second = main(_cfg(tmp_path / "split", resume=True, accum=2, batch_size=4))
    assert second["step"] == 12 and not second["stopped"]

    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    np.testing.assert_allclose([b[s] for s in range(1, 13)], [a[s] for s in range(1, 13)], rtol=1e-6, atol=0)
    assert a[12] < a[1]  # it learns

    # Same final checkpoint (model, EMA, optimiser) and the same exported weights.
    ca = torch.load(checkpoint.checkpoint_path(tmp_path / "full/checkpoints", 12), weights_only=True)
    cb = torch.load(checkpoint.checkpoint_path(tmp_path / "split/checkpoints", 12), weights_only=True)
    for part in ("model", "ema"):
        for k in ca[part]:
            torch.testing.assert_close(cb[part][k], ca[part][k], rtol=1e-6, atol=1e-7)
    for k, v in ca["optimizer"]["state"].items():
        torch.testing.assert_close(cb["optimizer"]["state"][k]["exp_avg_sq"], v["exp_avg_sq"], rtol=1e-6, atol=1e-9)
    wa = load_file(str(tmp_path / "full/model/toy.safetensors"))
    wb = load_file(str(tmp_path / "split/model/toy.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # Keep-last-N and no temp files; eval ran at 4, 8, 12 in both.
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "split/checkpoints")] == [10, 12]
    assert not list((tmp_path / "split/checkpoints").glob(".*"))
    assert sorted(p.name for p in (tmp_path / "split/samples").iterdir()) == ["eval_0004.txt", "eval_0008.txt", "eval_0012.txt"]


def test_time_stopped_by_sigstop_is_not_training_time(tmp_path):
    started = time.perf_counter()
    main(_cfg(tmp_path / "run", task="test_trainer:ToyPause", steps=6, eval_every=0))
    wall = time.perf_counter() - started
    assert wall > 2.0  # it was stopped
    train_seconds = json.loads((tmp_path / "run" / "summary.json").read_text())["train_seconds"]
    assert train_seconds < 1.0  # the card's wall time leaves the 2 s stop out (6 toy steps take milliseconds)
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())}
    assert rows[4]["steps_per_s"] > 2.0  # so does the throughput of the step it landed in (0.5 with it)
    assert signal.getsignal(signal.SIGCONT) is signal.SIG_DFL


def test_run_folder_contents_and_export(tmp_path):
    run = tmp_path / "run"
    out = main(_cfg(run, steps=4, save_every=100, eval_every=0, grad_checkpointing=True))
    assert ToyTask.built[0].grad_checkpointing  # the switch reached the model
    assert json.loads((run / "model/config.json").read_text()) == json.loads(json.dumps(to_dict(ModelConfig())))
    assert list((run / "tb").iterdir()), "TensorBoard events written"
    assert (run / "samples/eval_0004.txt").exists()  # eval_every=0: evaluated once, at the end
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert rows[-1]["tokens_per_s"] > 0 and rows[-1]["items_per_s"] > 0 and "mse" in rows[-1]
    # Exported weights are the EMA parameters (fp16) and the live buffers.
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    exported = load_file(str(run / "model/toy.safetensors"))
    for name, value in ckpt["ema"].items():
        torch.testing.assert_close(exported[name].float(), value, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(ckpt["ema"]["out.weight"], ckpt["model"]["out.weight"])
    assert float(exported["calls"]) == float(ckpt["model"]["calls"]) > 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_existing_run_needs_resume_and_a_finished_run_resumes_to_export(tmp_path):
    run = tmp_path / "run"
    main(_cfg(run, steps=2, eval_every=0))
    with pytest.raises(UserError) as err:
        main(_cfg(run, steps=2))
    assert err.value.param == "resume"
    (run / "model/toy.safetensors").unlink()
    again = main(_cfg(run, steps=2, resume=True))  # nothing left to train: exports again
    assert again["step"] == 2 and (run / "model/toy.safetensors").exists()


def test_resume_with_a_different_model_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    main(_cfg(run, steps=1, eval_every=0))
    ckpt = checkpoint.checkpoint_path(run / "checkpoints", 1)
    state = torch.load(ckpt, weights_only=True)
    state["model"]["inp.weight"] = torch.zeros(3, 3)
    torch.save(state, ckpt)
    with pytest.raises(UserError) as err:
        main(_cfg(run, steps=2, resume=True))
    assert err.value.param == "resume"


def test_learning_rate_warmup_then_cosine():
    tc = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr=0.1)
    assert lr_at(0, tc) == pytest.approx(0.1)
    assert lr_at(9, tc) == pytest.approx(1.0)
    assert lr_at(10, tc) == pytest.approx(1.0)
    assert lr_at(55, tc) == pytest.approx(0.55)  # halfway through the decay
    assert lr_at(100, tc) == pytest.approx(0.1)
    lrs = [lr_at(s, tc) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_unknown_or_missing_task_is_a_clear_error():
    with pytest.raises(UserError) as err:
        load_task("gan", ModelConfig(), TrainConfig())
    assert err.value.param == "task"
    with pytest.raises(UserError, match="lacks"):
        load_task("worldreel.train.no_such_task:Task", ModelConfig(), TrainConfig())


class ToyStop3Exact(ToyTaskExact):
    stop_at = 3


def test_cli_set_keys_map_to_the_preset_and_the_task():
    from worldreel.cli.train import _parse_sets

    overrides, options = _parse_sets("dit", ["train.lr=1e-3", "model.dit.depth=2", "task.p_first=0.3", "train_vae.steps=5"])
    assert overrides == ["train_dit.lr=1e-3", "model.dit.depth=2", "train_vae.steps=5"] and options == ["p_first=0.3"]
    with pytest.raises(UserError) as err:
        _parse_sets("dit", ["lr=1e-3"])
    assert err.value.param == "set"


def test_a_run_records_its_stage_after_the_stages_of_the_model_it_started_from(tmp_path):
    """The export writes model/training.json: the stages of the model task.init named, as they
    were when the run started (the model may be replaced under its name), then the run's own."""
    from worldreel.model_folder import StageRecord, read_stages, write_stages

    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "config.json").write_text("{}")
    write_stages(packed, [StageRecord(part="toy", run="runs/old-stage", steps=7)])
    run = tmp_path / "run"
    cfg = _cfg(run, task="test_trainer:ToyTaskInit", steps=2, eval_every=0)
    cfg.task_options = [f"init={packed}"]
    main(cfg)
    stages = read_stages(run / "model")
    assert [s.run for s in stages] == ["runs/old-stage", str(run)] and stages[0].steps == 7
    own = stages[-1]
    assert own.part == "toy" and own.steps == 2 and own.batch_size == cfg.train.batch_size and own.finished
    assert own.command == f"worldreel train toy --preset {cfg.model.name} --steps 2 --set task.init={packed} --out {run}"
    write_stages(packed, [StageRecord(part="toy", run="runs/new-stage")])
    cfg = _cfg(run, task="test_trainer:ToyTaskInit", steps=3, eval_every=0, resume=True)
    cfg.task_options = [f"init={packed}"]
    main(cfg)
    assert [(s.run, s.steps) for s in read_stages(run / "model")] == [("runs/old-stage", 7), (str(run), 3)]
