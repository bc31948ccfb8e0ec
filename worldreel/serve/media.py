"""Pictures around a generated video: fitting inputs to a size, thumbnails, sprite sheets.

Every file is written to a temporary name in its folder and renamed when complete
(``os.replace``), so a reader sees either the whole file or none.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from worldreel.atomic import write_bytes

SPRITE_FRAMES = 16  # frames shown in a sprite sheet, evenly spaced over the clip
SPRITE_COLUMNS = 4


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``frame`` (H, W, 3) uint8 to the aspect of ``size`` = (W, H), then resize to it."""
    from worldreel.data.video_io import fit_frames

    return fit_frames(frame[None], size)[0]


def encode_image(frame: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_png(path: Path, frame: np.ndarray) -> None:
    write_bytes(path, encode_image(frame, "PNG"), durable=True)


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def thumbnail(frames: np.ndarray) -> np.ndarray:
    """The middle frame of (F, H, W, 3): more of the motion is under way than in frame 0."""
    return frames[len(frames) // 2]


def spritesheet(frames: np.ndarray, count: int = SPRITE_FRAMES, columns: int = SPRITE_COLUMNS) -> np.ndarray:
    """Up to ``count`` evenly spaced frames tiled left to right, top to bottom: (rows*H, columns*W, 3)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int))
    columns = min(columns, len(picks))
    rows = math.ceil(len(picks) / columns)
    _, h, w, _ = frames.shape
    sheet = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for n, i in enumerate(picks):
        r, c = divmod(n, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = frames[i]
    return sheet


def read_frames(path: Path, size: tuple[int, int], fps: float, *, max_frames: int) -> np.ndarray:
    """Decode a video to uint8 (F, H, W, 3) at ``fps`` and ``size``, one frame at a time.

    Frames are resampled by timestamp (nearest) and fitted to ``size`` as they are decoded,
    so memory stays at ``max_frames`` frames of the target size whatever the file holds.
    """
    import av

    out: list[np.ndarray] = []
    t0: float | None = None  # the first frame's timestamp (encoders may not start at 0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else len(out) / fps
            t0 = t if t0 is None else t0
            t -= t0
            index = int(round(t * fps))  # output frame this picture lands on
            if index < len(out):
                continue  # a faster source: drop the extra frames
            picture = fit_frame(frame.to_ndarray(format="rgb24"), size)
            while len(out) <= index and len(out) < max_frames:  # a slower source: hold frames
                out.append(picture)
            if len(out) >= max_frames:
                break
    if not out:
        raise ValueError(f"{path.name} holds no video frames")
    return np.stack(out)
