"""What a file carries: the watermark detector's verdict and the C2PA manifest's state, in one dict.

Shared by ``worldreel detect`` and the service's ``POST /v1/videos/detect``.
"""
from __future__ import annotations

from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def inspect_file(path: str | Path, data_dir: str | Path | None = None) -> dict:
    """Detect the watermark in a video or image file and verify its manifest."""
    from worldreel.data import video_io
    from worldreel.errors import UserError
    from worldreel.safety import provenance, watermark

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file", param="file")
    if path.suffix.lower() in IMAGE_EXTS:
        frames = video_io.read_image(path, param="file")[None]  # (1, H, W, 3)
    else:
        frames = video_io.read_video(path, param="file")[0]
    found = watermark.detect(frames, key=watermark.load_key(data_dir))
    state = provenance.verify(path, folder=data_dir)
    return {"file": str(path), "ours": found.marked, "score": round(found.score, 4), "p_value": found.p_value,
            "threshold": watermark.THRESHOLD, "payload": found.payload, "frames": int(len(frames)),
            "geometry": {"scale": round(found.geometry[0], 4), "x": found.geometry[1], "y": found.geometry[2]},
            "provenance": {"state": state.state, "action": state.action, "generation": state.generation,
                           "errors": state.errors}}
