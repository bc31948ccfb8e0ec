"""Preference pairs from a model's own videos (train/pairs.py) and the Diffusion-DPO loss that reads them (task.pairs)."""
import dataclasses
import json

import pytest
import torch

from worldreel.errors import UserError
from worldreel.train import pairs as P


def test_the_pair_is_the_best_and_the_worst_when_far_enough_apart():
    assert P.pick_pair([0.5, 0.9, 0.2, 0.9], 0.25) == (1, 2)  # ties: the first best, the first worst
    assert P.pick_pair([0.6, 0.5, 0.6], 0.25) is None
    assert P.pick_pair([1 / 7, 2 / 7], 1 / 7) == (1, 0)  # one check apart meets a one-check margin
    assert P.pick_pair([0.4, 0.4], 0.01) is None


@pytest.mark.parametrize("field, value", [("prompts", 0), ("samples", 1), ("samples", 17), ("seed", -1),
                                          ("margin", 0.0), ("margin", 1.5), ("margin", True), ("prompts", 2.5)])
def test_bad_settings_name_themselves(field, value):
    with pytest.raises(UserError) as err:
        P.check_config(dataclasses.replace(P.PairsConfig(), **{field: value}))
    assert err.value.param == field


def test_captions_are_the_training_worlds_and_never_the_benchmarks():
    from worldreel.data.captions import parse_caption

    texts = [P.draw_caption(0, k, set()) for k in range(6)]
    assert all(parse_caption(t) for t in texts) and len(set(texts)) == 6
    assert texts == [P.draw_caption(0, k, set()) for k in range(6)]  # a pure function of (seed, k)
    assert P.draw_caption(0, 2, {texts[2]}) is None


def _scores(monkeypatch, values):
    """world-bench's score_video replaced by the next of ``values`` (a random model's videos score what they score)."""
    from worldreel.eval import worldbench

    it = iter(values)
    monkeypatch.setattr(worldbench, "score_video", lambda frames, facts, fps=8: type("S", (), {"score": next(it)})())


def test_pairs_are_made_resumed_grown_and_read(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "pairs"
    fast = {"steps": 2}
    _scores(monkeypatch, [0.2, 0.8, 0.5, 0.5, 1.0, 0.0])  # prompt 0: a pair (1 over 0); 1: none; 2: a pair (0 over 1)
    summary = P.build_pairs(tiny_model, out, P.PairsConfig(prompts=3, samples=2, margin=0.25), sampling=fast,
                            precision="fp32")
    assert summary == {"prompts": 3, "excluded": 0, "pairs": 2, "mean_score": 0.5}
    rows = [json.loads(line) for line in (out / P.ROWS_FILE).read_text().splitlines()]
    assert [r["pair"] is not None for r in rows] == [True, False, True]
    assert (rows[0]["winner"], rows[0]["loser"], rows[2]["winner"]) == (1, 0, 0)
    assert rows[1]["seeds"] == [2, 3]  # videos: seeds samples * k + j
    info = json.loads((out / P.INFO_FILE).read_text())
    assert info["sampling"] == {"steer": 0.0, "best_of": 1, "steps": 2}  # the denoiser's own samples unless told
    captions, winners, losers = P.read_pairs(out)
    assert captions == [rows[0]["caption"], rows[2]["caption"]]
    assert winners.shape == losers.shape and winners.shape[0] == 2 and winners.ndim == 5
    assert not torch.equal(winners, losers)
    # Rerun: nothing made again. More prompts: only the new one (its two scores are the next given).
    _scores(monkeypatch, [0.3, 0.3])
    assert P.build_pairs(tiny_model, out, P.PairsConfig(prompts=4, samples=2, margin=0.25), sampling=fast,
                         precision="fp32")["prompts"] == 4
    # Made otherwise: refused, naming what differs; the folder is untouched.
    before = (out / P.ROWS_FILE).read_text()
    with pytest.raises(UserError, match="config.margin") as err:
        P.build_pairs(tiny_model, out, P.PairsConfig(prompts=4, samples=2, margin=0.5), sampling=fast)
    assert err.value.param == "out" and (out / P.ROWS_FILE).read_text() == before
    with pytest.raises(UserError, match=r"differ in sampling\.guidance\)"):  # a setting given now but not then
        P.build_pairs(tiny_model, out, P.PairsConfig(prompts=4, samples=2, margin=0.25), sampling={**fast, "guidance": 2.0})
    with pytest.raises(UserError) as err:
        P.build_pairs(tiny_model, out, P.PairsConfig(prompts=4, samples=2, margin=0.25), sampling={"steps": 0})
    assert err.value.param == "steps"


def test_a_folder_without_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="train pairs") as err:
        P.read_pairs(tmp_path)
    assert err.value.param == "task.pairs"
    (tmp_path / P.ROWS_FILE).write_text(json.dumps({"k": 0, "caption": "a red ball falls", "pair": None}) + "\n")
    with pytest.raises(UserError, match="no pairs"):
        P.read_pairs(tmp_path)


