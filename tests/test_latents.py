"""Latent cache: shards, buckets, resume after a stop, deterministic bucketed batches.

The autoencoder and text encoder are stand-ins built here (a fixed pooling + projection,
a hashed word table), injected as callables like the real VideoVAE.encode / TextEncoder.
"""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worldreel.data.latents import LatentCache, build_cache
from worldreel.errors import UserError

C, D = 4, 8  # latent channels, text width


class ToyVAE:
    """Causal 4x time, 8x space compression: frame 0 alone, then groups of 4 frames."""

    def __init__(self):
        self.proj = torch.randn(C, 3, generator=torch.Generator().manual_seed(1))
        self.seen = 0

    def __call__(self, video):  # (B, 3, F, H, W) -> (B, C, 1 + (F-1)/4, H/8, W/8)
        self.seen += video.shape[0]
        first = video[:, :, :1]
        rest = video[:, :, 1:]
        pooled = [F.avg_pool3d(first, (1, 8, 8))]
        if rest.shape[2]:
            pooled.append(F.avg_pool3d(rest, (4, 8, 8)))
        z = torch.cat(pooled, dim=2)  # (B, 3, f, h, w)
        return torch.einsum("cd,bdfhw->bcfhw", self.proj, z)


def toy_text(prompts):
    """Each word a fixed random vector; (B, L, D) right-padded, mask (B, L)."""
    rows = [[torch.randn(D, generator=torch.Generator().manual_seed(zlib.crc32(w.encode()))) for w in p.split()]
            or [torch.zeros(D)] for p in prompts]
    length = max(len(r) for r in rows)
    states, mask = torch.zeros(len(rows), length, D), torch.zeros(len(rows), length, dtype=torch.bool)
    for b, r in enumerate(rows):
        states[b, :len(r)] = torch.stack(r)
        mask[b, :len(r)] = True
    return states, mask


class Items:
    """Indexable synthetic clips in 3 buckets: 16x16 with 5 frames, 16x32 with 9, 1-frame images."""

    def __init__(self, n):
        self.n = n
        self.drawn = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.drawn.append(i)
        rng = np.random.default_rng(i)
        frames, (w, h) = [(5, (16, 16)), (9, (32, 16)), (1, (16, 16))][i % 3]
        video = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
        return {"video": video, "caption": " ".join(["red", "ball", "falls"][: 1 + i % 3]) + f" n{i}", "seed": i}


def _build(out, items, count, vae=None, **kw):
    return build_cache(out, items, count=count, encode_video=vae or ToyVAE(), encode_text=toy_text,
                       shard_size=4, batch_size=2, meta={"model": "toy"}, progress=False, **kw)


def test_cache_contents_match_direct_encoding(tmp_path):
    info = _build(tmp_path, Items(7), 7)
    assert info["complete"] and info["items"] == 7 and sorted(info["buckets"]) == ["4x1x2x2", "4x2x2x2", "4x3x2x4"]
    cache = LatentCache(tmp_path)
    assert len(cache) == 7 and sorted(p.name for p in tmp_path.glob("shard_*")) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    vae, items = ToyVAE(), Items(7)
    for i in range(7):
        item = items[i]
        video = torch.from_numpy(item["video"]).permute(3, 0, 1, 2).float()[None] / 127.5 - 1  # (1, 3, F, H, W)
        want = vae(video)[0]
        got = cache[i]
        assert got["latents"].shape == want.shape
        torch.testing.assert_close(got["latents"], want, rtol=2e-3, atol=2e-3)  # stored fp16
        states, mask = toy_text([item["caption"]])
        assert got["text"].shape == (int(mask.sum()), D)  # unpadded real tokens
        torch.testing.assert_close(got["text"], states[0, mask[0]], rtol=2e-3, atol=2e-3)
        assert got["caption"] == item["caption"] and cache.entries[i]["seed"] == i
    assert cache.null_text().shape == (1, D)


def _shards(folder):
    """{shard name: (tensors, metadata with the items parsed)}: the content, not the bytes
    (safetensors writes metadata keys in no fixed order)."""
    from safetensors import safe_open

    out = {}
    for p in sorted(folder.glob("shard_*")):
        with safe_open(str(p), framework="pt") as f:
            md = dict(f.metadata())
            md["items"] = json.loads(md["items"])
            out[p.name] = ({k: f.get_tensor(k) for k in f.keys()}, md)
    return out


