"""User videos -> clips: scene cuts, motion filter, buckets, corrupt files skipped and reported."""
from __future__ import annotations

import json

import numpy as np
import pytest

from worldreel.data.datasets import (
    DataReport,
    VideoDataConfig,
    iter_clips,
    motion_score,
    nearest_size,
    split_scene,
)
from worldreel.data.video_io import fit_frames, to_tensor
from worldreel.errors import UserError

SRC_FPS, W, H = 16, 80, 48  # the source videos: 16 fps, 80x48 (aspect 5:3)
BG_A, BG_B = (20, 30, 120), (200, 190, 40)


def _write_mp4(path, frames, fps=SRC_FPS):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "12"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _scene(n, bg, fg, speed):
    """n frames: a square moving ``speed`` px/frame over a flat background with a few stripes."""
    frames = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        frames[i] = bg
        frames[i, :, ::16] = 80  # texture, so a static shot is not flat
        x = int(10 + speed * i) % (W - 12)
        frames[i, 18:30, x:x + 12] = fg
    return frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    cut = np.concatenate([_scene(32, BG_A, (230, 40, 40), 1.5), _scene(32, BG_B, (40, 200, 70), -1.5)])
    _write_mp4(root / "cut.mp4", cut)
    _write_mp4(root / "static.mp4", _scene(32, BG_A, (230, 40, 40), 0.0))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    _write_mp4(root / "uncaptioned.mp4", _scene(8, BG_A, (0, 0, 0), 1.0))
    from PIL import Image

    Image.fromarray(_scene(1, BG_B, (0, 0, 255), 0)[0]).save(root / "still.png")
    rows = [{"file": n, "caption": f"caption of {n}"} for n in ("cut.mp4", "static.mp4", "corrupt.mp4", "still.png")]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_folder_split_at_cuts_motion_filtered_corrupt_reported(folder):
    cfg = VideoDataConfig(sizes=[(64, 64), (96, 64)], frames=[5, 9], fps=8, min_motion=0.2)
    report = DataReport()
    clips = list(iter_clips(folder, cfg, report))  # must not raise on the corrupt file

    by_source = {}
    for c in clips:
        by_source.setdefault(c["source"].rsplit("/", 1)[-1], []).append(c)
    # The cut video: 16 output frames per scene -> a 9-frame and a 5-frame clip in each scene.
    cut = by_source["cut.mp4"]
    assert [c["video"].shape for c in cut] == [(9, 64, 96, 3), (5, 64, 96, 3)] * 2
    assert [c["start"] for c in cut] == [0.0, 9 / 8, 2.0, 2.0 + 9 / 8]
    for c in cut:  # no clip straddles the cut: every frame has the same background
        corners = c["video"][:, 2, 3].astype(int)  # (F, 3) top-left-ish pixel of each frame
        first = corners[0]
        assert np.abs(corners - first).max() < 25
        assert min(np.abs(first - BG_A).max(), np.abs(first - BG_B).max()) < 25
        assert c["motion"] >= 0.2 and c["caption"] == "caption of cut.mp4"
    # The static video yields nothing: both its clips fail the motion filter.
    assert "static.mp4" not in by_source and report.static == 2
    # The image is a 1-frame item in its nearest-aspect bucket.
    assert by_source["still.png"][0]["video"].shape == (1, 64, 96, 3)
    # Corrupt and uncaptioned files are skipped and named, with a reason.
    skipped = {path.rsplit("/", 1)[-1]: why for path, why in report.skipped}
    assert set(skipped) == {"corrupt.mp4", "uncaptioned.mp4"}
    assert "unreadable video" in skipped["corrupt.mp4"] and "no caption" in skipped["uncaptioned.mp4"]
    assert report.clips == len(clips) == 5 and report.scenes == 3 and report.files == 5
    assert "corrupt.mp4" in report.summary()


def test_jsonl_source_with_missing_file_and_bad_line(folder, tmp_path):
    index = tmp_path / "list.jsonl"
    index.write_text(
        json.dumps({"video": str(folder / "cut.mp4"), "caption": "a cut"}) + "\n"
        + "{not json\n"
        + json.dumps({"video": "missing.mp4", "caption": "gone"}) + "\n"
    )
    report = DataReport()
    clips = list(iter_clips(index, VideoDataConfig(frames=[9], min_motion=0.0), report))
    assert len(clips) == 2 and clips[0]["video"].shape == (9, 64, 64, 3)  # one 9-frame clip per scene
    assert len(report.skipped) == 2
    with pytest.raises(UserError) as err:
        list(iter_clips(tmp_path / "nowhere", VideoDataConfig()))
    assert err.value.param == "videos"


def test_motion_score_separates_moving_from_still():
    moving = _scene(6, BG_A, (230, 40, 40), 3.0)
    still = _scene(6, BG_A, (230, 40, 40), 0.0)
    noisy = np.clip(still.astype(int) + np.random.default_rng(0).integers(-3, 4, still.shape), 0, 255).astype(np.uint8)
    assert motion_score(moving) > 1.0
    slow = _scene(6, BG_A, (230, 40, 40), 0.5)
    assert motion_score(still) < 0.01 and motion_score(noisy) < 0.05 and 0.3 < motion_score(slow) < 0.8
    assert motion_score(moving[:1]) == 0.0


def test_buckets_and_crops():
    assert nearest_size(1920, 1080, [(64, 64), (112, 64), (64, 112)]) == (112, 64)
    assert nearest_size(720, 1280, [(64, 64), (112, 64), (64, 112)]) == (64, 112)
    frame = np.zeros((48, 80, 3), np.uint8)
    frame[:, 40:] = 255  # right half white: the centre crop keeps the boundary in the middle
    out = fit_frames(frame[None], (64, 64))[0]
    assert out.shape == (64, 64, 3) and out[:, :28].max() == 0 and out[:, 36:].min() == 255
    assert split_scene(16, [5, 9], 8) == [(0, 9), (9, 5)]
    assert split_scene(4, [5, 9], 8) == []
    assert split_scene(40, [9], 2) == [(0, 9), (9, 9)]
    t = to_tensor(np.full((2, 4, 4, 3), 255, np.uint8))
    assert t.shape == (3, 2, 4, 4) and float(t.min()) == 1.0
