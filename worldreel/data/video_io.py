"""Reading and writing videos and images: H.264 MP4 through PyAV, PNG/JPEG/GIF through Pillow.

Clips are tiny (64 px) with small flat-coloured objects, so the encoder runs at a low CRF
(12 by default, near-lossless): at the usual 23, chroma subsampling plus quantisation
bleed object colours into the sky and world-bench's colour segmentation would suffer.
Every write goes to a temporary name in the target folder and is renamed into place, so
no reader ever sees a half-written file. Unreadable input is a ``UserError`` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from worldreel.atomic import atomic_path
from worldreel.errors import UserError


def to_tensor(frames: np.ndarray):
    """uint8 frames (F, H, W, 3) -> float32 tensor (3, F, H, W) in [-1, 1]: the models' layout and scale."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (F,H,W,3) -> (3,F,H,W)


def to_frames(video) -> np.ndarray:
    """A tensor (3, F, H, W) in [-1, 1] (clamped) -> uint8 frames (F, H, W, 3): ``to_tensor``'s inverse."""
    return ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


def fit_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop uint8 frames (n, H, W, 3) to the aspect of ``size`` = (W, H), then resize to it (area
    filter when shrinking, cubic when enlarging): the one way pictures are fitted to a size."""
    import cv2

    width, height = size
    n, h, w, _ = frames.shape
    if (w, h) == (width, height):
        return frames
    # Crop the larger relative side so the aspect matches, keeping the centre.
    if w * height > h * width:
        crop_w = max(1, round(h * width / height))
        x0 = (w - crop_w) // 2
        frames = frames[:, :, x0 : x0 + crop_w]
    elif w * height < h * width:
        crop_h = max(1, round(w * height / width))
        y0 = (h - crop_h) // 2
        frames = frames[:, y0 : y0 + crop_h]
    shrink = frames.shape[2] >= width
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = [cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interp) for f in frames]
    return np.stack(out).astype(np.uint8)  # (n, height, width, 3)


def _frames(frames, param: str = "frames") -> np.ndarray:
    """Validate (F, H, W, 3) uint8 frames (a single (H, W, 3) frame becomes F = 1)."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise UserError(f"frames must be (F, H, W, 3), got shape {arr.shape}", param=param)
    if arr.dtype != np.uint8:
        raise UserError(f"frames must be uint8, got {arr.dtype}", param=param)
    return np.ascontiguousarray(arr)


def write_video(path, frames, fps: float = 8, *, crf: int = 12) -> Path:
    """Write uint8 (F, H, W, 3) frames as H.264 (yuv420p) MP4; H and W must be even."""
    import av

    arr = _frames(frames)
    _, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise UserError(f"H.264 with yuv420p needs even sizes, got {w}x{h}", param="frames")
    with atomic_path(path, ".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)) if float(fps).is_integer() else fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            # Keyframe every second so readers can seek; BT.601 tags match swscale's default matrix.
            stream.options = {"crf": str(int(crf)), "preset": "medium", "g": str(max(1, int(round(fps))))}
            stream.codec_context.color_range = 1  # limited ("tv") range, what swscale produces
            for frame in arr:
                packet = stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
                container.mux(packet)
            container.mux(stream.encode(None))
    return Path(path)


def read_video(path, *, param: str | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file to (uint8 (F, H, W, 3), fps); UserError naming the file when it cannot."""
    import av

    name = str(path)
    param = param or name
    if not Path(path).is_file():
        raise UserError(f"{name}: no such file", param=param)
    if Path(path).stat().st_size == 0:
        raise UserError(f"{name}: the file is empty", param=param)
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise UserError(f"{name}: has no video stream", param=param)
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 8)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except UserError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise UserError(f"{name}: not a readable video ({err.__class__.__name__}: {err})", param=param) from None
    if not frames:
        raise UserError(f"{name}: contains no frames", param=param)
    return np.stack(frames), fps


def read_image(path, *, param: str | None = None) -> np.ndarray:
    """Read a PNG/JPEG (or any Pillow format) as uint8 (H, W, 3) RGB."""
    from PIL import Image, UnidentifiedImageError

    name = str(path)
    param = param or name
    if not Path(path).is_file():
        raise UserError(f"{name}: no such file", param=param)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{name}: not a readable image ({err})", param=param) from None


def write_image(path, frame) -> Path:
    """Write one uint8 (H, W, 3) frame; the format follows the suffix (PNG, JPEG, ...)."""
    from PIL import Image

    arr = _frames(frame, "frame")
    if arr.shape[0] != 1:
        raise UserError(f"write_image takes one frame, got {arr.shape[0]}", param="frame")
    suffix = Path(path).suffix or ".png"
    with atomic_path(path, suffix) as tmp:
        Image.fromarray(arr[0]).save(tmp, format=Image.registered_extensions().get(suffix.lower(), "PNG"))
    return Path(path)


def write_gif(path, frames, fps: float = 8) -> Path:
    """Write frames as a looping GIF (for README figures and quick looks)."""
    from PIL import Image

    arr = _frames(frames)
    images = [Image.fromarray(f) for f in arr]
    with atomic_path(path, ".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                       loop=0, optimize=False)
    return Path(path)
