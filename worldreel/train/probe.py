"""Train the state probe that steering reads (``diffusion/steer.py``): ``worldreel train probe``.

    worldreel train probe --model runs/m --data runs/cache-m --steps 1500 --out runs/probe.safetensors

The probe learns, from a reel-world latent cache, to read each palette colour's visible
occupancy per latent cell (``data/world_state.py``'s targets, re-simulated from each item's
scene seed) off the *denoiser's* clean prediction ``x0 = x_t - t v`` at random noise levels:
what steering will show it while sampling. The denoiser is frozen (only the probe learns) and
runs in bf16 where the CPU or GPU has it; about 0.2 s a step on 2 CPU cores at batch 16.

The file holds the probe in fp32 with its metadata: layout, steps, the cache, the command,
and the digest of the denoiser weights it was trained against (``train pack --probe``
refuses to pack it with other weights: another denoiser predicts other clean latents).
A held-out batch's loss is printed before and after, so a probe that learnt nothing shows.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from worldreel.errors import UserError

PROBE_KIND = "worldreel state probe"
POS_WEIGHT = 4.0  # objects cover about 2 % of the cells: their positive targets count 4x


def _noisy_predictions(dit, batch: dict, generator: torch.Generator, device, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen denoiser's clean predictions of a batch at random noise levels, and the levels."""
    x0 = batch["latents"].to(device)  # (B, C, f, h, w)
    B, f = x0.shape[0], x0.shape[2]
    t = torch.rand(B, generator=generator) ** 0.7  # (B,), more of them at high noise, where steering acts
    noise = torch.randn(x0.shape, generator=generator)
    t, noise = t.to(device), noise.to(device)
    tt = t[:, None, None, None, None]
    xt = (1 - tt) * x0 + tt * noise
    with torch.no_grad(), autocast():
        context = dit.text_context(batch["text"].to(device), batch["text_mask"].to(device))
        v = dit(xt, t[:, None].expand(B, f), context=context).float()
    return xt - tt * v, t


def train_probe(model: str, data: str, out: str, *, steps: int = 1500, batch_size: int = 16, lr: float = 2e-3,
                seed: int = 0, device: str = "cpu", command: str = "") -> dict:
    """Train a probe for ``model``'s denoiser on the cache ``data``; write it to ``out``. Returns
    {"held_before", "held_after", "steps", "seconds"} (binary cross-entropy on a held-out batch)."""
    from contextlib import nullcontext

    from safetensors.torch import save_file
    from tqdm import tqdm

    from worldreel import precision as precisions
    from worldreel.atomic import atomic_path
    from worldreel.data.latents import LatentCache
    from worldreel.data.world_state import OCCUPANCY, CacheStates
    from worldreel.diffusion.steer import PROBE_WIDTH, StateProbe
    from worldreel.model_folder import find, load_dit, read_config, weights_digest

    # 1. Check everything before any work.
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be a whole number of at least 1, got {steps!r}", param="steps")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise UserError(f"batch size must be a whole number of at least 2, got {batch_size!r}", param="batch_size")
    out_path = Path(out)
    if out_path.suffix != ".safetensors":
        raise UserError(f"{out}: the probe file must end in .safetensors", param="out")
    folder = find(model)
    config = read_config(folder)
    cache = LatentCache(data)
    from worldreel.config import to_dict
    from worldreel.train.pack import vae_differences

    if vae_differences(cache.info, to_dict(config.vae)):
        raise UserError(f"{data} holds latents of another autoencoder than {model}'s", param="data")
    states = CacheStates(cache.info, cache.entries)
    if not states.world:
        raise UserError(f"{data} is not a reel-world cache: the probe learns from the world's re-simulated states",
                        param="data")
    dev = torch.device(device)
    dit = load_dit(folder, device=str(dev))
    dit.requires_grad_(False)
    precision = precisions.resolve("auto", dev, param="precision")

    def autocast():
        return precisions.autocast(precision, dev) if precision == "bf16" else nullcontext()

    # 2. Batches of whole clips with targets; the first one is held out.
    def clips():
        epoch = 0
        while True:
            usable = 0
            for indices in cache.epoch(batch_size, seed=seed, epoch=epoch):
                batch = cache.collate([cache[int(i)] for i in indices])
                if batch["latents"].shape[2] < 2:
                    continue  # images: steering acts on clips
                targets = states.batch(batch["indices"], tuple(batch["latents"].shape[2:]))
                if not bool(targets["has_state"].all()):
                    continue
                usable += 1
                yield batch, targets["state"][:, OCCUPANCY].to(dev)
            if not usable:
                raise UserError(f"{data} has no clip whose world state could be re-simulated", param="data")
            epoch += 1

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    probe = StateProbe(config.dit.in_channels, PROBE_WIDTH).to(dev)
    optimiser = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))  # cosine to 0
    stream = clips()
    held_batch, held_target = next(stream)
    held_x0, _ = _noisy_predictions(dit, held_batch, generator, dev, autocast)

    def held_loss() -> float:
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(probe(held_x0), held_target).item()

    before, start = held_loss(), time.perf_counter()
    pos_weight = torch.tensor(POS_WEIGHT, device=dev)
    with tqdm(total=steps, desc="probe", unit="step", file=sys.stderr) as bar:
        for step in range(steps):
            batch, target = next(stream)
            x0, _ = _noisy_predictions(dit, batch, generator, dev, autocast)
            loss = F.binary_cross_entropy_with_logits(probe(x0), target, pos_weight=pos_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    after, seconds = held_loss(), time.perf_counter() - start
    # 3. The file, written atomically, with what made it.
    meta = {"kind": PROBE_KIND, "channels": str(probe.channels), "width": str(probe.width), "colors": str(probe.colors),
            "dit": weights_digest(folder)["dit"], "model": str(model), "data": str(data), "steps": str(steps),
            "batch_size": str(batch_size), "lr": str(lr), "seed": str(seed), "command": command,
            "held_before": f"{before:.4f}", "held_after": f"{after:.4f}"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        save_file({k: v.detach().cpu().float().contiguous() for k, v in probe.state_dict().items()}, str(tmp), metadata=meta)
    return {"held_before": before, "held_after": after, "steps": steps, "seconds": seconds}
