"""The denoiser as a trainer ``Task`` (see ``train/task.py``): model, data, loss, export.

    worldreel train dit --preset world-tiny --set train.data=runs/world-tiny/cache

Data (``TrainConfig.data``):
- a latent cache folder (``worldreel train cache``; ``worldreel.data.latents.LatentCache``):
  clips and images pre-encoded once, the fast path on a CPU;
- ``"world"``: reel-world clips rendered on the fly (``data.world.WorldClips``) in the
  size and length buckets ``TrainConfig.sizes`` x ``TrainConfig.seconds`` (0 s = a
  1-frame image), encoded by a trained autoencoder (``DiTTaskConfig.vae``) every step.
Each batch is one bucket (one latent shape) and a pure function of (seed, rank, step), so
a resumed run sees the batches it would have seen.

Loss (``diffusion/flow.py``): rectified flow with logit-normal times shifted for the token
count. Frame conditioning is data: each clip is shown, with the probabilities below, its
first latent frame, its last, a prefix, a suffix, both ends, or nothing, as clean latents
at t = 0, and is scored only on the other frames; so one checkpoint learns text-to-video,
image-to-video, extension both ways, interpolation, loops and windowed long videos.
Captions are dropped (replaced by "") ``text_drop`` of the time for classifier-free guidance.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from worldreel.atomic import write_bytes
from worldreel.config import to_dict
from worldreel.diffusion.flow import flow_loss, sample_t, shift_for_tokens
from worldreel.errors import UserError
from worldreel.models.dit import DiT, deeper_only, grow_depth

# Order of the conditioning modes in DiTTaskConfig.mode_probs() and in the logs.
MODES = ("none", "first", "last", "prefix", "suffix", "ends")


@dataclass
class DiTTaskConfig:
    p_first: float = 0.20  # probability a clip is given its first latent frame (image-to-video)
    p_last: float = 0.05  # ... its last latent frame (video that ends on an image)
    p_prefix: float = 0.15  # ... a prefix of 1..f-1 latent frames (extension forwards, long-video windows)
    p_suffix: float = 0.05  # ... a suffix of 1..f-1 latent frames (extension backwards)
    p_ends: float = 0.10  # ... its first and last latent frames (interpolation, loops); the rest: nothing given
    text_drop: float = 0.1  # fraction of captions replaced by "" (the unconditional input for guidance)
    t_mean: float = 0.0  # logit-normal mean of the training times (SD3: 0)
    t_std: float = 1.0  # logit-normal std of the training times (SD3: 1)
    shift: bool = True  # shift training times with the token count, as sampling does (flow.shift_for_tokens)
    vae: str = ""  # autoencoder model folder for data="world"; "" = runs/<preset>/vae/model (the trainer's default)
    holdout: str = "exclude"  # reel-world hold-out policy for on-the-fly clips ("exclude": never train on them)
    eval_items: int = 8  # clips in the fixed evaluation batch of evaluate()
    # At each evaluation, this many prompts of world-bench's default suite are generated
    # (seeds 0..n-1, decoded by the autoencoder ``vae``), written to samples/step_N/ as MP4
    # and scored: a quick world-bench number in the logs. 0, or no autoencoder found, skips it.
    eval_videos: int = 4
    eval_steps: int = 10  # sampler steps of those videos (fewer than generation's default: a quick look)
    # A model folder (or shipped name) whose denoiser weights the run starts from, e.g. to
    # fine-tune a trained denoiser on the latents of an improved autoencoder; "" = random.
    init: str = ""
    # Let ``init`` be a shallower denoiser of otherwise the same layout (depth up-scaling,
    # models/dit.py ``grow_depth``): its blocks spread evenly through the deeper stack and
    # the new ones start as the identity, so training starts from init's predictions.
    grow: bool = False
    # Latent-cache training: items whose caption facts list two or more objects are drawn this
    # many times per epoch (1 = once, like every other item); other data sources ignore it.
    repeat_multi: int = 1
    # Issue 32's levers, from the reel world's state re-simulated per item (data/world_state.py,
    # train/state_head.py); items without a scene seed (your own videos) are trained as before.
    # Lever 2: weight each latent cell's flow loss 1 + object_weight * (occupancy + motion),
    # capped at object_cap, renormalised to mean 1 per clip; 0 = uniform (off).
    object_weight: float = 0.0
    object_cap: float = 4.0
    # Lever 1: an auxiliary head on the tokens after ``state_block`` blocks (0 = depth // 2)
    # predicts per-cell colour occupancy, what is behind the pillar and velocity; its loss is
    # added times ``state_loss`` (0 = off, no head). The head is checkpointed, never exported.
    state_loss: float = 0.0
    state_block: int = 0
    state_until: int = 0  # the state loss stops from this optimiser step on (HASTE, 2025); 0 = never
    # Lever 3 (models/fact_cond.py, on with --set model.dit.fact_cond=true): the fact embedder's
    # learning rate as a multiple of train.lr. It starts at zero in a trained denoiser, whose
    # fine-tuning rate is small, so it may learn faster than the rest.
    fact_lr: float = 1.0
    # Extra flow-loss weight on latent frames 1 and 2 (pixel frames 1-8), where generated objects
    # split from where the first frame put them (issue 32): weight 1 + early_weight there, then
    # renormalised to mean 1 over a clip's frames; 0 = uniform.
    early_weight: float = 0.0
    # Staggered times (diffusion forcing's ramp, flow.stagger_times): this share of clips gets
    # per-frame times on the ramp a staggered sampler (sampling.stagger) walks, earlier frames
    # less noisy, with a lead drawn from U(0, stagger_max) and the model's sampling shift; frames
    # that come out clean count as given. 0 = every frame of a clip shares one time (off).
    p_stagger: float = 0.0
    stagger_max: float = 2.0
    # Preference pairs (train/pairs.py: the model's own videos, the best and the worst of each
    # caption by world-bench's checks): each step adds dpo_weight times the Diffusion-DPO loss
    # (Wallace et al. 2023) of dpo_batch pairs, read against the frozen task.init denoiser, to
    # the flow loss. "" = off. dpo_beta: how far the denoiser's errors may move from the
    # reference's before a pair counts as learnt (larger: sooner).
    pairs: str = ""
    dpo_beta: float = 2000.0
    dpo_weight: float = 0.02  # at 1 the DPO term (2-5) swamped the flow loss (0.06): docs/training.md, recipe notes
    dpo_batch: int = 4

    def mode_probs(self) -> list[float]:
        given = [self.p_first, self.p_last, self.p_prefix, self.p_suffix, self.p_ends]
        if min(given) < 0 or sum(given) > 1:
            raise UserError("frame-conditioning probabilities must be >= 0 and sum to at most 1", param="p_first")
        return [1.0 - sum(given), *given]


def sample_given(batch: int, frames: int, probs: list[float], generator: torch.Generator) -> torch.Tensor:
    """Random given-frame masks (batch, frames) bool: one mode of ``MODES`` per item.

    A 1-frame item (an image) is never given anything; an item never has every frame given.
    """
    device = generator.device
    mode = torch.multinomial(torch.tensor(probs, device=device).expand(batch, -1), 1, generator=generator)  # (B, 1)
    k = torch.randint(1, max(frames, 2), (batch, 1), generator=generator, device=device)  # (B, 1) prefix/suffix length
    idx = torch.arange(frames, device=device)[None]  # (1, f)
    first, last = idx == 0, idx == frames - 1  # (1, f)
    given = (
        ((mode == 1) & first)
        | ((mode == 2) & last)
        | ((mode == 3) & (idx < k))
        | ((mode == 4) & (idx >= frames - k))
        | ((mode == 5) & (first | last))
    )  # (B, f)
    return given & ~given.all(dim=1, keepdim=True)  # (B, f)


class DiTTask:
    """Trainer task for the denoiser (``worldreel train dit --preset NAME``)."""

    name = "dit"

    def __init__(self, model_cfg, train_cfg, cfg: DiTTaskConfig | None = None):
        """model_cfg: the ``ModelConfig`` (its .dit, .text, .vae, .fps are used); train_cfg: the
        ``TrainConfig`` (batch_size, data, sizes, seconds); cfg: this task's own options."""
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.cfg = cfg or DiTTaskConfig()
        self.probs = self.cfg.mode_probs()
        self._pairs = None  # (captions, winners, losers) of task.pairs, read as the task is made
        self._reference = None  # the frozen task.init denoiser the pairs are read against
        self.state_block = self._check_levers()
        self._text = None  # TextEncoder, loaded on first use (3-6 s)
        self._vae = None  # VideoVAE for data="world", loaded on first use
        self._eval_batch = None
        self._cache_command = ""  # the command that made the latent cache, read as training starts (data_facts)

    def _check_levers(self) -> int:
        """Validate the issue-32 options; returns the block count that feeds the state head."""
        import math

        cfg, depth = self.cfg, self.model_cfg.dit.depth
        for name in ("object_weight", "state_loss", "early_weight"):
            value = getattr(cfg, name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"task.{name} must be a number >= 0 (0 = off), got {value!r}", param=f"task.{name}")
        if not 0 <= cfg.p_stagger <= 1:
            raise UserError(f"task.p_stagger must be a share from 0 to 1 (0 = off), got {cfg.p_stagger!r}", param="task.p_stagger")
        if not math.isfinite(cfg.stagger_max) or cfg.stagger_max <= 0:
            raise UserError(f"task.stagger_max must be a number > 0, got {cfg.stagger_max!r}", param="task.stagger_max")
        if not math.isfinite(cfg.object_cap) or cfg.object_cap < 1:
            raise UserError(f"task.object_cap must be >= 1 (the background's weight), got {cfg.object_cap!r}",
                            param="task.object_cap")
        if not 0 <= cfg.state_block <= depth:
            raise UserError(f"task.state_block must be from 1 to the depth {depth} (0 = depth // 2), got {cfg.state_block}",
                            param="task.state_block")
        if cfg.state_loss > 0 and getattr(self.train_cfg, "compile", False):
            # The head reads its block through a forward hook added per step: a compiled graph
            # would retrace for every new hook. Not supported yet.
            raise UserError("task.state_loss does not work with train.compile=true yet", param="task.state_loss")
        if not math.isfinite(cfg.fact_lr) or cfg.fact_lr <= 0:
            raise UserError(f"task.fact_lr must be a number > 0 (a multiple of train.lr), got {cfg.fact_lr!r}", param="task.fact_lr")
        if cfg.pairs:
            if not cfg.init:
                raise UserError("task.pairs reads each pair against the denoiser the run starts from: set task.init too",
                                param="task.pairs")
            if not math.isfinite(cfg.dpo_beta) or cfg.dpo_beta <= 0:
                raise UserError(f"task.dpo_beta must be a number > 0, got {cfg.dpo_beta!r}", param="task.dpo_beta")
            if not math.isfinite(cfg.dpo_weight) or cfg.dpo_weight < 0:
                raise UserError(f"task.dpo_weight must be a number >= 0, got {cfg.dpo_weight!r}", param="task.dpo_weight")
            if cfg.dpo_batch < 1:
                raise UserError(f"task.dpo_batch must be at least 1, got {cfg.dpo_batch}", param="task.dpo_batch")
            self._check_pairs()  # read now: a bad folder or start fails before any training, not at the first step
        if cfg.state_until < 0:
            raise UserError(f"task.state_until must be >= 0 (0 = never stop), got {cfg.state_until}", param="task.state_until")
        return cfg.state_block or max(depth // 2, 1)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups; ``lr_scale`` multiplies the step's learning rate."""
        facts = [p for name, p in model.named_parameters() if "fact_embed." in name]
        if not facts or self.cfg.fact_lr == 1.0:
            return [{"params": list(model.parameters())}]
        ids = {id(p) for p in facts}
        return [{"params": [p for p in model.parameters() if id(p) not in ids]},
                {"params": facts, "lr_scale": self.cfg.fact_lr}]

    def uses_state(self) -> bool:
        """Whether batches carry world-state targets (a lever is on)."""
        return self.cfg.object_weight > 0 or self.cfg.state_loss > 0

    # -- model ----------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        model = DiT(self.model_cfg.dit)
        if self.cfg.init:
            from worldreel.model_folder import DIT_FILE, find, load_weights, read_config

            try:
                folder = find(self.cfg.init, "task.init")
                start = read_config(folder).dit
            except UserError as err:
                raise UserError(f"task.init: {err}", param="task.init") from None
            want = self.model_cfg.dit
            deeper = deeper_only(to_dict(start), to_dict(want))
            # Turning fact conditioning on keeps every weight (its embedder starts at zero).
            adds_facts = want.fact_cond and not start.fact_cond and to_dict(start) == {**to_dict(want), "fact_cond": False}
            if to_dict(start) != to_dict(want) and not (deeper and self.cfg.grow) and not adds_facts:
                hint = f"; set task.grow=true to grow it from depth {start.depth} to {want.depth}" if deeper else ""
                raise UserError(f"task.init {self.cfg.init} is a different denoiser layout than the preset's{hint}", param="task.init")
            target = DiT(start) if deeper or adds_facts else model
            try:
                load_weights(target, folder / DIT_FILE, "task.init")
            except UserError as err:
                raise UserError(f"task.init: {err}", param="task.init") from None
            if adds_facts:
                missing, unexpected = model.load_state_dict(target.state_dict(), strict=False)
                assert not unexpected and all(k.startswith("fact_embed.") for k in missing), (missing, unexpected)
                print(f"task.init {self.cfg.init}: fact conditioning added (dit.fact_cond), starting at zero", file=sys.stderr)
            if deeper:
                try:
                    added = grow_depth(model, target)
                except ValueError as err:
                    raise UserError(f"task.grow: {err}", param="task.grow") from None
                print(f"grew {self.cfg.init} from depth {start.depth} to {want.depth}: new identity blocks at {added}", file=sys.stderr)
        if self.cfg.state_loss > 0:
            # After init's weights are in: the head is this run's own (its keys are "state_head.*").
            from worldreel.train.state_head import HEAD_NAME, StateHead

            model.add_module(HEAD_NAME, StateHead(model.cfg.width, model.cfg.patch))
        return model

    def text_encoder(self, device: torch.device | str = "cpu"):
        if self._text is None:
            from worldreel.models.text import TextEncoder

            self._text = TextEncoder(self.model_cfg.text, device=device)
        return self._text

    # -- data -----------------------------------------------------------------------------

    def _vae_folder(self) -> Path:
        return Path(self.cfg.vae or Path("runs") / self.model_cfg.name / "vae" / "model")

    def load_vae(self, device: torch.device | str = "cpu"):
        """The trained autoencoder that turns on-the-fly clips into latents (frozen, eval mode)."""
        if self._vae is None:
            from worldreel.model_folder import CONFIG_FILE, VAE_FILE, load_vae

            folder = self._vae_folder()
            if not (folder / VAE_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
                raise UserError(
                    f"data='world' encodes clips with a trained autoencoder, but {folder} has no {CONFIG_FILE} + "
                    f"{VAE_FILE}; train one first (worldreel train vae) or point DiTTaskConfig.vae at it",
                    param="vae",
                )
            self._vae = load_vae(folder, str(device), "task.vae").requires_grad_(False)
        return self._vae

    def batches(self, *, seed: int, rank: int, world_size: int, start_step: int,
                repeat_multi: int | None = None) -> Iterator[dict[str, Any]]:
        """Endless batches ``{"latents": (B, C, f, h, w), "captions": [str] * B}`` (or with cached
        ``"text"`` (B, L, D) / ``"text_mask"`` (B, L) instead of captions). A cache's multi-object
        items are drawn ``repeat_multi`` times per epoch (default: the task's ``repeat_multi``)."""
        data = self.train_cfg.data
        if data == "world":
            return self._world_batches(seed, rank, world_size, start_step)
        if Path(data).is_dir():
            repeat_multi = self.cfg.repeat_multi if repeat_multi is None else repeat_multi
            return self._cache_batches(Path(data), seed, rank, world_size, start_step, repeat_multi)
        raise UserError(f"train.data must be 'world' or a latent cache folder, got {data!r}", param="train.data")

    def data_facts(self) -> dict[str, Any]:
        """``{"cache_items": N, "cache_command": ...}`` for a latent cache: how many items it holds
        as training starts and the command that made it so. A cache grows in place (``train cache
        --count``), so its cache.json later may say more."""
        from worldreel.model_folder import read_json

        info = read_json(Path(self.train_cfg.data) / "cache.json")  # None for "world" or no cache (batches() says so)
        if not isinstance(info, dict) or not isinstance(info.get("items"), int):
            return {}
        self._cache_command = str((info.get("meta") or {}).get("command", ""))
        return {"cache_items": info["items"], "cache_command": self._cache_command}

    def stage_facts(self) -> dict[str, Any]:
        """This stage's data, for its ``StageRecord`` (train/records.py): the cache and the
        preference pairs, each with the command that made it."""
        facts = {"data": self.train_cfg.data, "data_command": self._cache_command}
        if self.cfg.pairs:
            from worldreel.model_folder import read_json
            from worldreel.train.pairs import INFO_FILE

            facts["pairs_command"] = str((read_json(Path(self.cfg.pairs) / INFO_FILE) or {}).get("command", ""))
        return facts

    def _world_batches(self, seed, rank, world_size, start_step):
        from worldreel.data.world import WorldClips

        tc = self.train_cfg
        device = "cuda" if tc.device != "cpu" and torch.cuda.is_available() else "cpu"
        vae = self.load_vae(device)
        step = start_step
        while True:
            rng = np.random.default_rng([seed, rank, world_size, step])  # the batch depends on nothing else
            size = tuple(tc.sizes[int(rng.integers(len(tc.sizes)))])
            seconds = float(tc.seconds[int(rng.integers(len(tc.seconds)))])
            frames = 1 + round(seconds * self.model_cfg.fps)
            source = WorldClips(seed=int(rng.integers(2**31)), size=size, frames=frames, image_prob=0.0,
                                holdout=self.cfg.holdout)
            clips = iter(source)
            items = [next(clips) for _ in range(tc.batch_size)]
            video = torch.stack([item["video"] for item in items]).to(device)  # (B, 3, F, H, W)
            with torch.no_grad():
                latents = vae.encode(video).cpu()  # (B, C, f, h, w), the posterior mean
            batch = {"latents": latents, "captions": [item["caption"] for item in items]}
            if self.uses_state():
                from worldreel.data.world_state import scene_targets, stack_targets

                vc = vae.cfg
                targets = [scene_targets(item["seed"], size, source.sim_seconds, tuple(range(frames)), self.cfg.holdout,
                                         vc.time_factor, vc.space_factor)[0] for item in items]
                batch.update(stack_targets(targets, tuple(latents.shape[2:])), step=step // tc.accum)
            yield batch
            step += 1

    def _cache_batches(self, folder: Path, seed, rank, world_size, start_step, repeat_multi):
        try:
            from worldreel.data.latents import LatentCache
        except ImportError:
            raise UserError("this installation has no latent cache reader (worldreel.data.latents)", param="train.data") from None
        cache = LatentCache(folder, repeat_multi=repeat_multi)
        batches = cache.batches(batch_size=self.train_cfg.batch_size, seed=seed, rank=rank, world_size=world_size,
                                start_step=start_step)
        if not self.uses_state():
            yield from batches
            return
        from worldreel.data.world_state import CacheStates

        states = CacheStates(cache.info, cache.entries)
        for micro, batch in enumerate(batches, start=start_step):
            batch.update(states.batch(batch["indices"], tuple(batch["latents"].shape[2:])))
            batch["step"] = micro // self.train_cfg.accum  # the optimiser step (state_until)
            if micro == start_step and not bool(batch["has_state"].any()):
                print(f"warning: {folder}'s first batch has no world-state targets (not a reel-world cache?): "
                      "task.object_weight and task.state_loss only act on items with a scene seed", file=sys.stderr)
            yield batch

    # -- loss -----------------------------------------------------------------------------

    def _text_for(self, batch: dict, drop: torch.Tensor, device: torch.device):
        """(states (B, L, D), mask (B, L)) with the dropped rows replaced by the "" states.

        Uses the batch's pre-encoded ``text``/``text_mask`` (and ``null_text``/``null_mask``) when
        the latent cache supplies them; otherwise encodes ``captions`` with the text encoder.
        """
        if "text" not in batch:  # captions only: encode them (cached per prompt)
            prompts = ["" if d else c for c, d in zip(batch["captions"], drop.tolist())]
            states, mask = self.text_encoder(device).encode(prompts)
            return states.to(device), mask.to(device)
        from worldreel.models.text import pad_text

        states, mask = batch["text"].to(device).float(), batch["text_mask"].to(device).bool()  # (B, L, D), (B, L)
        null, null_mask = (batch["null_text"], batch["null_mask"]) if "null_text" in batch else self.text_encoder(device).encode([""])
        null, null_mask = null.to(device).float()[:1], null_mask.to(device).bool()[:1]
        length = max(states.shape[1], null.shape[1])
        states, mask = pad_text(states, mask, length)
        null, null_mask = pad_text(null, null_mask, length)
        keep = ~drop.to(device)  # (B,)
        states = torch.where(keep[:, None, None], states, null)  # (B, L, D)
        mask = torch.where(keep[:, None], mask, null_mask)  # (B, L)
        return states, mask

    def _facts_for(self, batch: dict, drop: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """(B, NUM_IDS) parsed caption facts for ``dit.fact_cond`` (zeros where the caption was
        dropped, as for the empty prompt), or None when the denoiser does not take them."""
        if not self.model_cfg.dit.fact_cond:
            return None
        from worldreel.models.fact_cond import fact_batch

        captions = ["" if d else c for c, d in zip(batch["captions"], drop.tolist())]
        return fact_batch(captions, device)

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = self._flow(model, batch, generator)
        if self.cfg.pairs:  # after the flow loss's draws, so a run without pairs draws what it always did
            dpo = self._dpo(model, generator, logs)
            loss = loss + self.cfg.dpo_weight * dpo
        return loss, logs

    def _tokens(self, shape) -> int:
        """The denoiser's tokens per clip of a latent batch of ``shape`` (B, C, f, h, w)."""
        patch = self.model_cfg.dit.patch
        return (shape[2] // patch[0]) * (shape[3] // patch[1]) * (shape[4] // patch[2])

    def _check_pairs(self) -> None:
        """task.pairs read, and checked against the preset and task.init: the pairs' latents have
        the denoiser's channels, and task.init (the reference) has the preset's denoiser layout."""
        from worldreel.model_folder import find, read_config
        from worldreel.train.pairs import read_pairs

        if to_dict(read_config(find(self.cfg.init, "task.init")).dit) != to_dict(self.model_cfg.dit):
            raise UserError("task.pairs needs task.init of the preset's own denoiser layout (not grown, no facts added)",
                            param="task.pairs")
        self._pairs = read_pairs(self.cfg.pairs)
        channels = self._pairs[1].shape[1]
        if channels != self.model_cfg.dit.in_channels:
            raise UserError(f"{self.cfg.pairs}: the pairs' latents have {channels} channels, the denoiser reads "
                            f"{self.model_cfg.dit.in_channels}: make them with this model's autoencoder", param="task.pairs")

    def _reference_model(self, device: torch.device) -> nn.Module:
        """task.init's denoiser, frozen: what the pairs' errors are read against (the same at every
        step and after a resume, whatever the run's own weights are by then)."""
        if self._reference is None:
            from worldreel.model_folder import DIT_FILE, find, load_weights

            reference = DiT(self.model_cfg.dit)  # (its layout checked with the pairs, _check_pairs)
            load_weights(reference, find(self.cfg.init, "task.init") / DIT_FILE, "task.init")
            self._reference = reference.requires_grad_(False).eval()
        return self._reference.to(device)

    def _dpo(self, model: nn.Module, generator: torch.Generator, logs: dict) -> torch.Tensor:
        """The Diffusion-DPO loss of ``dpo_batch`` pairs drawn from task.pairs: with one time and one
        noise per pair, ``-log sigmoid(-beta/2 ((e_w - r_w) - (e_l - r_l)))``, where e is the
        denoiser's mean squared velocity error on the winner (w) or loser (l) and r the
        reference's. Text-to-video: no frame given, no caption dropped."""
        import torch.nn.functional as F

        from worldreel.diffusion.flow import noisy

        cfg = self.cfg
        captions, winners, losers = self._pairs
        device = next(model.parameters()).device
        gdev = generator.device
        pick = torch.randint(len(captions), (cfg.dpo_batch,), generator=generator, device=gdev).cpu()
        x0 = torch.cat([winners[pick], losers[pick]]).to(device)  # (2P, C, f, h, w): winners, then their losers
        P, f = cfg.dpo_batch, x0.shape[2]
        shift = shift_for_tokens(self._tokens(x0.shape)) if cfg.shift else 1.0
        t = sample_t(P, generator=generator, mean=cfg.t_mean, std=cfg.t_std, shift=shift).to(device).repeat(2)  # (2P,)
        noise = torch.randn((P, *x0.shape[1:]), generator=generator, device=gdev).to(device).repeat(2, 1, 1, 1, 1)
        rows = {"captions": [captions[i] for i in pick.tolist()] * 2}
        no_drop = torch.zeros(2 * P, dtype=torch.bool)
        text, text_mask = self._text_for(rows, no_drop, device)
        facts = self._facts_for(rows, no_drop, device)
        t_frames = t[:, None].expand(2 * P, f)
        x_t, target = noisy(x0, noise, t_frames), (noise - x0).float()
        error = (model(x_t, t_frames, text, text_mask, facts=facts).float() - target).square().mean(dim=(1, 2, 3, 4))
        with torch.no_grad():
            reference = self._reference_model(device)
            ref_error = (reference(x_t, t_frames, text, text_mask, facts=facts).float() - target).square().mean(dim=(1, 2, 3, 4))
        moved = error - ref_error  # (2P,): below 0 where the denoiser fits better than the reference
        inside = -0.5 * cfg.dpo_beta * (moved[:P] - moved[P:])  # (P,): above 0 where the winner gained on the loser
        dpo = -F.logsigmoid(inside).mean()
        logs.update(dpo=dpo.item(), dpo_right=(inside > 0).float().mean().item(),
                    dpo_winner=moved[:P].mean().item(), dpo_loser=moved[P:].mean().item())
        return dpo

    def _flow(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The flow-matching loss of a batch (and the state head's, lever 1), with its logs."""
        cfg = self.cfg
        device = next(model.parameters()).device
        x0 = batch["latents"].to(device).float()  # (B, C, f, h, w)
        B, _, f, h, w = x0.shape
        patch = self.model_cfg.dit.patch
        n_tokens = self._tokens(x0.shape)
        # 1. Randomness, all from the trainer's generator (exact resume): text dropout,
        #    times, noise, given frames.
        gdev = generator.device
        drop = torch.rand(B, generator=generator, device=gdev) < cfg.text_drop  # (B,)
        shift = shift_for_tokens(n_tokens) if cfg.shift else 1.0
        t = sample_t(B, generator=generator, mean=cfg.t_mean, std=cfg.t_std, shift=shift).to(device)  # (B,)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(device)  # (B, C, f, h, w)
        given = sample_given(B, f, self.probs, generator).to(device)  # (B, f)
        if cfg.p_stagger > 0 and f > 1:
            t, given = self._stagger(t, given, n_tokens, generator)  # (B, f), (B, f)
        # 2. Text states (cached per prompt), then the flow-matching loss on the frames not given,
        #    weighted where the world's objects are (lever 2) when asked.
        text, text_mask = self._text_for(batch, drop, device)
        facts = self._facts_for(batch, drop, device)
        logs = {"items": float(B), "tokens": float(B * n_tokens), "given": given.float().mean().item()}
        weight = None
        if cfg.object_weight > 0 and "state" in batch:
            from worldreel.train.state_head import object_weights

            weight = object_weights(batch["state"].to(device), batch["has_state"].to(device), given, cfg.object_weight,
                                    cfg.object_cap)  # (B, 1, f, h, w)
        if cfg.early_weight > 0 and f > 1:
            frames = torch.ones(f, device=device)
            frames[1:3] += cfg.early_weight
            frames = (frames / frames.mean())[None, None, :, None, None]  # (1, 1, f, 1, 1)
            weight = frames if weight is None else weight * frames
        head = getattr(model, "state_head", None)
        if head is None:
            loss = flow_loss(lambda x, t_frames: model(x, t_frames, text, text_mask, facts=facts), x0, t=t, noise=noise, given=given,
                             weight=weight)
            return loss, logs
        # 3. Lever 1: the state head on the tokens after block state_block, read by a forward hook.
        active = "state" in batch and (cfg.state_until == 0 or int(batch.get("step", 0)) < cfg.state_until)
        tokens: list[torch.Tensor] = []
        hook = model.blocks[self.state_block - 1].register_forward_hook(
            lambda _m, _i, out: tokens.append(out) if active and not tokens else None)  # the first call, not a recompute
        try:
            loss = flow_loss(lambda x, t_frames: model(x, t_frames, text, text_mask, facts=facts), x0, t=t, noise=noise, given=given,
                             weight=weight)
        finally:
            hook.remove()
        if not active:
            # Every parameter must get a gradient under DDP: the head's is zero.
            return loss + 0.0 * sum(p.sum() for p in head.parameters()), logs
        if not tokens:
            raise RuntimeError("the state head's block hook did not run (is the model compiled? train.compile=false)")
        from worldreel.train.state_head import state_loss

        grid = (f // patch[0], h // patch[1], w // patch[2])
        pred = head(tokens[0], grid)  # (B, K, f, h, w)
        aux, aux_logs = state_loss(pred, batch["state"].to(device), batch["has_state"].to(device))
        logs.update(aux_logs, state=aux.item())
        return loss + cfg.state_loss * aux, logs

    def _stagger(self, t: torch.Tensor, given: torch.Tensor, n_tokens: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame times: t (B,) -> (B, f), a share ``p_stagger`` of the clips on a staggered
        sampler's ramp (a place on the schedule ~ U(0, 1), a lead ~ U(0, stagger_max)); frames the
        ramp leaves clean join ``given`` (they are known then, and no velocity is asked of them; a
        clip left with every frame given adds nothing to the loss, as in ``flow_loss``)."""
        from worldreel.diffusion.flow import stagger_times

        cfg, gdev = self.cfg, generator.device
        B, f = given.shape
        pick = (torch.rand(B, generator=generator, device=gdev) < cfg.p_stagger).to(t.device)  # (B,)
        place = torch.rand(B, generator=generator, device=gdev).to(t.device)  # (B,)
        lead = (torch.rand(B, generator=generator, device=gdev) * cfg.stagger_max).to(t.device)  # (B,)
        shift = shift_for_tokens(n_tokens, base_shift=self.model_cfg.sampling.shift)  # the sampler's own (pipelines/generate.py)
        ramp = stagger_times(place, f, lead, shift)  # (B, f)
        t_frames = torch.where(pick[:, None], ramp, t[:, None].expand(B, f))  # (B, f)
        return t_frames, given | (t_frames == 0)

    # -- evaluation (optional hook of the trainer) -------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str) -> dict[str, float]:
        """Validation flow loss on a fixed batch at fixed times, with nothing given and with the
        first frame given; then sample videos and their quick world-bench score (``sample_and_score``).

        The losses are cheap (4 forward passes) and comparable across steps: the noise, times
        and batch are fixed.
        """
        scores = self._validation_losses(model)
        scores.update(self.sample_and_score(model, step, out_dir))
        return scores

    @torch.no_grad()
    def sample_and_score(self, model: nn.Module, step: int, out_dir: str) -> dict[str, float]:
        """Generate ``eval_videos`` prompts of world-bench's default suite with the model being
        trained, write them to ``out_dir/step_N/`` (MP4 + captions.jsonl) and score them."""
        n = self.cfg.eval_videos
        if n <= 0 or not (self._vae_folder() / "vae.safetensors").is_file():
            return {}
        import dataclasses

        from worldreel.data.captions import parse_caption
        from worldreel.data.video_io import write_video
        from worldreel.eval.worldbench import default_prompt_suite, score_video
        from worldreel.pipelines.generate import Generator, SamplingConfig

        device = next(model.parameters()).device
        vae = self.load_vae(device)
        config = dataclasses.replace(self.model_cfg, vae=vae.cfg)
        generator = Generator(config, vae, model, self.text_encoder(device), device=str(device),
                              sampling=SamplingConfig(steps=self.cfg.eval_steps))
        suite = default_prompt_suite()
        prompts = [suite[round(k * len(suite) / n) % len(suite)] for k in range(n)]  # spread over the suite
        out = Path(out_dir) / f"step_{step:08d}"
        out.mkdir(parents=True, exist_ok=True)
        rows, scores = [], []
        for k, prompt in enumerate(prompts):
            video = generator.generate(prompt, seed=k, rewrite=False)
            write_video(out / f"{k:02d}.mp4", video.frames, video.fps)
            scores.append(score_video(video.frames, parse_caption(prompt)).score)
            rows.append({"file": f"{k:02d}.mp4", "caption": prompt, "seed": k, "score": round(scores[-1], 4)})
        (out / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"worldbench": float(np.mean(scores))}

    def _validation_losses(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        if self._eval_batch is None:
            # The cache drawn plainly whatever the run's repeat_multi, so that runs on one cache
            # score the same clips and their losses compare across runs.
            batches = self.batches(seed=10_007, rank=0, world_size=1, start_step=0, repeat_multi=1)
            self._eval_batch = next(batches)
        batch = self._eval_batch
        x0 = batch["latents"][: self.cfg.eval_items].to(device).float()  # (B, C, f, h, w)
        B, _, f = x0.shape[:3]
        sub = {k: v[:B] for k, v in batch.items() if k != "step"}
        text, text_mask = self._text_for(sub, torch.zeros(B, dtype=torch.bool), device)
        facts = self._facts_for(sub, torch.zeros(B, dtype=torch.bool), device)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(device)
        scores = {}
        for tv in (0.25, 0.5, 0.75):
            t = torch.full((B,), tv, device=device)
            scores[f"loss_t{tv:g}"] = flow_loss(lambda x, tf: model(x, tf, text, text_mask, facts=facts), x0, t=t, noise=noise).item()
        if f > 1:
            given = torch.zeros(B, f, dtype=torch.bool, device=device)
            given[:, 0] = True
            t = torch.full((B,), 0.5, device=device)
            scores["loss_first_given"] = flow_loss(
                lambda x, tf: model(x, tf, text, text_mask, facts=facts), x0, t=t, noise=noise, given=given
            ).item()
        return scores

    # -- export ---------------------------------------------------------------------------

    def export(self, model: nn.Module, out_dir: str) -> None:
        """Write ``dit.safetensors`` (fp16) and config.json's "dit" and "text" sections into ``out_dir``.

        With data="world" the autoencoder that made the latents is copied in too (its weights
        and "vae" section), so the folder is a complete model.
        """
        from worldreel.model_folder import VAE_FILE, read_config_data, update_config, write_weights

        model = getattr(model, "module", model)  # a DDP wrapper
        if getattr(model, "state_head", None) is not None:  # trained with the run, never exported
            plain = DiT(model.cfg)
            plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("state_head.")})
            model = plain
        out = Path(out_dir)
        write_weights(out, "dit", model)
        sections: dict[str, Any] = {"dit": model.cfg, "text": self.model_cfg.text}
        vae_folder = self._vae_folder()
        if self.train_cfg.data == "world" and (vae_folder / VAE_FILE).is_file() and vae_folder.resolve() != out.resolve():
            sections["vae"] = read_config_data(vae_folder)["vae"]
            write_bytes(out / VAE_FILE, (vae_folder / VAE_FILE).read_bytes())
        update_config(out, sections, self.model_cfg)
        print(f"dit: exported {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters to {out}", file=sys.stderr)


