"""Latent cache: clips and captions encoded once, read by the denoiser's training every step.

Layout of a cache folder (``build_cache``):

    cache.json                settings, counts, buckets, "complete"
    index.jsonl               one line per item: key, shard, latent shape, caption, facts, ...
                              (written when complete; each shard's metadata holds its own lines)
    null.safetensors          "text": the token states of "" (the unconditional prompt)
    shard_00000.safetensors   "<key>.latents" (C, f, h, w) fp16, "<key>.text" (L_i, D) fp16

Text states are stored unpadded (only the real tokens, L_i of them); the reader pads a batch
and builds its mask. Items of several sizes and lengths share a shard; the reader groups
them into buckets of one latent shape, so every batch stacks.

Building is resumable: shard k holds items [k*S, (k+1)*S) and is written atomically (temp
file, fsync, rename), so a rerun skips the shards already on disk and continues. The
settings a cache was built with (``meta``: model, sizes, seconds, seed, source) are in
cache.json; a rerun with other settings into the same folder is refused.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from worldreel.atomic import atomic_path, read_jsonl, write_json, write_text
from worldreel.data.video_io import to_tensor
from worldreel.errors import UserError

FORMAT = 1


def _as_video(video: Any) -> torch.Tensor:
    """float32 (3, F, H, W) in [-1, 1] from that or from uint8 frames (F, H, W, 3)."""
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"numpy clips must be uint8 (F, H, W, 3), got {video.dtype} {video.shape}")
        return to_tensor(video)  # (F, H, W, 3) -> (3, F, H, W)
    if isinstance(video, torch.Tensor) and video.dim() == 4 and video.shape[0] == 3:
        return video.float()
    raise ValueError(f"a clip must be uint8 (F, H, W, 3) frames or a (3, F, H, W) tensor, got {type(video)}")


def _extras(item: dict) -> dict:
    """The item's JSON-able fields other than the video and caption (facts, seed, size, ...)."""
    out = {}
    for k, v in item.items():
        if k in ("video", "caption"):
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def build_cache(
    out_dir: str | Path,
    items: Sequence[dict] | Iterable[dict],
    *,
    count: int | None,
    encode_video: Callable[[torch.Tensor], torch.Tensor],
    encode_text: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    shard_size: int = 256,
    batch_size: int = 8,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
    """Encode ``count`` items (None: until an iterable source ends) into a cache folder;
    returns the cache.json contents.

    items: dicts ``{"video": uint8 (F, H, W, 3) or float (3, F, H, W) in [-1, 1], "caption":
    str, ...JSON-able extras}``; a Sequence (indexable: finished shards are skipped for free)
    or an iterable (finished shards' items are drawn and dropped; it may end before ``count``).
    encode_video: (B, 3, F, H, W) -> normalised latents (B, C, f, h, w), called per shape.
    encode_text: prompts -> (states (B, L, D), mask (B, L) bool).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm import tqdm

    # 1. The folder and its settings: a rerun must use the same ones.
    out = Path(out_dir)
    if count is not None and count < 1:
        raise UserError(f"count must be at least 1, got {count}", param="count")
    if shard_size < 1:
        raise UserError(f"shard size must be at least 1, got {shard_size}", param="shard_size")
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps(meta or {}))
    info_path = out / "cache.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        old_meta = old.get("meta") or {}
        # "command" (the one that made it, for the stage records) changes when a cache grows
        differ = sorted(k for k in set(old_meta) | set(meta) if old_meta.get(k) != meta.get(k) and k != "command")
        if old.get("shard_size") != shard_size:
            differ.append(f"shard size ({old.get('shard_size')} there)")
        if differ:
            raise UserError(f"{out} holds a cache built with other settings ({', '.join(differ)} differ); "
                            "use another --out or the same settings", param="out")
    for stale in out.glob(".*.tmp"):
        stale.unlink()

    # 2. The unconditional text, once.
    if not (out / "null.safetensors").exists():
        states, mask = encode_text([""])
        null = states[0][mask[0].bool()].to(torch.float16).contiguous()  # (L0, D)
        with atomic_path(out / "null.safetensors", durable=True) as tmp:
            save_file({"text": null}, str(tmp))

    # 3. Shards: skip the finished ones, encode the rest in same-shape batches.
    indexable = hasattr(items, "__getitem__") and hasattr(items, "__len__")
    if count is None and indexable:
        count = len(items)
    if indexable and len(items) < count:
        raise UserError(f"the source holds {len(items)} items, fewer than count={count}", param="count")
    stream = None if indexable else iter(items)
    shard_ids = range(math.ceil(count / shard_size)) if count is not None else itertools.count()
    entries: list[dict] = []
    bar = tqdm(total=count, desc="latent cache", unit="clip", disable=not progress, dynamic_ncols=True)
    ended = False
    for k in shard_ids:
        first = k * shard_size
        want = shard_size if count is None else min(shard_size, count - first)
        name = f"shard_{k:05d}.safetensors"
        path = out / name
        if path.exists():
            with safe_open(str(path), framework="pt") as f:
                done = json.loads(f.metadata()["items"])
                source_ended = f.metadata().get("source_ended") == "true"
            if len(done) == want or source_ended:
                entries += done
                bar.update(len(done))
                if stream is not None:  # drop the items this shard already holds
                    for _ in range(len(done)):
                        next(stream, None)
                if source_ended:
                    ended = True
                    break
                continue
        # Encode items [first, first + want), flushing each shape's batch as it fills.
        tensors: dict[str, torch.Tensor] = {}
        shard_entries: list[dict] = []
        pending: dict[tuple, list[tuple[str, torch.Tensor, str, dict]]] = {}

        def flush(shape: tuple) -> None:
            group = pending.pop(shape, [])
            if not group:
                return
            with torch.no_grad():
                z = encode_video(torch.stack([g[1] for g in group]))  # (B, C, f, h, w)
                states, mask = encode_text([g[2] for g in group])  # (B, L, D), (B, L)
            for (key, _, caption, extra), zi, si, mi in zip(group, z, states, mask):
                tensors[f"{key}.latents"] = zi.detach().to("cpu", torch.float16).contiguous()
                text = si[mi.bool()].detach().to("cpu", torch.float16).contiguous()  # (L_i, D) real tokens
                tensors[f"{key}.text"] = text
                shard_entries.append({"key": key, "shard": name, "shape": list(zi.shape), "tokens": int(text.shape[0]),
                                      "caption": caption, **extra})
            bar.update(len(group))

        for i in range(first, first + want):
            if stream is None:
                item = items[i]
            else:
                item = next(stream, None)
                if item is None:
                    ended = True
                    break
            video = _as_video(item["video"])
            shape = tuple(video.shape)
            pending.setdefault(shape, []).append((f"{i:08d}", video, str(item["caption"]), _extras(item)))
            if len(pending[shape]) >= batch_size:
                flush(shape)
        for shape in list(pending):
            flush(shape)
        if shard_entries:
            shard_entries.sort(key=lambda e: e["key"])
            md = {"format": str(FORMAT), "items": json.dumps(shard_entries), "source_ended": "true" if ended else "false"}
            with atomic_path(path, durable=True) as tmp:
                save_file(tensors, str(tmp), metadata=md)
            entries += shard_entries
        # 4. After every shard: the settings and counts (the index is written once, at the end;
        #    a reader of an unfinished cache lists the shards instead).
        _write_index(out, entries, count, shard_size, meta, complete=False)
        if ended:
            break
    bar.close()
    return _write_index(out, entries, count, shard_size, meta, complete=True)


def _write_index(out: Path, entries: list[dict], count: int | None, shard_size: int, meta: dict, *, complete: bool) -> dict:
    buckets: dict[str, int] = {}
    for e in entries:
        key = "x".join(str(s) for s in e["shape"])
        buckets[key] = buckets.get(key, 0) + 1
    if complete:  # rewriting a growing index after every shard would cost O(items^2)
        write_text(out / "index.jsonl", "".join(json.dumps(e) + "\n" for e in entries), durable=True)
    info = {"format": FORMAT, "items": len(entries), "count": count, "shard_size": shard_size, "complete": complete,
            "latent_dtype": "float16", "buckets": buckets, "meta": meta}
    write_json(out / "cache.json", info, durable=True)
    return info


class WorldItems:
    """The reel world as an indexable source for ``build_cache``: item i is a pure function of
    (seed, i): a size and a length drawn from ``sizes`` x ``seconds`` (0 s = a single frame,
    taken at a random time of a 4 s clip), a scene, its rendering and a caption. starts: the
    movers' layout (``sample_scene``)."""

    def __init__(self, count: int, *, sizes: list[tuple[int, int]], seconds: list[float], seed: int = 0,
                 holdout: str = "exclude", starts: str = "side"):
        from worldreel.data.world import check_starts

        self.count, self.sizes, self.seconds, self.seed, self.holdout = count, list(sizes), list(seconds), seed, holdout
        self.starts = check_starts(starts)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        from worldreel.data.captions import caption
        from worldreel.data.facts import facts_to_dict
        from worldreel.data.render import render_clip
        from worldreel.data.world import sample_scene

        if not 0 <= i < self.count:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        size = tuple(self.sizes[int(rng.integers(len(self.sizes)))])
        seconds = float(self.seconds[int(rng.integers(len(self.seconds)))])
        scene_seed = int(rng.integers(2**31))
        scene = sample_scene(scene_seed, size=size, seconds=seconds if seconds > 0 else 4.0, holdout=self.holdout,
                             starts=self.starts)
        if seconds > 0:
            frames = render_clip(scene)  # (F, H, W, 3)
        else:
            frames = render_clip(scene, frames=[int(rng.integers(33))])  # (1, H, W, 3)
        return {"video": frames, "caption": caption(scene.facts, rng), "facts": facts_to_dict(scene.facts),
                "seed": scene_seed, "size": list(size), "seconds": seconds}


class LatentCache(torch.utils.data.Dataset):
    """A cache folder as a dataset: ``cache[i] = {"latents": (C, f, h, w), "text": (L_i, D),
    "caption": str, "index": i}`` (float32), plus deterministic bucketed ``batches()``."""

    def __init__(self, folder: str | Path, *, repeat_multi: int = 1):
        self.folder = Path(folder)
        if isinstance(repeat_multi, bool) or not isinstance(repeat_multi, int) or not 1 <= repeat_multi <= 16:
            raise UserError(f"repeat_multi must be a whole number from 1 to 16, got {repeat_multi!r}",
                            param="task.repeat_multi")
        if not (self.folder / "cache.json").exists():
            raise UserError(f"{self.folder} is not a latent cache (no cache.json); build one with worldreel train cache",
                            param="data")
        self.info = json.loads((self.folder / "cache.json").read_text())
        if self.info.get("complete") and (self.folder / "index.jsonl").exists():
            self.entries = [entry for _, entry in read_jsonl(self.folder / "index.jsonl")]
        else:  # a cache still being built (or stopped): the finished shards list their items
            from safetensors import safe_open

            self.entries = []
            for path in sorted(self.folder.glob("shard_*.safetensors")):
                with safe_open(str(path), framework="pt") as f:
                    self.entries += json.loads(f.metadata()["items"])
        if not self.entries:
            raise UserError(f"the latent cache {self.folder} is empty", param="data")
        # An epoch draws each item once, and an item whose facts list two or more objects
        # ``repeat_multi`` times (oversampling multi-object scenes; items without facts count as one).
        self.buckets: dict[tuple, list[int]] = {}
        for i, e in enumerate(self.entries):
            objects = (e.get("facts") or {}).get("objects") or []
            repeats = repeat_multi if len(objects) >= 2 else 1
            self.buckets.setdefault(tuple(e["shape"]), []).extend([i] * repeats)
        self._handles: dict[str, Any] = {}
        self._null: torch.Tensor | None = None
        self._epochs: dict[tuple, list[np.ndarray]] = {}

    def __getstate__(self):  # DataLoader workers open their own file handles
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.entries)

    def _shard(self, name: str):
        if name not in self._handles:
            from safetensors import safe_open

            self._handles[name] = safe_open(str(self.folder / name), framework="pt")
        return self._handles[name]

    def __getitem__(self, i: int) -> dict:
        e = self.entries[i]
        f = self._shard(e["shard"])
        return {"latents": f.get_tensor(f"{e['key']}.latents").float(), "text": f.get_tensor(f"{e['key']}.text").float(),
                "caption": e["caption"], "index": i}

    def null_text(self) -> torch.Tensor:
        """Token states (L0, D) of the empty prompt, as encoded when the cache was built."""
        if self._null is None:
            from safetensors.torch import load_file

            self._null = load_file(str(self.folder / "null.safetensors"))["text"].float()
        return self._null

    def collate(self, items: list[dict]) -> dict:
        """Stack a same-shape list: latents (B, C, f, h, w), text (B, L, D) right-padded with its
        mask (B, L), captions, the empty prompt's null_text (1, L0, D) / null_mask (1, L0), and
        the items' indices (for per-item data kept beside the cache, e.g. world-state targets)."""
        latents = torch.stack([it["latents"] for it in items])  # (B, C, f, h, w)
        length = max(it["text"].shape[0] for it in items)
        dim = items[0]["text"].shape[1]
        text = torch.zeros(len(items), length, dim)  # (B, L, D)
        mask = torch.zeros(len(items), length, dtype=torch.bool)  # (B, L)
        for b, it in enumerate(items):
            text[b, : it["text"].shape[0]] = it["text"]
            mask[b, : it["text"].shape[0]] = True
        null = self.null_text()
        return {"latents": latents, "text": text, "text_mask": mask, "captions": [it["caption"] for it in items],
                "null_text": null[None], "null_mask": torch.ones(1, null.shape[0], dtype=torch.bool),
                "indices": [int(it["index"]) for it in items]}

    def epoch(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        """The batches (index arrays) of one pass: each bucket shuffled and cut into full
        batches, then all batches shuffled together; a pure function of (seed, epoch)."""
        key = (batch_size, seed, epoch)
        if key not in self._epochs:
            rng = np.random.default_rng([seed, epoch])
            batches = []
            for shape in sorted(self.buckets):
                idx = rng.permutation(self.buckets[shape])
                batches += [idx[j:j + batch_size] for j in range(0, len(idx) - batch_size + 1, batch_size)]
            order = rng.permutation(len(batches))
            self._epochs = {key: [batches[j] for j in order]}  # keep one epoch in memory
        return self._epochs[key]

    def batches(self, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0) -> Iterator[dict]:
        """Endless collated batches; rank r's step s is global batch s * world_size + r, so any
        (rank, step) is reached directly (exact resume) and ranks never share a batch."""
        per_epoch = len(self.epoch(batch_size, seed, 0))
        if per_epoch == 0:
            largest = max(len(v) for v in self.buckets.values())
            raise UserError(f"batch size {batch_size} is larger than every bucket of the cache (largest: {largest})",
                            param="train.batch_size")
        step = start_step
        while True:
            g = step * world_size + rank
            idx = self.epoch(batch_size, seed, g // per_epoch)[g % per_epoch]
            yield self.collate([self[int(i)] for i in idx])
            step += 1
