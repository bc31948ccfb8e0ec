"""worldreel train average: the weighted mean of denoiser weights along one training lineage."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from test_packing import _runs  # the fake training runs that train pack takes
from worldreel.errors import UserError
from worldreel.pipelines.loading import save_random_model
from worldreel.pipelines.packing import pack_model
from worldreel.train.average import average_runs, parse_weights

TINY = ["dit.width=32", "dit.depth=2", "dit.heads=2", "vae.base_channels=8"]


def _later_stage(tmp_path, parent, name, seed):
    """A denoiser run that started from ``parent``'s weights (task.init), with weights of its own."""
    run = tmp_path / name
    shutil.copytree(parent, run)
    other = save_random_model(tmp_path / f"weights-{name}", overrides=TINY, seed=seed)
    shutil.copy(other / "dit.safetensors", run / "model" / "dit.safetensors")
    cfg = json.loads((run / "run.json").read_text())
    cfg["task_options"] = [f"init={parent}/model"]
    (run / "run.json").write_text(json.dumps(cfg))
    return run


def test_average_is_the_weighted_mean_and_pack_follows_it(tmp_path):
    vae_run, first, _ = _runs(tmp_path)
    second = _later_stage(tmp_path, first, "dit-second", seed=4)
    third = _later_stage(tmp_path, second, "dit-third", seed=5)
    out = average_runs([first, third], [0.25, 0.75], tmp_path / "avg")
    a, b = load_file(str(first / "model" / "dit.safetensors")), load_file(str(third / "model" / "dit.safetensors"))
    mean = load_file(str(out / "model" / "dit.safetensors"))
    assert mean.keys() == a.keys()
    for k in a:
        assert mean[k].dtype == a[k].dtype
        torch.testing.assert_close(mean[k].float(), 0.25 * a[k].float() + 0.75 * b[k].float(), atol=2e-3, rtol=1e-3)
    assert any(not torch.equal(mean[k], b[k]) for k in a)  # not a copy of the last run
    record = json.loads((out / "run.json").read_text())
    assert record["average"]["weights"] == [0.25, 0.75] and f"init={third / 'model'}" in record["task_options"]
    assert json.loads((out / "summary.json").read_text())["steps"] == 0

    card = (pack_model(vae_run, out, tmp_path / "model") / "README.md").read_text()
    assert "| denoiser, stage 4 (weight average) | 0 | - |" in card and "| denoiser, stage 3 | 4000 | 32 |" in card
    assert f"`{first / 'model'}` x 0.25, `{third / 'model'}` x 0.75 (`worldreel train average`" in card
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "dit", "dit", "average", "pack"]
    assert commands[5] == (f"worldreel train average --run {first / 'model'} --run {third / 'model'} "
                           f"--weights 0.25,0.75 --out {out}")


def test_average_refuses_what_it_cannot_average(tmp_path):
    vae_run, first, _ = _runs(tmp_path)
    second = _later_stage(tmp_path, first, "dit-second", seed=4)
    sibling = _later_stage(tmp_path, first, "dit-sibling", seed=6)
    wide = tmp_path / "dit-wide"
    shutil.copytree(second, wide)
    cfg = json.loads((wide / "model" / "config.json").read_text())
    cfg["dit"]["width"] = 64
    (wide / "model" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "full-out").mkdir()
    (tmp_path / "full-out" / "x").write_text("keep me")
    cases = [
        (([sibling, second], [0.5, 0.5], tmp_path / "a"), "run"),  # not a stage the last started from
        (([first, wide], [0.5, 0.5], tmp_path / "b"), "run"),  # another architecture
        (([vae_run, second], [0.5, 0.5], tmp_path / "c"), "run"),  # an autoencoder
        (([second], [1.0], tmp_path / "d"), "run"),  # nothing to average
        (([first, second], [0.5, 0.5], tmp_path / "full-out"), "out"),  # would mix with what is there
    ]
    for args, param in cases:
        with pytest.raises(UserError) as err:
            average_runs(*args)
        assert err.value.param == param, args
    assert (tmp_path / "full-out" / "x").read_text() == "keep me"
    for text in ("0.5,0.6", "0.5", "a,b", "-0.5,1.5", "nan,1"):
        with pytest.raises(UserError) as err:
            parse_weights(text, 2)
        assert err.value.param == "weights", text
    assert parse_weights("0.25, 0.75", 2) == [0.25, 0.75]
    cli = subprocess.run([sys.executable, "-m", "worldreel", "train", "average", "--run", str(first), "--run", str(second),
                          "--weights", "0.3,0.3", "--out", str(tmp_path / "e")], capture_output=True, text=True)
    assert cli.returncode == 2 and "weights" in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "e").exists()


def test_a_shipped_model_by_name_is_a_stage_too(tmp_path, monkeypatch):
    """A fine-tune of a shipped model (task.init=NAME) averages with it, named as it was started."""
    import worldreel.presets

    _, first, _ = _runs(tmp_path)
    shipped = tmp_path / "weights"
    shutil.copytree(first / "model", shipped / "tiny-shipped")
    monkeypatch.setattr(worldreel.presets, "WEIGHTS_DIR", shipped)
    later = _later_stage(tmp_path, first, "dit-later", seed=4)
    cfg = json.loads((later / "run.json").read_text())
    cfg["task_options"] = ["init=tiny-shipped"]
    (later / "run.json").write_text(json.dumps(cfg))
    out = average_runs(["tiny-shipped", later], [0.5, 0.5], tmp_path / "avg")
    assert json.loads((out / "run.json").read_text())["average"]["runs"][0] == str(shipped / "tiny-shipped")
    with pytest.raises(UserError) as err:
        average_runs(["no-such-model", later], [0.5, 0.5], tmp_path / "avg2")
    assert err.value.param == "run"
