"""Steering by the world's state: the probe, the objective, the sampler wrapper, the generator,
``train probe`` and ``train pack --probe``."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from worldreel.data.captions import parse_caption
from worldreel.data.facts import COLORS
from worldreel.diffusion import flow, samplers
from worldreel.diffusion.steer import StateProbe, objective, steer_wrapper, targets
from worldreel.errors import UserError
from worldreel.pipelines.generate import Generator, check_steer

FAST = dict(steps=4, size="32x32", seconds=1)  # 9 frames: 3 latent frames
RED, BLUE = COLORS.index("red"), COLORS.index("blue")


def _blob(f=5, h=8, w=8, cols=None, rows=None, colour=RED):
    """Occupancies (1, K, f, h, w) with one cell of ``colour`` per frame at (rows[k], cols[k])."""
    occ = torch.zeros(1, len(COLORS), f, h, w)
    for k in range(f):
        occ[0, colour, k, (rows or [4] * f)[k], (cols or [4] * f)[k]] = 1.0
    return occ


def test_targets_read_each_stated_colour_and_skip_a_colour_stated_two_ways():
    def every(caption):
        return targets(parse_caption(caption), every_verb=True)

    got = every("a red ball rolls to the right and a blue box slides to the left")
    assert sorted(got) == sorted([(RED, "rolls", 1.0), (BLUE, "rolls", -1.0)])
    assert every("a red ball falls") == [(RED, "falls", 0.0)]
    assert every("a green box is thrown to the left") == [(COLORS.index("green"), "thrown", -1.0)]
    assert every("a red ball rolls to the left and a red box falls") == []  # one centroid, two motions
    assert every("two blue balls rest on the floor") == [(BLUE, "rests", 0.0)]  # the same ask twice
    # Under a pan a resting object crosses the screen: only its height is kept.
    orange = COLORS.index("orange")
    assert every("an orange ball rests; the camera pans right") == [(orange, "rests_panned", 0.0)]


def test_by_default_only_the_movers_sides_are_steered():
    green = COLORS.index("green")
    assert targets(parse_caption("a green box is thrown to the left and a red ball falls")) == [(green, "rolls", -1.0)]
    assert targets(parse_caption("a blue ball rolls to the right; the camera pans left")) == [(BLUE, "rolls", 1.0)]
    assert targets(parse_caption("a red ball falls and a blue box rests")) == []


def test_the_objective_rewards_what_the_caption_states():
    right = _blob(cols=[1, 2, 3, 4, 5])
    assert objective(right, [(RED, "rolls", 1.0)]).item() > 0 > objective(right, [(RED, "rolls", -1.0)]).item()
    down = _blob(rows=[1, 2, 3, 4, 5])  # y grows downwards
    assert objective(down, [(RED, "falls", 0.0)]).item() > 0
    still = _blob()
    assert objective(still, [(RED, "rests", 0.0)]).item() == 0 > objective(right, [(RED, "rests", 0.0)]).item()
    arc = _blob(rows=[5, 2, 3, 4, 6], cols=[1, 2, 3, 4, 5])  # up first, then down, to the right
    flat = _blob(rows=[5, 5, 5, 5, 5], cols=[1, 2, 3, 4, 5])
    assert objective(arc, [(RED, "thrown", 1.0)]).item() > objective(flat, [(RED, "thrown", 1.0)]).item()
    assert objective(right, [(BLUE, "rolls", 1.0)]).item() == 0  # no blue anywhere: nothing to reward
    assert objective(right, [(RED, "rests_panned", 0.0)]).item() == 0  # sideways under a pan: still resting


def test_a_frame_where_the_object_is_not_seen_asks_nothing():
    """A plain centroid pushes hardest where the object is faint (a trace of colour moves it
    most), which draws ghosts; each frame's term is weighted by how much of the colour is there."""
    occ = _blob(cols=[1, 2, 3, 4, 5])
    occ[0, RED, 2] = 0.0  # hidden in frame 2 (behind the pillar)
    occ[0, RED, 3, 0, 7] = 0.01  # and a faint trace at the far right of frame 3
    occ.requires_grad_(True)
    gain = objective(occ, [(RED, "rolls", 1.0)])
    (grad,) = torch.autograd.grad(gain.sum(), occ)
    assert torch.isfinite(grad).all() and grad[0, RED, 2].abs().max() == 0
    whole = grad[0, RED, 4].abs().max()
    assert grad[0, RED, 3].abs().max() < 2 * whole  # the faint frame is not pushed hardest


