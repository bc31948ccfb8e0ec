"""Checkpoint files: atomic under crashes (even SIGKILL), last N kept, damaged newest skipped, RNG round trip."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from worldreel.train import checkpoint


def _state(step):
    return {"step": step, "model": {"w": torch.full((4, 4), float(step))}, "rng": [{"python": {"state": [1, 2]}}]}


def test_keep_last_n_and_ignore_temp_files(tmp_path):
    for step in (5, 10, 15, 20, 25):
        checkpoint.save(_state(step), tmp_path, step, keep=3)
    (tmp_path / ".step_00000030.pt.999.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [15, 20, 25]
    state, path = checkpoint.load_latest(tmp_path)
    assert state["step"] == 25 and path.name == "step_00000025.pt"
    checkpoint.clean_temp(tmp_path)
    assert not list(tmp_path.glob(".*"))
    assert checkpoint.load_latest(tmp_path / "missing") is None


def test_a_failed_write_leaves_no_file_and_keeps_the_old_ones(tmp_path, monkeypatch):
    checkpoint.save(_state(1), tmp_path, 1, keep=1)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(_state(2), tmp_path, 2, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001.pt"]  # old one kept: pruning comes after
    assert checkpoint.load_latest(tmp_path)[0]["step"] == 1


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    checkpoint.save(_state(1), tmp_path, 1, keep=3)
    checkpoint.checkpoint_path(tmp_path, 2).write_bytes(b"garbage, not a zip")
    state, path = checkpoint.load_latest(tmp_path)
    assert state["step"] == 1 and "cannot read checkpoint" in capsys.readouterr().err


_WRITER = """
import sys, torch
from worldreel.train import checkpoint
folder = sys.argv[1]
big = torch.randn(2_000_000)  # 8 MB per checkpoint: slow enough to be killed mid-write
step = 0
while True:
    step += 1
    checkpoint.save({"step": step, "model": {"w": big + step}}, folder, step, keep=2)
"""


def test_sigkill_mid_write_never_leaves_a_damaged_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not checkpoint.list_checkpoints(tmp_path) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    found = checkpoint.list_checkpoints(tmp_path)
    # keep=2, plus one when the kill lands between a new file's rename and the pruning of the oldest
    assert found and len(found) <= 3
    for step, path in found:  # every file under a real name is complete
        state = torch.load(path, weights_only=True)
        assert state["step"] == step and float(state["model"]["w"][0] - state["model"]["w"][1]) != 0
    checkpoint.clean_temp(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {p.name for _, p in found}


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen)
    saved = checkpoint.rng_state(gen)
    draw = lambda: (torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random(),
                    torch.randn(4, generator=gen).tolist(), float(np.random.randn()))
    expected = draw()
    torch.save({"rng": saved}, tmp_path / "r.pt")
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]  # plain data only
    torch.manual_seed(99), np.random.seed(99), random.seed(99), gen.manual_seed(99)
    checkpoint.set_rng_state(loaded, gen)
    assert draw() == expected
