"""bench direction: does the stated side decide the motion? (eval/direction.py)"""
import json

import pytest

from worldreel.cli import main
from worldreel.eval.direction import SIDES, SUBJECTS, first_side, prompt_for, resting_first_frame, summarise


@pytest.mark.parametrize("prompt, side", [
    ("a blue ball rolls to the right", "right"),
    ("a red box slides to the left", "left"),
    ("a magenta ball is thrown to the left", "left"),
    ("a green ball rolls to the right; the camera pans left", "right"),  # the pan is removed
    ("a red box slides to the left; the camera pans left", "left"),
    ("a cyan box rests on the floor", "none"),
])
def test_first_side_reads_the_true_world(prompt, side):
    from worldreel.data.captions import parse_caption
    from worldreel.data.render import render_clip
    from worldreel.data.world import scene_from_facts
    from worldreel.eval.worldbench import score_video

    facts = parse_caption(prompt)
    for seed in range(3):
        assert first_side(score_video(render_clip(scene_from_facts(facts, seed)), facts, fps=8)) == side


def test_subjects_avoid_the_holdout_both_ways_and_rest_in_view():
    from worldreel.data.captions import parse_caption
    from worldreel.data.world import is_holdout

    for subject in SUBJECTS:
        for side in SIDES:
            assert not is_holdout(parse_caption(prompt_for(subject, side)))
        frame = resting_first_frame(subject, 0, (64, 64))
        assert frame.shape == (64, 64, 3) and frame.dtype.name == "uint8"


def _rows(moves):
    """Rows for one subject over seeds 0..n-1: moves(seed, stated side) -> the side it moved."""
    rows = []
    for seed in range(4):
        for side in SIDES:
            moved = moves(seed, side)
            rows.append({"mode": "text", "subject": "blue ball rolls", "side": side, "seed": seed,
                         "motion": "pass" if moved == side else "fail", "moved": moved})
    return rows


def test_summary_tells_a_model_that_follows_the_text_from_one_that_follows_its_seed():
    follows = summarise(_rows(lambda seed, side: side))["text"]
    assert follows["follows"] == 1.0 and follows["both"] == 1.0 and follows["other_way"] == 0.0
    by_seed = summarise(_rows(lambda seed, side: "right" if seed % 2 else "left"))["text"]  # the seed picks the side
    assert by_seed["follows"] == 0.5 and by_seed["both"] == 0.0 and by_seed["other_way"] == 0.5
    assert by_seed["by_side"]["right"]["follows"] == 0.5 and by_seed["pairs"] == 4 and by_seed["videos"] == 8
    still = summarise(_rows(lambda seed, side: "none"))["text"]
    assert still["follows"] == 0.0 and still["other_way"] == 0.0


def test_bench_direction_compares_models_side_by_side(tmp_path, tiny_model, capsys):
    out = tmp_path / "direction.json"
    args = ["bench", "direction", "--model", tiny_model, "--model", tiny_model, "--seeds", "1", "--steps", "1",
            "--precision", "fp32", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["results"]] == [tiny_model, tiny_model]
    first, second = (r["summary"] for r in result["results"])
    assert first == second  # same model, same seeds: the same videos
    for mode in ("text", "image"):
        s = first[mode]
        assert s["videos"] == 2 * len(SUBJECTS) and s["pairs"] == len(SUBJECTS)
        assert 0.0 <= s["both"] <= s["follows"] <= 1.0 and 0.0 <= s["other_way"] <= 1.0
    assert "left/right pairs per mode and model" in capsys.readouterr().out


@pytest.mark.parametrize("args, param", [
    (["--modes", "sideways"], "modes"),
    (["--seeds", "0"], "seeds"),
    (["--json", "{tmp}/out.txt"], "json"),
])
def test_bench_direction_bad_input_names_the_parameter(tmp_path, tiny_model, capsys, args, param):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--json" not in args:
        args += ["--json", str(tmp_path / "d.json")]
    assert main(["bench", "direction", "--model", tiny_model, *args]) == 2
    assert capsys.readouterr().err.startswith(f"error: {param}")
    assert not list(tmp_path.iterdir())