class _ChannelProbe(nn.Module):
    """Red's occupancy is latent channel 0 (sigmoid(6 x - 3)); every other colour is absent."""

    def forward(self, x0):
        logits = torch.full((x0.shape[0], len(COLORS), *x0.shape[2:]), -10.0)
        logits[:, RED] = 6 * x0[:, 0] - 3
        return logits


def _centres(x):
    occ = torch.sigmoid(6 * x[0, 0] - 3)  # (f, h, w)
    cols = occ.sum(1)  # (f, w)
    return ((cols * torch.arange(cols.shape[1])).sum(1) / cols.sum(1)).tolist()


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_steering_moves_a_still_object_its_stated_way(side):
    """A model that predicts x itself as the clean clip (v = 0) leaves the blob where it is;
    steered, the later frames' blob moves the stated side of where frame 0's is."""
    x = torch.zeros(1, 16, 4, 8, 8)
    x[0, 0, :, 4, 3:5] = 1.0  # a red blob in the middle of every frame
    ts = flow.timesteps(6, 1.0)
    still = lambda x, t: torch.zeros_like(x)  # noqa: E731
    plain = samplers.sample_euler(still, x.clone(), ts)
    assert torch.equal(plain, x)
    steered = samplers.sample_euler(steer_wrapper(still, _ChannelProbe(), [(RED, "rolls", side)], 2.0), x.clone(), ts)
    centres = _centres(steered)
    assert all(side * (c - centres[0]) > 0.05 for c in centres[1:]), centres
    # Below the steering threshold (t < 0.5) nothing changes: the last steps keep what they got.
    late = flow.timesteps(6, 1.0)[4:]
    assert float(late[0]) < 0.5
    assert torch.equal(samplers.sample_euler(steer_wrapper(still, _ChannelProbe(), [(RED, "rolls", side)], 2.0),
                                             x.clone(), late), x)


def test_nothing_to_steer_is_the_same_function():
    fn = lambda x, t: x  # noqa: E731
    assert steer_wrapper(fn, _ChannelProbe(), [], 3.0) is fn
    assert steer_wrapper(fn, _ChannelProbe(), [(RED, "rolls", 1.0)], 0.0) is fn


@pytest.mark.parametrize("value", [-1, 21, "x", True, float("nan"), None])
def test_bad_steer_names_the_parameter(value):
    with pytest.raises(UserError) as err:
        check_steer(value)
    assert err.value.param == "steer"


# ----------------------------------------------------------------------------- the generator


def test_generate_steers_with_the_probe_and_records_it(probed_gen):
    plain = probed_gen.generate("a red ball rolls to the right", seed=2, **FAST)
    off = probed_gen.generate("a red ball rolls to the right", seed=2, steer=0, **FAST)
    steered = probed_gen.generate("a red ball rolls to the right", seed=2, steer=3, **FAST)
    assert np.array_equal(plain.frames, off.frames) and "steer" not in plain.sampling
    assert steered.sampling["steer"] == 3 and not np.array_equal(plain.frames, steered.frames)


def test_the_caption_blind_twin_of_bench_predict_keeps_the_probe(probed_gen):
    """bench predict's no-caption continuation shares the model, probe included: a model that
    steers by default must not fail there (its empty prompt states nothing, so nothing is steered)."""
    from dataclasses import replace

    from worldreel.eval.predict import NO_CAPTION_PROMPT, caption_blind

    probed_gen.sampling = replace(probed_gen.sampling, steer=3.0)
    try:
        blind = caption_blind(probed_gen)
        assert blind.probe is probed_gen.probe and blind.precision == probed_gen.precision
        given = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
        video = blind.extend(given, NO_CAPTION_PROMPT, guidance=1.0, seconds=1, steps=2, rewrite=False)
        assert np.array_equal(video.frames[:9], given)
    finally:
        probed_gen.sampling = replace(probed_gen.sampling, steer=0.0)


