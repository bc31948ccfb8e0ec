"""Two CPU processes under torchrun (gloo): DDP, a stop on one rank, resume under FSDP.

The test launches this very file as the torchrun worker script (the ``__main__`` block):

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_distributed.py RUN PARALLEL TASK RESUME

Both legs accumulate gradients over 2 micro-batches (DDP's no_sync, FSDP's deferred
reduce-scatter). Leg 1 (DDP) gets SIGTERM on rank 0 while step 3 runs: both ranks must stop after the same
step, one checkpoint must be written by rank 0 only, and both ranks must hold the same
weights. Leg 2 resumes that checkpoint under FSDP (sharded weights) to step 6. Because the
toy data is a fixed global batch split across ranks, one process with the whole batch must
reach the same weights: that checks DDP's and FSDP's gradient averaging and the resume
across parallelism modes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

STEPS, BATCH, ACCUM = 6, 2, 2  # per rank and micro-batch; the one-process reference uses 2 * BATCH


def _config(run_dir, task, resume, batch, parallel="ddp"):
    from worldreel.presets import ModelConfig
    from worldreel.train.config import TrainConfig
    from worldreel.train.trainer import RunConfig

    tc = TrainConfig(steps=STEPS, batch_size=batch, accum=ACCUM, lr=1e-2, warmup=2, log_every=1, save_every=100, keep=3,
                     progress=False, ema=0.9, parallel=parallel,
                     precision="fp32")  # exactness across process counts: fp32 (auto is bf16 on AMX CPUs)
    return RunConfig(task=task, model=ModelConfig(), train=tc, run_dir=str(run_dir), resume=resume)


def _worker(run_dir: str, parallel: str, task: str, resume: str) -> None:
    """One torchrun process: train, then record what this rank saw and holds."""
    import test_trainer
    from worldreel.train import checkpoint
    from worldreel.train.trainer import main

    rank = int(os.environ["RANK"])
    writes = []
    original = checkpoint.save
    checkpoint.save = lambda *a, **k: writes.append(a[2]) or original(*a, **k)  # record who writes
    result = main(_config(run_dir, task, resume == "resume", BATCH, parallel))
    model = test_trainer.ToyTask.built[0]
    params = {k: v.tolist() for k, v in model.state_dict().items()} if parallel == "ddp" else {}
    Path(run_dir, f"rank{rank}.json").write_text(json.dumps({"result": result, "writes": writes, "params": params}))


def _torchrun(tmp_path, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__)), str(tmp_path / "run"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    return done, ranks


def test_two_process_ddp_stop_then_fsdp_resume_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    from worldreel.train import checkpoint
    from worldreel.train.trainer import main

    # Leg 1: DDP, SIGTERM on rank 0 during step 3 -> both ranks save at 3 and exit 0.
    done, ranks = _torchrun(tmp_path, "ddp", "test_trainer:ToyStop3Exact", "fresh")
    assert "--resume" in done.stderr
    assert [r["result"]["step"] for r in ranks] == [3, 3] and all(r["result"]["stopped"] for r in ranks)
    assert ranks[0]["writes"] == [3] and ranks[1]["writes"] == []  # written once, by rank 0
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "run/checkpoints")] == [3]
    assert not list((tmp_path / "run/checkpoints").glob(".*"))
    assert ranks[0]["params"] == ranks[1]["params"]  # DDP kept the replicas identical
    saved = torch.load(checkpoint.checkpoint_path(tmp_path / "run/checkpoints", 3), weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    torch.testing.assert_close(saved["model"]["out.weight"], torch.tensor(ranks[1]["params"]["out.weight"]))

    # Leg 2: resume under FSDP (sharded parameters) to the end.
    _, ranks = _torchrun(tmp_path, "fsdp", "test_trainer:ToyTaskExact", "resume")
    assert [r["result"]["step"] for r in ranks] == [STEPS, STEPS]
    assert ranks[0]["writes"] == [STEPS] and ranks[1]["writes"] == []

    # One process, the whole global batch: the same run.
    ref = main(_config(tmp_path / "ref", "test_trainer:ToyTaskExact", False, 2 * BATCH))
    two = torch.load(checkpoint.checkpoint_path(tmp_path / "run/checkpoints", STEPS), weights_only=True)
    one = torch.load(ref["checkpoint"], weights_only=True)
    for part in ("model", "ema"):
        for k, v in one[part].items():
            torch.testing.assert_close(two[part][k], v, rtol=1e-4, atol=1e-5)
    exported = load_file(str(tmp_path / "run/model/toy.safetensors"))
    torch.testing.assert_close(exported["out.weight"].float(), one["ema"]["out.weight"], rtol=2e-3, atol=2e-3)


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
