"""Training clips from a user's own videos: (video, caption) pairs -> bucketed clips.

Sources (``list_items``):
- a folder: every video (mp4, mov, mkv, webm, avi, m4v) and image (png, jpg, jpeg, webp, bmp)
  under it, captioned by a ``captions.jsonl`` in the folder (``{"file": "a.mp4", "caption": ...}``,
  the reel world's own format) or by a sidecar text file (``a.mp4`` + ``a.txt``);
- a JSONL file: one ``{"video": "path", "caption": "..."}`` per line (``"file"`` also
  accepted), paths relative to the JSONL's folder.

Each video (``iter_clips``) is decoded once with PyAV and
1. resampled to ``fps`` and resized to cover the size bucket nearest its aspect ratio, then
   centre-cropped (no letterboxing, no distortion);
2. split at scene cuts found by PySceneDetect's ContentDetector on small copies of every
   source frame, so no clip spans a cut;
3. cut into consecutive clips of the longest length bucket that still fits the scene;
4. filtered by motion (``motion_score``): OpenCV Farneback flow where frames really differ,
   98th percentile, pixels per frame at a 64-pixel-high copy, averaged over frame pairs,
   must reach ``min_motion`` (a small object moving on a still background passes; a still
   shot with sensor or codec noise does not).
Images become 1-frame items in the same size buckets. A file that cannot be read (corrupt,
truncated, no video stream, no caption) is skipped and recorded in the ``DataReport``:
never fatal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from worldreel.atomic import read_jsonl
from worldreel.data.video_io import fit_frames
from worldreel.errors import UserError

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
ANALYSIS_HEIGHT = 64  # motion is measured on copies this many pixels high
DETECT_WIDTH = 128  # scene cuts are detected on copies this many pixels wide
NOISE_LEVEL = 4  # grey levels: smaller frame differences (after a 5x5 blur) are noise, not motion


@dataclass
class VideoDataConfig:
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(64, 64)])  # (W, H) buckets; nearest aspect wins
    frames: list[int] = field(default_factory=lambda: [9, 17, 33])  # clip length buckets (frames at ``fps``, >= 2)
    fps: float = 8.0  # clips are resampled to this frame rate (the world model's)
    cut_threshold: float = 27.0  # ContentDetector threshold (PySceneDetect's default)
    min_scene_frames: int = 4  # source frames between two cuts at least (flashes are not scenes)
    min_motion: float = 0.2  # pixels/frame at 64 px height; clips below are dropped (0 keeps all)
    max_clips_per_scene: int = 8  # consecutive clips taken from one scene at most
    images: bool = True  # still images in a folder become 1-frame items


@dataclass
class DataReport:
    files: int = 0  # files looked at
    clips: int = 0  # clips and images produced
    static: int = 0  # clips dropped by the motion filter
    short: int = 0  # scenes shorter than the shortest length bucket
    scenes: int = 0  # scenes found in the videos read
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) for every unreadable file

    def summary(self) -> str:
        lines = [f"{self.files} files -> {self.clips} clips from {self.scenes} scenes "
                 f"({self.static} clips without motion dropped, {self.short} scenes too short)"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


def check_config(cfg: VideoDataConfig) -> VideoDataConfig:
    if not cfg.sizes or any(w <= 0 or h <= 0 for w, h in cfg.sizes):
        raise UserError(f"sizes must be positive (W, H) pairs, got {cfg.sizes}", param="sizes")
    if not cfg.frames or min(cfg.frames) < 2:
        raise UserError(f"clip lengths must be at least 2 frames (images come from image files), got {cfg.frames}", param="frames")
    if cfg.fps <= 0:
        raise UserError(f"fps must be positive, got {cfg.fps}", param="fps")
    return cfg


def list_items(source: str | Path, report: DataReport | None = None) -> list[tuple[Path, str]]:
    """(media file, caption) pairs of a folder or JSONL source, in a stable order."""
    source = Path(source)
    report = report if report is not None else DataReport()
    if source.is_file():
        def skip(n: int, why: str) -> None:
            report.skipped.append((f"{source}:{n}", f"bad line ({why})"))

        items = []
        for n, row in read_jsonl(source, bad=skip):
            if not isinstance(row, dict):
                row = {}
            path, caption = row.get("video", row.get("file")), row.get("caption")
            if not isinstance(path, str) or not isinstance(caption, str):
                skip(n, "needs text 'video' and 'caption'")
                continue
            items.append((source.parent / path, caption))
        return items
    if not source.is_dir():
        raise UserError(f"{source} is neither a folder of videos nor a JSONL file", param="videos")
    captions = {}
    index = source / "captions.jsonl"
    if index.exists():
        for row_path, caption in list_items(index, report):
            captions[row_path.resolve()] = caption
    items = []
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTS | IMAGE_EXTS):
        caption = captions.get(path.resolve())
        sidecar = path.with_suffix(".txt")
        if caption is None and sidecar.exists():
            caption = sidecar.read_text().strip()
        if not caption:
            report.files += 1
            report.skipped.append((str(path), "no caption (captions.jsonl entry or sidecar .txt)"))
            continue
        items.append((path, caption))
    return items


def nearest_size(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to width/height (on a log scale; larger wins ties)."""
    aspect = math.log(width / height)
    return min(sizes, key=lambda s: (round(abs(math.log(s[0] / s[1]) - aspect), 6), -s[0] * s[1]))