def test_an_edit_does_not_steer(probed_gen):
    source = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    plain = probed_gen.edit(source, "a red ball rolls to the right", strength=0.6, seed=3, steps=4)
    steered = probed_gen.edit(source, "a red ball rolls to the right", strength=0.6, seed=3, steps=4, steer=3)
    assert np.array_equal(plain.frames, steered.frames) and "steer" not in steered.sampling


def test_steer_without_a_probe_is_a_clear_error(tiny_model, tiny_folder, tmp_path, capsys):
    from worldreel.cli import main

    gen = Generator.load(tiny_model)
    assert gen.probe is None
    with pytest.raises(UserError) as err:
        gen.generate("a red ball falls", steer=2, **FAST)
    assert err.value.param == "steer" and "probe" in err.value.message
    out = tmp_path / "x.mp4"
    assert main(["generate", "a red ball falls", "--model", tiny_model, "--size", "32x32", "--steps", "1",
                 "--seed", "1", "--steer", "2", "--out", str(out)]) == 2
    assert "steer" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------- train probe, pack --probe


def _toy_encode(video):
    """(B, 3, F, H, W) -> (B, 16, f, H/8, W/8): cell means, a stand-in for the autoencoder."""
    first = torch.nn.functional.avg_pool3d(video[:, :, :1], (1, 8, 8))
    rest = torch.nn.functional.avg_pool3d(video[:, :, 1:], (4, 8, 8))
    z = torch.cat([first, rest], dim=2)
    return torch.cat([z] * 5 + [z[:, :1]], dim=1)


def _toy_text(prompts):
    g = torch.Generator().manual_seed(len(prompts))
    return torch.randn(len(prompts), 3, 384, generator=g), torch.ones(len(prompts), 3, dtype=torch.bool)


@pytest.fixture(scope="module")
def probe_file(tiny_model, tmp_path_factory):
    """A probe trained for 20 steps against the tiny model on a toy reel-world cache, and what training said."""
    from worldreel.data.latents import WorldItems, build_cache
    from worldreel.model_folder import read_config_data
    from worldreel.train.probe import train_probe

    root = tmp_path_factory.mktemp("probe")
    cache = root / "cache"
    build_cache(cache, WorldItems(8, sizes=[(64, 64)], seconds=[4.0], seed=5), count=8, encode_video=_toy_encode,
                encode_text=_toy_text, progress=False,
                meta={"vae": read_config_data(tiny_model)["vae"], "sizes": [[64, 64]], "seconds": [4.0],
                      "source": "world", "seed": 5, "command": "toy"})
    out = root / "probe.safetensors"
    result = train_probe(tiny_model, str(cache), str(out), steps=20, batch_size=2,
                         command="worldreel train probe --model M --out X")
    return out, result, cache


def test_train_probe_learns_and_records_what_it_read(probe_file, tiny_model):
    from worldreel.model_folder import load_probe, probe_info, weights_digest

    out, result, cache = probe_file
    assert result["held_after"] < result["held_before"]
    meta = probe_info(out)
    assert meta["dit"] == weights_digest(tiny_model)["dit"] and meta["data"] == str(cache) and meta["steps"] == "20"
    probe = load_probe(out)
    assert isinstance(probe, StateProbe) and not any(p.requires_grad for p in probe.parameters())


