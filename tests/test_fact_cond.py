"""Fact conditioning (issue 32, lever 3): parsed caption facts added to the denoiser's adaLN input."""
import dataclasses

import numpy as np
import pytest
import torch

from worldreel.models.dit import DiT, DiTConfig
from worldreel.models.fact_cond import NUM_IDS, FactEmbedder, fact_batch, fact_ids

TINY = DiTConfig(in_channels=4, width=32, depth=2, heads=4, text_dim=24)


def _inputs(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 4, 3, 4, 6, generator=g), torch.rand(B, 3, generator=g),
            torch.randn(B, 5, 24, generator=g), torch.ones(B, 5, dtype=torch.bool))


def test_fact_ids_tell_directions_counts_and_objects_apart():
    left, right = fact_ids("a red ball rolls to the left"), fact_ids("a red ball rolls to the right")
    assert len(left) == NUM_IDS and left != right
    assert fact_ids("two red balls fall") != fact_ids("three red balls fall")
    # Slots keep which object does what.
    assert fact_ids("a red ball falls and a blue box rests") != fact_ids("a red ball rests and a blue box falls")
    # Free text and the empty prompt: the all-"none" code (free text works as before).
    assert fact_ids("a cat playing the piano") == (0,) * NUM_IDS
    assert fact_batch(["", "a red ball falls"]).shape == (2, NUM_IDS)
    assert fact_batch([""]).abs().sum() == 0


def test_a_denoiser_that_gains_fact_conditioning_starts_exactly_where_it_was():
    torch.manual_seed(0)
    plain = DiT(TINY)
    with torch.no_grad():
        for p in plain.parameters():  # as if trained: no zero-initialised weight left
            p.add_(torch.randn_like(p) * 0.1)
    facts_model = DiT(dataclasses.replace(TINY, fact_cond=True))
    missing, unexpected = facts_model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("fact_embed.") for k in missing)
    x, t, text, mask = _inputs()
    ids = fact_batch(["a red ball rolls to the left", "a red ball rolls to the right"])
    with torch.no_grad():
        assert torch.equal(facts_model(x, t, text, mask, facts=ids), plain(x, t, text, mask))
        # Once its output layer has moved, left and right give different velocities for the same text.
        torch.nn.init.normal_(facts_model.fact_embed.mlp[-1].weight, std=0.1)
        v = facts_model(torch.cat([x[:1], x[:1]]), torch.cat([t[:1], t[:1]]), torch.cat([text[:1], text[:1]]),
                        torch.cat([mask[:1], mask[:1]]), facts=ids)
    assert not torch.allclose(v[0], v[1])
    # Without facts (None) a fact-conditioned model sees the all-"none" code.
    with torch.no_grad():
        none = torch.zeros(2, NUM_IDS, dtype=torch.long)
        assert torch.equal(facts_model(x, t, text, mask), facts_model(x, t, text, mask, facts=none))


def test_embedder_gradient_reaches_the_tables():
    emb = FactEmbedder(16)
    torch.nn.init.normal_(emb.mlp[-1].weight)
    emb(fact_batch(["a red ball falls", "a blue box rests"])).square().sum().backward()
    assert emb.table.weight.grad.abs().sum() > 0


