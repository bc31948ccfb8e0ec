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
from worldreel.model_folder import StageRecord, load_dit, read_stages, write_stages
from worldreel.train.average import average_runs, parse_weights
from worldreel.train.pack import pack_model


def _later_stage(tmp_path, tiny_folder, parent, name, seed, overrides=()):
    """A denoiser run that started from ``parent``'s weights (task.init), with weights of its own:
    its record lists ``parent``'s stages, then its own."""
    run = tmp_path / name
    shutil.copytree(parent, run)
    other = tiny_folder(f"weights-{name}", seed=seed, overrides=overrides)
    shutil.copy(other / "dit.safetensors", run / "model" / "dit.safetensors")
    shutil.copy(other / "config.json", run / "model" / "config.json")
    own = StageRecord(part="dit", run=str(run), steps=100, batch_size=32,
                      command=f"worldreel train dit --out {run} --set task.init={parent}/model")
    write_stages(run / "model", read_stages(parent / "model") + [own])
    return run


def test_average_is_the_weighted_mean_and_pack_follows_it(tmp_path, tiny_folder):
    vae_run, first, _ = _runs(tmp_path, tiny_folder)
    second = _later_stage(tmp_path, tiny_folder, first, "dit-second", seed=4)
    third = _later_stage(tmp_path, tiny_folder, second, "dit-third", seed=5)
    out = average_runs([first, third], [0.25, 0.75], tmp_path / "avg")
    a, b = load_file(str(first / "model" / "dit.safetensors")), load_file(str(third / "model" / "dit.safetensors"))
    mean = load_file(str(out / "model" / "dit.safetensors"))
    assert mean.keys() == a.keys()
    for k in a:
        assert mean[k].dtype == a[k].dtype
        torch.testing.assert_close(mean[k].float(), 0.25 * a[k].float() + 0.75 * b[k].float(), atol=2e-3, rtol=1e-3)
    assert any(not torch.equal(mean[k], b[k]) for k in a)  # not a copy of the last run
    stages = read_stages(out / "model")
    assert [s.run for s in stages] == [str(first), str(second), str(third), str(out)]
    assert stages[-1].kind == "weight average" and stages[-1].steps == 0

    card = (pack_model(vae_run, out, tmp_path / "model") / "README.md").read_text()
    assert "| denoiser, stage 4 (weight average) | 0 | - |" in card and "| denoiser, stage 3 | 100 | 32 |" in card
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    assert [line.split()[2] for line in commands] == ["vae", "cache", "dit", "dit", "dit", "average", "pack"]
    assert commands[5] == (f"worldreel train average --run {first / 'model'} --run {third / 'model'} "
                           f"--weights 0.25,0.75 --out {out}")
    assert f"stage 4 is a weight average, no training: `{commands[5]}`" in card
    assert f"latent cache `{tmp_path / 'cache'}`" in card  # the data of the stages averaged


def test_average_takes_the_stage_a_deeper_one_was_grown_from(tmp_path, tiny_folder):
    """Averaging a grown (deeper) stage with the shallower one it started from: weight 1 on the
    shallow one computes exactly what it did, weight 1 on the deep one what that does, and in
    between each new block's branches are scaled by the deep stage's weight."""
    vae_run, first, _ = _runs(tmp_path, tiny_folder)
    deep = _later_stage(tmp_path, tiny_folder, first, "dit-deep", seed=7, overrides=("dit.depth=3",))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 16, 3, 4, 4, generator=g), torch.rand(1, 3, generator=g)
    text, mask = torch.randn(1, 5, 384, generator=g), torch.ones(1, 5, dtype=torch.bool)

    def run(folder):
        with torch.no_grad():
            return load_dit(folder)(x, t, text, mask)

    only_first = average_runs([first, deep], [1.0, 0.0], tmp_path / "a")
    assert json.loads((only_first / "model" / "config.json").read_text())["dit"]["depth"] == 3
    torch.testing.assert_close(run(only_first / "model"), run(first / "model"), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(run(average_runs([first, deep], [0.0, 1.0], tmp_path / "b") / "model"),
                               run(deep / "model"), atol=2e-3, rtol=2e-3)
    half = load_file(str(average_runs([first, deep], [0.5, 0.5], tmp_path / "c") / "model" / "dit.safetensors"))
    a, b = load_file(str(first / "model" / "dit.safetensors")), load_file(str(deep / "model" / "dit.safetensors"))
    # depth 2 -> 3: old blocks at 0 and 1, the new block at 2.
    torch.testing.assert_close(half["blocks.2.ada.1.weight"][64:96].float(), 0.5 * b["blocks.2.ada.1.weight"][64:96].float())
    torch.testing.assert_close(half["blocks.2.attn.qkv.weight"], b["blocks.2.attn.qkv.weight"])
    torch.testing.assert_close(half["blocks.1.attn.qkv.weight"].float(),
                               0.5 * (a["blocks.1.attn.qkv.weight"].float() + b["blocks.1.attn.qkv.weight"].float()),
                               atol=2e-3, rtol=1e-3)


def test_average_refuses_what_it_cannot_average(tmp_path, tiny_folder):
    vae_run, first, _ = _runs(tmp_path, tiny_folder)
    second = _later_stage(tmp_path, tiny_folder, first, "dit-second", seed=4)
    sibling = _later_stage(tmp_path, tiny_folder, first, "dit-sibling", seed=6)
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


def test_a_shipped_model_by_name_is_a_stage_too(tmp_path, monkeypatch, tiny_folder):
    """A fine-tune of a shipped model (task.init=NAME) averages with it, named as it was started."""
    import worldreel.model_folder

    _, first, _ = _runs(tmp_path, tiny_folder)
    shipped = tmp_path / "weights"
    shutil.copytree(first / "model", shipped / "tiny-shipped")
    monkeypatch.setattr(worldreel.model_folder, "WEIGHTS_DIR", shipped)
    later = _later_stage(tmp_path, tiny_folder, first, "dit-later", seed=4)
    out = average_runs(["tiny-shipped", later], [0.5, 0.5], tmp_path / "avg")
    assert f"--run {shipped / 'tiny-shipped'} --run {later / 'model'}" in read_stages(out / "model")[-1].command
    with pytest.raises(UserError) as err:
        average_runs(["no-such-model", later], [0.5, 0.5], tmp_path / "avg2")
    assert err.value.param == "run"