def test_train_probe_bad_inputs_name_the_parameter(tiny_model, probe_file, tmp_path):
    from worldreel.train.probe import train_probe

    _, _, cache = probe_file
    for kwargs, param in ((dict(out=str(tmp_path / "p.pt")), "out"), (dict(steps=0), "steps"),
                          (dict(data=str(tmp_path)), "data"), (dict(batch_size=1), "batch_size")):
        args = {**dict(model=tiny_model, data=str(cache), out=str(tmp_path / "p.safetensors")), **kwargs}
        with pytest.raises(UserError) as err:
            train_probe(args.pop("model"), args.pop("data"), args.pop("out"), **args)
        assert err.value.param == param, kwargs
    assert not (tmp_path / "p.safetensors").exists()


def test_pack_takes_a_probe_for_its_denoiser_and_steers_by_default(probe_file, tiny_model, tiny_folder, tmp_path):
    from worldreel.model_folder import PROBE_FILE, load_model, weights_digest
    from worldreel.train.pack import pack_model

    out_probe, _, _ = probe_file
    folder = pack_model(tiny_model, tiny_model, tmp_path / "m", probe=out_probe, sampling=["steer=2"])
    assert (folder / PROBE_FILE).read_bytes() == out_probe.read_bytes()
    assert weights_digest(folder)["probe"]
    loaded = load_model(str(folder))
    assert loaded.probe is not None and loaded.config.sampling.steer == 2
    card = (folder / "README.md").read_text()
    assert "| state probe |" in card and "steer 2 (movers pushed their stated side" in card
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    # the rebuild: a first pack without steering, the probe reading it, the pack with the probe
    assert commands[-3].endswith("--out OUT") and "steer" not in commands[-3]
    assert commands[-2] == "worldreel train probe --model OUT --out X"
    assert "--probe X --out OUT" in commands[-1] and commands[-1].endswith("--sampling steer=2.0")
    video = Generator.load(str(folder)).generate("a red ball rolls to the left", seed=1, **FAST)
    assert video.sampling["steer"] == 2
    # The probe read another denoiser: refused. Steering without a probe: refused.
    other = tiny_folder("other", seed=9)
    with pytest.raises(UserError) as err:
        pack_model(other, other, tmp_path / "o", probe=out_probe)
    assert err.value.param == "probe" and "trained against" in err.value.message
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "n", sampling=["steer=2"])
    assert err.value.param == "probe"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a probe")
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "b", probe=bad)
    assert err.value.param == "probe"
    # Packing again without the probe leaves none behind.
    again = pack_model(folder, folder, tmp_path / "again", sampling=["steer=0"])
    assert not (again / PROBE_FILE).exists() and load_model(str(again)).probe is None


def test_a_bench_measured_with_another_probe_is_refused(probe_file, tiny_model, tmp_path):
    from worldreel.model_folder import weights_digest
    from worldreel.train.pack import pack_model

    out_probe, _, _ = probe_file
    digests = {**weights_digest(tiny_model), "probe": "0123456789ab"}
    used = {"sampler": "euler", "steps": 20, "guidance": 4.0, "shift": 1.0, "guidance_mode": "cfg", "steer": 2}
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": used, "weights": digests}}))
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "m", probe=out_probe, sampling=["steer=2"], bench=bench)
    assert err.value.param == "bench"
    from worldreel.model_folder import file_digest

    bench.write_text(json.dumps({"n_videos": 1, "mean_score": 0.5, "source": {"sampling": used, "weights": {
        **weights_digest(tiny_model), "probe": file_digest(out_probe)}}}))
    pack_model(tiny_model, tiny_model, tmp_path / "ok", probe=out_probe, sampling=["steer=2"], bench=bench)


# --------------------------------------------------- finalists (sampling best_of, then made to the end)