def test_resume_skips_finished_shards_and_extends(tmp_path):
    _build(tmp_path, Items(10), 10)
    reference = _shards(tmp_path)
    # A stop mid-shard: shard 1 lost, a temp file left behind, the cache marked unfinished.
    (tmp_path / "shard_00001.safetensors").unlink()
    (tmp_path / ".shard_00001.safetensors.123.tmp").write_bytes(b"partial")
    info = json.loads((tmp_path / "cache.json").read_text())
    (tmp_path / "cache.json").write_text(json.dumps({**info, "complete": False}))
    partial = LatentCache(tmp_path)  # an unfinished cache is readable: its finished shards
    assert [e["key"] for e in partial.entries] == [f"{i:08d}" for i in (0, 1, 2, 3, 8, 9)]
    items, vae = Items(10), ToyVAE()
    _build(tmp_path, items, 10, vae=vae)
    assert sorted(items.drawn) == [4, 5, 6, 7] and vae.seen == 4  # only the lost shard was redone
    again = _shards(tmp_path)
    assert again.keys() == reference.keys()
    for name, (tensors, md) in reference.items():
        assert again[name][1] == md and again[name][0].keys() == tensors.keys()
        assert all(torch.equal(again[name][0][k], v) for k, v in tensors.items())
    assert not list(tmp_path.glob(".*.tmp"))
    # More items: the partial last shard is completed, a new one added.
    items = Items(14)
    info = _build(tmp_path, items, 14)
    assert sorted(items.drawn) == [8, 9, 10, 11, 12, 13] and info["items"] == 14
    assert [e["key"] for e in LatentCache(tmp_path).entries] == [f"{i:08d}" for i in range(14)]
    with pytest.raises(UserError) as err:  # other settings into the same folder
        build_cache(tmp_path, Items(14), count=14, encode_video=ToyVAE(), encode_text=toy_text, shard_size=4,
                    meta={"model": "other"}, progress=False)
    assert err.value.param == "out"


def test_stream_source_that_ends_early(tmp_path):
    def stream():
        items = Items(6)
        for i in range(6):
            yield items[i]

    info = _build(tmp_path, stream(), 100)
    assert info["complete"] and info["items"] == 6
    again = _build(tmp_path, stream(), None)  # rerun, "until the source ends": nothing to do
    assert again["items"] == 6
    assert len(LatentCache(tmp_path)) == 6


def test_bucketed_batches_are_deterministic_split_by_rank_and_resumable(tmp_path):
    _build(tmp_path, Items(24), 24)
    cache = LatentCache(tmp_path)
    it = cache.batches(3, seed=5)
    first = [next(it) for _ in range(6)]
    for b in first:
        assert b["latents"].shape[0] == 3 and b["text"].shape[:2] == b["text_mask"].shape
        assert b["null_text"].shape == (1, 1, D) and b["null_mask"].all()
        lengths = b["text_mask"].sum(1)
        for row, n in zip(b["text_mask"], lengths):  # right padding
            assert row[:n].all() and not row[n:].any()
    # One epoch = 24 / 3 = 8 batches (each bucket holds 8 items -> 2 full batches + 2 left over).
    epoch_items = [int(i) for batch in cache.epoch(3, 5, 0) for i in batch]
    assert len(cache.epoch(3, 5, 0)) == 6 and len(set(epoch_items)) == 18
    # Resume: start_step=4 gives the 5th batch; a new reader gives the same batches.
    again = next(LatentCache(tmp_path).batches(3, seed=5, start_step=4))
    assert again["captions"] == first[4]["captions"] and torch.equal(again["latents"], first[4]["latents"])
    # Two ranks: interleaved global batches, never the same one.
    r0 = cache.batches(3, seed=5, rank=0, world_size=2)
    r1 = cache.batches(3, seed=5, rank=1, world_size=2)
    pairs = [(next(r0)["captions"], next(r1)["captions"]) for _ in range(3)]
    assert [c for pair in pairs for c in pair] == [b["captions"] for b in first]
    with pytest.raises(UserError) as err:
        next(cache.batches(9, seed=0))
    assert err.value.param == "train.batch_size"


class SceneItems(Items):
    """Items whose facts list 1, 2 or 3 objects (i % 3 + 1), as reel-world items do."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["facts"] = {"objects": [{"shape": "ball"}] * (1 + i % 3)}
        return item


def test_repeat_multi_oversamples_multi_object_items(tmp_path):
    _build(tmp_path, SceneItems(12), 12)
    plain = LatentCache(tmp_path)
    assert sorted(int(i) for b in plain.epoch(1, 3, 0) for i in b) == list(range(12))
    twice = LatentCache(tmp_path, repeat_multi=2)
    drawn = [int(i) for b in twice.epoch(1, 3, 0) for i in b]
    counts = {i: drawn.count(i) for i in range(12)}
    assert counts == {i: 1 if i % 3 == 0 else 2 for i in range(12)}  # one object: once; two or three: twice
    again = next(LatentCache(tmp_path, repeat_multi=2).batches(2, seed=3, start_step=5))  # still resumable
    assert again["captions"] == [twice[int(i)]["caption"] for i in twice.epoch(2, 3, 0)[5]]
    for bad in (0, 17, 1.5, True):
        with pytest.raises(UserError) as err:
            LatentCache(tmp_path, repeat_multi=bad)
        assert err.value.param == "task.repeat_multi"


def test_not_a_cache_is_a_clear_error(tmp_path):
    with pytest.raises(UserError) as err:
        LatentCache(tmp_path)
    assert err.value.param == "data"


def test_world_items_when_the_world_is_available():
    pytest.importorskip("worldreel.data.render")
    from worldreel.data.latents import WorldItems

    items = WorldItems(2, sizes=[(64, 64)], seconds=[0.0, 1.0], seed=3)
    a, b = items[0], items[1]
    for item in (a, b):
        assert item["video"].dtype == np.uint8 and item["video"].shape[1:] == (64, 64, 3)
        assert item["video"].shape[0] in (1, 9) and item["caption"] and json.dumps(item["facts"])
    assert items[0]["caption"] == a["caption"]  # a pure function of (seed, i)
