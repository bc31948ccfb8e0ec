"""The invisible watermark: error correction, detection on marked vs clean clips, invisibility, the key."""
import os
import stat

import numpy as np
import pytest

from worldreel.data.video_io import read_video, write_video
from worldreel.errors import UserError
from worldreel.eval import watermark_bench as wb
from worldreel.safety import watermark as W

KEY = bytes(range(32))


def test_convolutional_code_corrects_errors():
    rng = np.random.default_rng(0)
    for payload in (0, 1, 2**32 - 1, 0xDEADBEEF):
        coded = W.encode_payload(payload)
        assert coded.shape == (W.CODED_BITS,)
        soft = 1.0 - 2.0 * coded
        assert int("".join(map(str, W.viterbi(soft)[:32])), 2) == payload
        flipped = soft.copy()
        flipped[rng.choice(len(soft), 6, replace=False)] *= -1  # 6 hard errors, well spread by chance
        flipped[::17] *= 0.1  # and a few erasures
        bits = W.viterbi(flipped)
        assert int("".join(map(str, bits[:32])), 2) == payload
        assert np.array_equal(W._crc8(bits[:32]), bits[32:])


def test_bad_payload_is_a_user_error():
    with pytest.raises(UserError) as err:
        W.payload_bits(2**32)
    assert err.value.param == "payload"


def _written(tmp_path, frames, name):
    write_video(tmp_path / name, frames, 8)  # the way every output is written (CRF 12)
    return read_video(tmp_path / name)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_detects_marked_clip_not_clean_one(tmp_path, seed):
    clip = wb.true_clip(seed)  # the reel world's own render: the hardest negative
    payload = 0x1234ABCD + seed
    marked = _written(tmp_path, W.embed(clip, payload, key=KEY), "marked.mp4")
    clean = _written(tmp_path, clip, "clean.mp4")
    found, none = W.detect(marked, key=KEY), W.detect(clean, key=KEY)
    assert found.marked and found.payload == payload and found.p_value < 1e-12
    assert not none.marked and none.score < W.THRESHOLD and none.p_value > 1e-6
    # another key finds nothing in the marked clip
    assert not W.detect(marked, key=b"another key 0123456789abcdefghij").marked
    # the attacks, one each
    assert W.detect(wb.h264(marked, 28), key=KEY).marked
    assert W.detect(wb.resize_half(marked), key=KEY).marked
    cropped = W.detect(wb.crop_resize(marked, 0.9, np.random.default_rng(seed)), key=KEY)
    assert cropped.marked and cropped.geometry[0] > 1.0  # found by the crop search
    assert W.detect(wb.brightness(marked, 0.7), key=KEY).payload == payload
    assert W.detect(marked[::2], key=KEY).payload == payload
    assert W.detect(wb.h264(marked, 23), key=KEY).payload == payload


def test_mark_is_within_two_levels_on_flat_regions():
    clip = wb.true_clip(3)
    marked = W.embed(clip, 7, key=KEY)
    row = wb._invisibility(clip, marked, clip, marked)
    assert row["flat_max_change"] <= 2.0
    assert row["psnr"] >= 38.0
    # luma only: R, G and B move together wherever nothing clipped
    diff = marked.astype(int) - clip.astype(int)
    inside = (clip > 3).all(-1) & (clip < 252).all(-1)
    assert (diff[..., 0] == diff[..., 1])[inside].all() and (diff[..., 1] == diff[..., 2])[inside].all()


def test_other_sizes_and_bad_frames():
    frames = wb.true_clip(4)
    big = np.repeat(np.repeat(frames[:9], 2, axis=1), 2, axis=2)  # 128 px: 4-px cells
    assert W.detect(W.embed(big, 99, key=KEY), key=KEY).payload == 99
    with pytest.raises(UserError):
        W.embed(frames.astype(np.float32), 1, key=KEY)
    with pytest.raises(UserError):
        W.detect(frames[:, :8, :8], key=KEY)


def test_key_made_once_private_and_reused(tmp_path):
    key = W.load_key(tmp_path / "data")
    path = tmp_path / "data" / W.KEY_FILE
    assert len(key) == 32 and W.load_key(tmp_path / "data") == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert W.load_key(tmp_path / "other") != key
    path.write_text("not hex\n")
    with pytest.raises(UserError):
        W.load_key(tmp_path / "data")


def test_bench_counts_on_true_renders(tmp_path):
    cfg = wb.BenchConfig(generated=0, true=2, null=1)
    result = wb.run(cfg, tmp_path / "out", tmp_path / "cache", key=KEY, log=lambda m: None)
    table = result["attacks"]
    assert table["none | true"]["clips"] == 2 and table["none | true"]["detected"] == 1.0
    assert table["none | true"]["clean_scores"] == 3 and table["none | true"]["false_positives"] == 0
    assert result["null"]["scores"] == 3 * len(wb.attacks(np.random.default_rng(0)))
    again = wb.run(cfg, tmp_path / "out", tmp_path / "cache", key=KEY, log=lambda m: None)  # resumes: nothing redone
    assert again == result
    assert len((tmp_path / "out" / "rows.jsonl").read_text().splitlines()) == 3
    assert "crop 90 % + resize" in wb.format_table(result)