def test_pack_sets_finalists_the_card_says_it_and_the_rebuild_packs_first_without_them(probe_file, tiny_model,
                                                                                       tmp_path):
    from worldreel.model_folder import load_model
    from worldreel.train.pack import pack_model

    out_probe, _, _ = probe_file
    folder = pack_model(tiny_model, tiny_model, tmp_path / "m", probe=out_probe,
                        sampling=["best_of=4", "finalists=2"])
    assert load_model(str(folder)).config.sampling.finalists == 2
    card = (folder / "README.md").read_text()
    assert "best of 4 (start noises, picked by the state probe; the best 2 made to the end and read again)" in card
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    assert "best_of" not in commands[-3] and "finalists" not in commands[-3]
    assert commands[-1].endswith("--sampling best_of=4 --sampling finalists=2")
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "b", probe=out_probe, sampling=["best_of=4", "finalists=0"])
    assert err.value.param == "sampling" and "finalists" in err.value.message


def test_the_cli_takes_finalists_and_refuses_a_bad_one_by_name(probe_file, tiny_model, tmp_path, capsys):
    from worldreel.cli import main
    from worldreel.train.pack import pack_model

    out_probe, _, _ = probe_file
    folder = pack_model(tiny_model, tiny_model, tmp_path / "m", probe=out_probe)
    out = tmp_path / "x.mp4"
    base = ["generate", "a red ball rolls to the right", "--model", str(folder), "--size", "32x32", "--seconds", "1",
            "--steps", "6", "--seed", "1", "--best-of", "3", "--out", str(out)]
    assert main(base + ["--finalists", "0"]) == 2
    assert "finalists" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--finalists", "2"]) == 0 and out.exists()
    bench = tmp_path / "b"
    assert main(["bench", "world", "--model", str(folder), "--prompts", str(_one_prompt(tmp_path)), "--size", "32x32",
                 "--seconds", "1", "--steps", "6", "--best-of", "3", "--finalists", "2", "--out", str(bench),
                 "--no-report"]) == 0
    rows = [json.loads(line) for line in (bench / "captions.jsonl").read_text().splitlines()]
    assert rows[0]["sampling"]["finalists"] == 2 and rows[0]["settings"]["finalists"] == 2


def test_pack_sets_likelihood_the_card_says_it_and_the_cli_takes_it(probe_file, tiny_model, tmp_path, capsys):
    from worldreel.cli import main
    from worldreel.model_folder import load_model
    from worldreel.train.pack import pack_model

    out_probe, _, _ = probe_file
    folder = pack_model(tiny_model, tiny_model, tmp_path / "m", probe=out_probe,
                        sampling=["best_of=4", "finalists=2", "likelihood=1.5"])
    assert load_model(str(folder)).config.sampling.likelihood == 1.5
    card = (folder / "README.md").read_text()
    assert ("the best 2 made to the end and read again, with the denoiser's own likelihood at weight 1.5)"
            in card)
    commands = [line for line in card.splitlines() if line.startswith("worldreel train")]
    assert "likelihood" not in commands[-3]  # the first pack, before the probe
    assert commands[-1].endswith("--sampling finalists=2 --sampling likelihood=1.5")
    with pytest.raises(UserError) as err:
        pack_model(tiny_model, tiny_model, tmp_path / "b", probe=out_probe, sampling=["likelihood=-1"])
    assert err.value.param == "sampling" and "likelihood" in err.value.message
    out = tmp_path / "x.mp4"
    base = ["generate", "a red ball rolls to the right", "--model", str(folder), "--size", "32x32", "--seconds", "1",
            "--steps", "6", "--seed", "1", "--out", str(out)]
    assert main(base + ["--likelihood", "nope"]) == 2 and not out.exists()
    assert main(base + ["--likelihood", "-2"]) == 2
    assert "likelihood" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--likelihood", "0.5"]) == 0 and out.exists()
    bench = tmp_path / "b"
    assert main(["bench", "world", "--model", str(folder), "--prompts", str(_one_prompt(tmp_path)), "--size", "32x32",
                 "--seconds", "1", "--steps", "6", "--likelihood", "0.5", "--out", str(bench), "--no-report"]) == 0
    rows = [json.loads(line) for line in (bench / "captions.jsonl").read_text().splitlines()]
    assert rows[0]["sampling"]["likelihood"] == 0.5 and rows[0]["settings"]["likelihood"] == 0.5


def _one_prompt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red ball rolls to the right\n")
    return path
