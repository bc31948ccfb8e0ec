"""Video and image IO: H.264 round trip, atomic writes, clear errors naming the file."""
import numpy as np
import pytest
from PIL import Image

from worldreel.data.render import render_clip
from worldreel.data.video_io import read_image, read_video, write_gif, write_image, write_video
from worldreel.data.world import sample_scene
from worldreel.errors import UserError


def test_mp4_round_trip_is_close(tmp_path):
    frames = render_clip(sample_scene(4))  # (33, 64, 64, 3): small flat-coloured objects
    path = write_video(tmp_path / "clip.mp4", frames, fps=8)
    back, fps = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8 and fps == 8
    err = np.abs(back.astype(int) - frames.astype(int))
    assert err.mean() < 3.0  # crf 12: near-lossless apart from chroma subsampling at edges
    assert (err.max(-1) > 40).mean() < 0.03
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary file left behind
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "libx264") and stream.codec_context.pix_fmt == "yuv420p"


def test_other_sizes_and_a_single_frame(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (1, 32, 48, 3), dtype=np.uint8), 4, axis=0)
    back, _ = read_video(write_video(tmp_path / "a.mp4", frames, fps=8, crf=0))
    assert back.shape == (4, 32, 48, 3)
    one, _ = read_video(write_video(tmp_path / "b.mp4", frames[0]))
    assert one.shape == (1, 32, 48, 3)


def test_bad_frames_write_nothing(tmp_path):
    target = tmp_path / "odd.mp4"
    for bad in [np.zeros((2, 33, 64, 3), np.uint8), np.zeros((2, 64, 64), np.uint8), np.zeros((2, 64, 64, 3), np.float32)]:
        with pytest.raises(UserError) as err:
            write_video(target, bad)
        assert err.value.param == "frames"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, words", [(None, "no such file"), (b"", "empty"), (b"not a video " * 50, "not a readable video")])
def test_unreadable_videos_name_the_file(tmp_path, content, words):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_video(path)
    assert str(path) in str(err.value) and words in str(err.value)
    assert err.value.param == str(path)
    with pytest.raises(UserError) as err:
        read_video(path, param="video")
    assert err.value.param == "video"


def test_images_and_gifs(tmp_path):
    frames = render_clip(sample_scene(2))
    png = write_image(tmp_path / "f.png", frames[0])
    np.testing.assert_array_equal(read_image(png), frames[0])  # PNG is lossless
    jpg = write_image(tmp_path / "f.jpg", frames[0])
    assert np.abs(read_image(jpg).astype(int) - frames[0]).mean() < 8
    gif = write_gif(tmp_path / "c.gif", frames[:5], fps=8)
    with Image.open(gif) as img:
        assert img.n_frames == 5 and img.info["duration"] in (120, 130)  # GIF stores centiseconds
    (tmp_path / "bad.png").write_text("nope")
    for path in [tmp_path / "bad.png", tmp_path / "missing.png"]:
        with pytest.raises(UserError) as err:
            read_image(path)
        assert str(path) in str(err.value)
    with pytest.raises(UserError):
        write_image(tmp_path / "two.png", frames[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "c.gif", "f.jpg", "f.png"]


def test_written_files_follow_the_umask(tmp_path):
    """A finished video gets the mode any new file gets (not mkstemp's private 0600)."""
    import os

    old = os.umask(0o022)
    try:
        path = write_video(tmp_path / "shared.mp4", render_clip(sample_scene(1))[:5])
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_video(tmp_path / "private.mp4", render_clip(sample_scene(1))[:5]).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