def _pairs_folder(tmp_path, shape=(16, 3, 4, 4)):
    from safetensors.torch import save_file

    folder = tmp_path / "pairs"
    (folder / P.ITEMS_DIR).mkdir(parents=True)
    rows = []
    for k, text in enumerate(["a red ball falls", "a blue box slides to the left"]):
        name = f"{P.ITEMS_DIR}/{k:06d}.safetensors"
        g = torch.Generator().manual_seed(k)
        save_file({"winner": torch.randn(shape, generator=g), "loser": torch.randn(shape, generator=g)}, str(folder / name))
        rows.append({"k": k, "caption": text, "pair": name})
    (folder / P.ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _task(init, **options):
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    preset = get_preset("world-micro")
    return DiTTask(preset.model, preset.train_dit, DiTTaskConfig(init=init, **options))


def _batch(shape=(2, 16, 3, 4, 4)):
    return {"latents": torch.randn(shape, generator=torch.Generator().manual_seed(5)),
            "captions": ["a red ball falls", "a green box rests"]}


def test_dpo_reads_the_pairs_against_the_frozen_start_and_adds_to_the_flow_loss(tiny_model, tmp_path):
    folder = _pairs_folder(tmp_path)
    plain, dpo = _task(tiny_model), _task(tiny_model, pairs=str(folder), dpo_weight=0.5, dpo_batch=3)
    model = dpo.build_model()
    flow, logs = plain.loss(model, _batch(), torch.Generator().manual_seed(1))
    both, dlogs = dpo.loss(model, _batch(), torch.Generator().manual_seed(1))
    assert "dpo" not in logs and {"dpo", "dpo_right", "dpo_winner", "dpo_loser"} <= set(dlogs)
    # At the start the denoiser is the reference: every pair's margin is 0, the loss log 2.
    assert dlogs["dpo"] == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-5)
    assert dlogs["dpo_winner"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(both, flow + 0.5 * dlogs["dpo"], rtol=1e-5, atol=1e-6)  # the flow loss drew first, unchanged
    # A few steps on the DPO loss alone lower it: the winners' error falls against the losers'.
    only = _task(tiny_model, pairs=str(folder), dpo_batch=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        only._dpo(model, torch.Generator().manual_seed(9), {}).backward()
        opt.step()
    later = {}
    only._dpo(model, torch.Generator().manual_seed(9), later)
    assert later["dpo"] < dlogs["dpo"] and later["dpo_winner"] < later["dpo_loser"]
    # The reference stays the start: it never trains.
    assert not any(p.requires_grad for p in only._reference.parameters())


def test_the_pairs_are_read_when_the_task_is_made(tiny_model, tmp_path):
    # a bad folder fails before any training, not at the first step that draws a pair
    with pytest.raises(UserError, match="train pairs") as err:
        _task(tiny_model, pairs=str(tmp_path))
    assert err.value.param == "task.pairs"
    with pytest.raises(UserError, match="8 channels") as err:
        _task(tiny_model, pairs=str(_pairs_folder(tmp_path, shape=(8, 3, 4, 4))))
    assert err.value.param == "task.pairs"


@pytest.mark.parametrize("options, param", [(dict(init=""), "task.pairs"), (dict(dpo_beta=0.0), "task.dpo_beta"),
                                            (dict(dpo_weight=-1.0), "task.dpo_weight"), (dict(dpo_batch=0), "task.dpo_batch")])
def test_bad_dpo_settings_name_themselves(tiny_model, tmp_path, options, param):
    with pytest.raises(UserError) as err:
        _task(**{"init": tiny_model, "pairs": str(tmp_path), **options})
    assert err.value.param == param


def test_the_stage_record_keeps_the_command_that_made_the_pairs(tiny_model, tmp_path):
    folder = _pairs_folder(tmp_path)
    (folder / P.INFO_FILE).write_text(json.dumps({"command": "worldreel train pairs --model m --out p"}))
    assert _task(tiny_model, pairs=str(folder)).stage_facts()["pairs_command"] == "worldreel train pairs --model m --out p"
    assert "pairs_command" not in _task(tiny_model).stage_facts()