def test_task_init_adds_fact_conditioning_and_the_generator_passes_facts(tmp_path):
    """task.init from a model without fact_cond into one with it keeps every weight; the exported
    model generates and its facts reach the denoiser (left and right prompts differ only there)."""
    from worldreel.model_folder import load_model, save_random_model
    from worldreel.pipelines.generate import Generator
    from worldreel.config import apply_overrides
    from worldreel.presets import get_preset
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig

    folder = save_random_model(tmp_path / "plain", "world-micro")
    preset = apply_overrides(get_preset("world-micro"), ["model.dit.fact_cond=true"])
    task = DiTTask(preset.model, preset.train_dit, DiTTaskConfig(init=str(folder)))
    model = task.build_model()
    plain = load_model(str(folder)).dit
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # The other way round (dropping it), or another change with it, is refused.
    from worldreel.errors import UserError

    wider = apply_overrides(get_preset("world-micro"), ["model.dit.fact_cond=true", "model.dit.depth=3"])
    with pytest.raises(UserError) as err:
        DiTTask(wider.model, wider.train_dit, DiTTaskConfig(init=str(folder))).build_model()
    assert err.value.param == "task.init"
    # A generator over a fact-conditioned denoiser hands it the prompt's facts.
    loaded = load_model(str(folder))
    torch.nn.init.normal_(model.fact_embed.mlp[-1].weight, std=0.5)
    seen = []
    original = model.text_context

    def spy(text, mask, facts=None):
        seen.append(None if facts is None else facts.clone())
        return original(text, mask, facts)

    model.text_context = spy
    gen = Generator(dataclasses.replace(loaded.config, dit=preset.model.dit), loaded.vae, model.eval(),
                    loaded.text_encoder)
    a = gen.generate("a red ball rolls to the left", seed=1, steps=2, size="32x32", rewrite=False).frames
    b = gen.generate("a red ball rolls to the right", seed=1, steps=2, size="32x32", rewrite=False).frames
    assert seen and all(f is not None for f in seen)
    assert torch.equal(seen[0][0], torch.tensor(fact_ids("a red ball rolls to the left")))
    assert seen[0].shape[0] == 2 and seen[0][1].abs().sum() == 0  # the negative prompt "" has none
    assert not np.array_equal(a, b)


def test_training_with_facts_feeds_them_and_gives_the_embedder_its_own_rate(tmp_path):
    """A fact-conditioned run on a (toy) reel-world cache: the embedder's weights move, at
    task.fact_lr times the learning rate, and the run exports a model that loads."""
    import torch.nn.functional as F

    from worldreel.config import apply_overrides
    from worldreel.data.latents import WorldItems, build_cache
    from worldreel.model_folder import load_dit
    from worldreel.presets import get_preset
    from worldreel.train.config import TrainConfig
    from worldreel.train.dit_task import DiTTask, DiTTaskConfig
    from worldreel.train.trainer import RunConfig, main

    def encode(video):  # (B, 3, F, H, W) -> (B, 16, f, H/8, W/8): a deterministic stand-in for the autoencoder
        first = F.avg_pool3d(video[:, :, :1], (1, 8, 8))
        rest = F.avg_pool3d(video[:, :, 1:], (4, 8, 8)) if video.shape[2] > 1 else first[:, :, :0]
        z = torch.cat([first, rest], dim=2)
        return torch.cat([z] * 5 + [z[:, :1]], dim=1)

    def text(prompts):
        return torch.randn(len(prompts), 3, 384, generator=torch.Generator().manual_seed(0)), torch.ones(len(prompts), 3, dtype=torch.bool)

    cache = tmp_path / "cache"
    build_cache(cache, WorldItems(4, sizes=[(64, 64)], seconds=[4.0], seed=5), count=4, encode_video=encode,
                encode_text=text, progress=False, meta={"vae": {"time_factor": 4, "space_factor": 8}, "sizes": [[64, 64]],
                                                          "seconds": [4.0], "source": "world", "seed": 5, "command": "toy"})
    preset = apply_overrides(get_preset("world-micro"), ["model.dit.fact_cond=true"])
    task = DiTTask(preset.model, preset.train_dit, DiTTaskConfig(fact_lr=10.0))
    groups = task.param_groups(task.build_model())
    assert len(groups) == 2 and groups[1]["lr_scale"] == 10.0 and len(groups[1]["params"]) == 5
    with pytest.raises(Exception, match="task.fact_lr"):
        DiTTask(preset.model, preset.train_dit, DiTTaskConfig(fact_lr=0.0))
    tc = TrainConfig(steps=3, batch_size=2, lr=1e-3, warmup=1, log_every=1, save_every=3, eval_every=0, progress=False,
                     data=str(cache), precision="fp32")
    main(RunConfig(task="dit", model=preset.model, train=tc, run_dir=str(tmp_path / "run"),
                   task_options=["fact_lr=10", f"vae={tmp_path / 'no-vae'}"]))
    dit = load_dit(tmp_path / "run" / "model")
    assert dit.fact_embed is not None and dit.fact_embed.mlp[-1].weight.abs().max() > 0  # it learned from the facts
