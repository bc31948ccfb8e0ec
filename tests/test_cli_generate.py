"""Every generation command end to end on a tiny random model, through ``worldreel.cli.main``."""
import json

import numpy as np
import pytest

from worldreel.cli import main

@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _fast(model, seed="3"):
    return ["--model", model, "--size", "32x32", "--steps", "1", "--seed", seed]


@pytest.fixture
def image(tmp_path):
    from worldreel.data.video_io import write_image

    frame = np.zeros((32, 32, 3), np.uint8)  # the reel world's look: flat sky, floor, a red box
    frame[:] = (16, 18, 32)
    frame[28:] = (96, 96, 96)
    frame[12:20, 8:16] = (230, 40, 40)
    path = tmp_path / "first.png"
    write_image(path, frame)
    return path, frame


@pytest.fixture
def clip(tmp_path, model):
    path = tmp_path / "clip.mp4"
    assert main(["generate", "a red ball rolls right", "--seconds", "1", "--out", str(path), *_fast(model)]) == 0
    return path


def _read(path):
    from worldreel.data.video_io import read_image, read_video

    return read_image(path)[None] if path.suffix == ".png" else read_video(path)[0]


def test_generate_video_gif_and_stills(tmp_path, model, capsys):
    out = tmp_path / "a.mp4"
    assert main(["generate", "a red ball falls", "--seconds", "1", "--out", str(out), *_fast(model)]) == 0
    assert _read(out).shape == (9, 32, 32, 3)
    assert "wrote" in capsys.readouterr().out
    gif = tmp_path / "a.gif"
    assert main(["generate", "a red ball falls", "--seconds", "0.5", "--out", str(gif), *_fast(model)]) == 0
    assert gif.stat().st_size > 0
    png = tmp_path / "still.png"
    assert main(["generate", "a red ball falls", "--out", str(png), *_fast(model)]) == 0
    assert _read(png).shape == (1, 32, 32, 3)
    zero = tmp_path / "zero.mp4"
    assert main(["generate", "a red ball falls", "--seconds", "0", "--out", str(zero), *_fast(model)]) == 0
    assert len(_read(zero)) == 1


def test_same_seed_same_video(tmp_path, model):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for path, seed in ((a, "5"), (b, "5"), (c, "6")):
        assert main(["generate", "a blue box rests", "--out", str(path), *_fast(model, seed)]) == 0
    assert np.array_equal(_read(a), _read(b)) and not np.array_equal(_read(a), _read(c))
    three_steps = ["--model", model, "--size", "32x32", "--steps", "3", "--seed", "5", "--seconds", "1"]
    shifted, plain = tmp_path / "shifted.mp4", tmp_path / "plain.mp4"  # another shift: another path from the same noise
    assert main(["generate", "a blue box rests", "--shift", "4", "--out", str(shifted), *three_steps]) == 0
    assert main(["generate", "a blue box rests", "--out", str(plain), *three_steps]) == 0
    assert _read(shifted).shape == _read(plain).shape == (9, 32, 32, 3)
    assert not np.array_equal(_read(shifted), _read(plain))


