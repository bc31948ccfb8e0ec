import pytest

from worldreel.config import apply_overrides, from_dict, to_dict
from worldreel.errors import UserError
from worldreel.presets import ModelConfig, PRESETS, get_preset


def test_overrides_cast_to_declared_types():
    cfg = get_preset("world-tiny")
    out = apply_overrides(cfg, ["model.dit.depth=4", "train_dit.lr=1e-3", "model.dit.skips=uvit", "model.dit.patch=1,4,4"])
    assert out.model.dit.depth == 4 and isinstance(out.model.dit.depth, int)
    assert out.train_dit.lr == pytest.approx(1e-3)
    assert out.model.dit.skips == "uvit"
    assert out.model.dit.patch == (1, 4, 4)
    assert cfg.model.dit.depth != 4  # the original is untouched


@pytest.mark.parametrize("bad", ["model.dit.depthh=3", "model.dit.depth=three", "model.dit.depth=2.5", "nokey"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(UserError) as err:
        apply_overrides(get_preset("world-tiny"), [bad])
    assert err.value.param


def test_model_config_json_round_trip():
    for name in PRESETS:
        cfg = get_preset(name).model
        assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="world-tiny"):
        get_preset("world-huge")
