"""Whole clips for autoencoder training and evaluation, and the pool that crops are cut from.

Clips come from the reel world (``data/world.py``: ``sample_scene`` + ``render_clip``, held-out
combinations excluded unless asked for) or from a folder / JSONL of the user's videos
(``data/datasets.py``). Every clip is a pure function of its seed, so a resumed run sees
exactly the data it would have seen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldreel.data.facts import FPS
from worldreel.data.video_io import to_tensor
from worldreel.errors import UserError


def world_clip(seed: int, *, frames: int = 33, size: tuple[int, int] = (64, 64), holdout: str = "exclude") -> np.ndarray:
    """One reel-world clip, uint8 (F, H, W, 3); shorter clips are the start of a 4 s scene, as in WorldClips."""
    from worldreel.data.world import render_clip, sample_scene

    return render_clip(sample_scene(seed, size=size, seconds=max(4.0, (frames - 1) / FPS), holdout=holdout))[:frames]


def world_videos(seed: int, count: int, *, frames: int = 33, size: tuple[int, int] = (64, 64),
                 holdout: str = "exclude") -> torch.Tensor:
    """``count`` whole clips (count, 3, F, H, W) in [-1, 1] from seeds seed, seed+1, ..."""
    return torch.stack([to_tensor(world_clip(seed + i, frames=frames, size=size, holdout=holdout)) for i in range(count)])


def check_source(train_data: str) -> str:
    """"world", or the folder / JSONL path of the user's videos, checked to exist."""
    if train_data != "world" and not Path(train_data).exists():
        raise UserError(f"{train_data!r} is neither 'world' nor an existing folder or JSONL file", param="train.data")
    return train_data


def folder_clips(source: str, sizes: list[tuple[int, int]], min_frames: int) -> list[np.ndarray]:
    """Every clip and image of a folder / JSONL of the user's videos, uint8 (F, H, W, 3),
    decoded once; clips of at least ``min_frames`` frames."""
    from worldreel.data.datasets import VideoDataConfig, iter_clips

    lengths = sorted({max(2, min_frames), 17, 33})
    items = [item["video"] for item in iter_clips(source, VideoDataConfig(sizes=list(sizes), frames=lengths), progress=True)]
    if not items:
        raise UserError(f"no usable videos or images in {source}", param="train.data")
    return items


class ClipPool:
    """Whole clips that training crops are cut from, so one simulated and rendered clip
    serves many crops (rendering a clip costs about as much as a training step's worth of
    crops). Slot i holds the clip seeded by (seed, i, step // refresh): the content at any
    step is a pure function of the step, so a resumed run sees the same data."""

    def __init__(self, source: str, seed: int, *, slots: int = 512, refresh: int = 500, crop_tries: int = 4,
                 clip_frames: int = 33, clip_size: tuple[int, int] = (64, 64), min_frames: int = 1,
                 sizes: list[tuple[int, int]] | None = None):
        self.source, self.seed = source, seed
        self.n_slots, self.refresh, self.crop_tries = slots, refresh, crop_tries
        self.clip_frames, self.clip_size = clip_frames, clip_size
        self.slots: dict[int, tuple[int, np.ndarray]] = {}  # slot -> (version, uint8 (F, H, W, 3))
        self.items: list[np.ndarray] | None = None  # a folder's clips, all decoded once
        if source != "world":
            self.items = folder_clips(source, sizes or [clip_size], min_frames)

    def clip(self, slot: int, step: int) -> np.ndarray:
        version = step // max(1, self.refresh)
        held = self.slots.get(slot)
        if held is None or held[0] != version:
            clip_seed = int(np.random.SeedSequence([self.seed, slot, version]).generate_state(1)[0] & 0x7FFFFFFF)
            if self.items is not None:
                clip = self.items[clip_seed % len(self.items)]
            else:
                clip = world_clip(clip_seed, frames=self.clip_frames, size=self.clip_size)
            held = (version, clip)
            self.slots[slot] = held
        return held[1]

    def batch(self, step: int, count: int, rng: np.random.Generator, crop: tuple[int, int, int]) -> torch.Tensor:
        """(count, 3, f, h, w) in [-1, 1]: random spacetime crops of random slots (slots whose
        clip is too small for the crop, possible with a folder's images, are passed over).
        Of ``crop_tries`` candidate positions the busiest (highest pixel std) is kept, so fewer
        crops are empty sky."""
        cf, ch, cw = crop
        out = []
        while len(out) < count:
            clip = self.clip(int(rng.integers(self.n_slots)), step)
            if clip.shape[0] < cf or clip.shape[1] < ch or clip.shape[2] < cw:
                continue
            best, best_std = None, -1.0
            for _ in range(max(1, self.crop_tries)):
                t0 = int(rng.integers(clip.shape[0] - cf + 1))
                y0, x0 = int(rng.integers(clip.shape[1] - ch + 1)), int(rng.integers(clip.shape[2] - cw + 1))
                piece = clip[t0:t0 + cf, y0:y0 + ch, x0:x0 + cw]
                std = float(piece[::2, ::2, ::2].std())  # a subsample is enough to tell sky from objects
                if std > best_std:
                    best, best_std = piece, std
            out.append(to_tensor(best))
        return torch.stack(out)