def test_random_seed_is_printed_and_prompt_shown(tmp_path, model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["generate", "a ball", "--seconds", "0", "--show-prompt", "--model", model, "--size", "32x32", "--steps", "1"]
    assert main(args) == 0
    captured = capsys.readouterr()
    seed = int(captured.err.split("seed: ")[1].split()[0])
    assert (tmp_path / f"worldreel-generate-{seed}.png").exists()
    from worldreel.data.captions import parse_caption

    shown = captured.out.split("model prompt: ")[1].splitlines()[0]
    assert [o.shape for o in parse_caption(shown).objects] == ["ball"]  # a full caption of the prompt
    assert "note: no colour stated" in captured.err  # the rewriter says what it chose
    assert main(args[:4] + ["--no-rewrite", "--show-prompt", "--model", model, "--size", "32x32", "--steps", "1"]) == 0
    assert "model prompt: a ball\n" in capsys.readouterr().out


def test_animate_extend_interpolate_loop_edit(tmp_path, model, image, clip):
    img_path, frame = image
    out = tmp_path / "animate.mp4"
    assert main(["animate", str(img_path), "a red ball falls", "--seconds", "1", "--out", str(out), *_fast(model)]) == 0
    video = _read(out)
    assert video.shape == (9, 32, 32, 3) and np.abs(video[0].astype(int) - frame).mean() < 12  # H.264 at CRF 12
    source = _read(clip)
    fwd = tmp_path / "fwd.mp4"
    assert main(["extend", str(clip), "a red ball rolls right", "--seconds", "1", "--out", str(fwd), *_fast(model)]) == 0
    assert len(_read(fwd)) == 17 and np.abs(_read(fwd)[:9].astype(int) - source).mean() < 6  # the clip, re-encoded
    back = tmp_path / "back.mp4"
    assert main(["extend", str(clip), "a red ball", "--backward", "--seconds", "1", "--out", str(back), *_fast(model)]) == 0
    assert np.abs(_read(back)[-9:].astype(int) - source).mean() < 6
    inter = tmp_path / "inter.mp4"
    assert main(["interpolate", str(img_path), str(clip), "a red ball", "--seconds", "1", "--out", str(inter), *_fast(model)]) == 0
    assert np.abs(_read(inter)[-9:].astype(int) - source).mean() < 6
    loop = tmp_path / "loop.gif"
    assert main(["loop", "a red ball rolls right", "--seconds", "1", "--out", str(loop), *_fast(model)]) == 0
    assert loop.stat().st_size > 0
    edit = tmp_path / "edit.mp4"
    assert main(["edit", str(clip), "a blue ball rolls right", "--strength", "0.5", "--out", str(edit), *_fast(model)]) == 0
    assert _read(edit).shape == source.shape


@pytest.mark.parametrize(
    "args, param",
    [
        (["generate", "a red ball falls", "--size", "30x30"], "size"),
        (["generate", "a red ball falls", "--size", "2048x64"], "size"),
        (["generate", "a red ball falls", "--seconds", "-1"], "seconds"),
        (["generate", "a red ball falls", "--seconds", "4", "--out", "{tmp}/x.png"], "seconds"),
        (["generate", "   "], "prompt"),
        (["generate", "a red ball falls", "--out", "{tmp}/x.txt"], "out"),
        (["generate", "a red ball falls", "--out", "{tmp}/nowhere/x.mp4"], "out"),
        (["animate", "{tmp}/missing.png", "a red ball falls"], "image"),
        (["animate", "{tmp}/garbage.png", "a red ball falls"], "image"),
        (["animate", "{tmp}/first.png", "a red ball falls", "--out", "{tmp}/x.png"], "out"),
        (["extend", "{tmp}/garbage.mp4", "a red ball falls"], "video"),
        (["edit", "{tmp}/first.png", "a red ball falls", "--strength", "2"], "strength"),
        (["generate", "a red ball falls", "--shift", "0"], "shift"),
        (["loop", "a red ball falls", "--shift", "-2"], "shift"),
        (["animate", "{tmp}/first.png", "a red ball falls", "--guidance", "-1"], "guidance"),
        (["generate", "a red ball falls", "--guidance-mode", "cfg++"], "guidance_mode"),
        (["loop", "a red ball falls", "--guidance-mode", "interval", "--guidance-interval", "0.9,0.1"], "guidance_interval"),
        (["generate", "a red ball falls", "--model", "{tmp}/no-such-model"], "model"),
        (["animate", "{tmp}/first.png", "a red ball falls", "--stagger", "-1"], "stagger"),
    ],
)
def test_bad_input_exits_2_names_the_parameter_and_writes_nothing(tmp_path, model, image, capsys, args, param):
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "garbage.mp4").write_bytes(b"not a video")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--model" not in args:
        args += ["--model", model]
    out = tmp_path / "out.mp4"
    if "--out" not in args:
        args += ["--out", str(out)]
    before = set(tmp_path.rglob("*"))
    assert main(args + ["--seed", "1", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {param}") and err.count("\n") == 1  # one line, naming the parameter
    if "missing.png" in " ".join(args) or "garbage" in " ".join(args):
        assert "missing.png" in err or "garbage" in err  # names the file
    assert set(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("option, value", [("--steps", "x"), ("--likelihood", "nope"), ("--best-of", "2.5"),
                                           ("--seed", "-")])
def test_an_option_value_that_is_not_a_number_exits_2_naming_the_option(tmp_path, model, capsys, option, value):
    """Typer's own parse errors (its copy of click's, not click's) are a usage message, not a traceback."""
    out = tmp_path / "out.mp4"
    assert main(["generate", "a red ball falls", "--model", model, "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert f"'{option}'" in err and "Traceback" not in err and not out.exists()


def test_bench_drift_writes_per_window_scores(tmp_path, model):
    out = tmp_path / "drift.json"
    args = ["bench", "drift", "--model", model, "--json", str(out), "--prompts", "1", "--seconds", "2", "--window", "1",
            "--steps", "1"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    for method in ("windowed", "chained", "truth"):
        scores = result["summary"][method]["score"]
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert result["videos"][0]["prompt"] and len(result["videos"][0]["windowed"]) == 2
    assert sum(result["summary"]["truth"]["score"]) > 0  # the true world passes checks


def test_precision_defaults_to_auto_fp32_can_be_forced_and_the_manifest_says_which(tmp_path, model, monkeypatch):
    """--precision auto (the default) is bf16 on a CPU with native bf16 and fp32 on one without;
    --precision fp32 forces fp32 anywhere. The signed record names what was used."""
    import worldreel.precision as precision
    from worldreel.safety import provenance

    def used(name, *extra):
        out = tmp_path / f"{name}.mp4"
        assert main(["generate", "a red ball falls", "--seconds", "1", "--out", str(out), *_fast(model), *extra]) == 0
        return provenance.verify(out).generation["precision"]

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert used("auto-amx") == "bf16"
    assert used("forced", "--precision", "fp32") == "fp32"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert used("auto-plain") == "fp32"
    assert main(["generate", "a red ball falls", "--out", str(tmp_path / "x.mp4"), *_fast(model), "--precision", "fp16"]) == 2
    assert not (tmp_path / "x.mp4").exists()


def test_every_generation_command_takes_the_shared_options_after_its_own():
    import typer

    from worldreel.cli import app
    from worldreel.cli.generate import SHARED_OPTIONS

    group = typer.main.get_command(app)
    own = {"generate": ["prompt"], "animate": ["image", "prompt"], "extend": ["video", "prompt", "backward"],
           "interpolate": ["first", "last", "prompt"], "loop": ["prompt"], "edit": ["video", "prompt", "strength"]}
    for name, first in own.items():
        params = group.commands[name].params
        assert [p.name for p in params] == first + [n for n, _, _ in SHARED_OPTIONS], name
        defaults = {p.name: p.default for p in params}
        assert defaults["model"] == "world-tiny" and defaults["precision"] == "auto" and defaults["device"] == "cpu"