def motion_score(frames: np.ndarray, max_pairs: int = 8) -> float:
    """Motion of a clip uint8 (F, H, W, 3), in pixels per frame on a copy ANALYSIS_HEIGHT high.

    For (up to ``max_pairs`` evenly spaced) consecutive frame pairs: Farneback flow on blurred
    grey copies, kept only where the frames really differ (blurred difference above
    NOISE_LEVEL grey levels, dilated): flow in flat areas is noise-driven, and that gate is
    what keeps a still shot with sensor noise at 0. The pair's score is the 98th percentile
    of that magnitude, so an object covering a few percent of the frame counts; the clip's
    score is the mean over pairs (0 for a single frame).
    """
    import cv2

    if len(frames) < 2:
        return 0.0
    h, w = frames.shape[1:3]
    size = (max(8, round(w * ANALYSIS_HEIGHT / h)), ANALYSIS_HEIGHT)
    gray = [cv2.GaussianBlur(cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY), (5, 5), 0)
            for f in frames]  # F x (64, w')
    starts = np.unique(np.linspace(0, len(gray) - 2, min(max_pairs, len(gray) - 1)).round().astype(int))
    kernel = np.ones((5, 5), np.uint8)
    scores = []
    for i in starts:
        flow = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, 0.5, 3, 15, 3, 5, 1.1, 0)  # (h, w, 2)
        changed = cv2.dilate((cv2.absdiff(gray[i], gray[i + 1]) > NOISE_LEVEL).astype(np.uint8), kernel) > 0
        scores.append(float(np.percentile(np.linalg.norm(flow, axis=2) * changed, 98)))
    return float(np.mean(scores))


def split_scene(n: int, lengths: list[int], max_clips: int) -> list[tuple[int, int]]:
    """Consecutive (start, length) windows over ``n`` frames, each the longest bucket that fits."""
    out, pos = [], 0
    for _ in range(max_clips):
        fits = [k for k in lengths if k <= n - pos]
        if not fits:
            break
        out.append((pos, max(fits)))
        pos += max(fits)
    return out


def _decode_scenes(path: Path, cfg: VideoDataConfig) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Decode a video once: its scenes as uint8 (F, H, W, 3) arrays at ``cfg.fps`` in its size bucket."""
    import av
    import cv2
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.detector import FlashFilter

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = float(stream.average_rate or stream.guessed_rate or 25)
        size = None
        detector = ContentDetector(threshold=cfg.cut_threshold, min_scene_len=cfg.min_scene_frames,
                                   filter_mode=FlashFilter.Mode.SUPPRESS)
        scenes: list[list[np.ndarray]] = [[]]
        next_t = 0.0  # time of the next output frame, seconds from the first frame
        t0 = None
        for index, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if size is None:
                size = nearest_size(rgb.shape[1], rgb.shape[0], cfg.sizes)
            # A cut starts a new scene at this source frame (SUPPRESS mode reports it at once).
            small = cv2.resize(rgb, (DETECT_WIDTH, max(8, round(rgb.shape[0] * DETECT_WIDTH / rgb.shape[1]))))
            if detector.process_frame(FrameTimecode(index, src_fps), small[:, :, ::-1].copy()) and scenes[-1]:
                scenes.append([])
            t = frame.time if frame.time is not None else index / src_fps
            t0 = t if t0 is None else t0
            if t - t0 + 1e-6 >= next_t:
                scenes[-1].append(fit_frames(rgb[None], size)[0])
                next_t += 1.0 / cfg.fps
        if size is None:
            raise ValueError("no video frames")
    return [np.stack(s) for s in scenes if s], size


def iter_clips(source: str | Path, cfg: VideoDataConfig | None = None, report: DataReport | None = None,
               *, progress: bool = False) -> Iterator[dict]:
    """Clips of a folder or JSONL of (video, caption) pairs, in a stable order:
    ``{"video": uint8 (F, H, W, 3), "caption": str, "source": str, "start": float seconds,
    "motion": float, "size": [W, H]}``. ``report`` collects counts and skipped files."""
    from tqdm import tqdm

    cfg = check_config(cfg or VideoDataConfig())
    report = report if report is not None else DataReport()
    items = list_items(source, report)
    for path, caption in tqdm(items, desc="videos", unit="file", disable=not progress):
        report.files += 1
        if path.suffix.lower() in IMAGE_EXTS:
            if not cfg.images:
                continue
            try:
                from PIL import Image

                with Image.open(path) as im:
                    rgb = np.asarray(im.convert("RGB"))
            except Exception as err:  # unreadable image: reported, never fatal
                report.skipped.append((str(path), f"unreadable image ({err})"))
                continue
            size = nearest_size(rgb.shape[1], rgb.shape[0], cfg.sizes)
            report.clips += 1
            yield {"video": fit_frames(rgb[None], size), "caption": caption, "source": str(path), "start": 0.0,
                   "motion": 0.0, "size": list(size)}
            continue
        try:
            scenes, size = _decode_scenes(path, cfg)
        except Exception as err:  # corrupt, truncated, unsupported: reported, never fatal
            report.skipped.append((str(path), f"unreadable video ({type(err).__name__}: {err})"))
            continue
        offset = 0
        for frames in scenes:
            report.scenes += 1
            windows = split_scene(len(frames), cfg.frames, cfg.max_clips_per_scene)
            if not windows:
                report.short += 1
            for start, length in windows:
                clip = frames[start:start + length]
                motion = motion_score(clip)
                if motion < cfg.min_motion:
                    report.static += 1
                    continue
                report.clips += 1
                yield {"video": clip, "caption": caption, "source": str(path), "start": (offset + start) / cfg.fps,
                       "motion": motion, "size": list(size)}
            offset += len(frames)
