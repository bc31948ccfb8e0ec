"""Known frames as data: every generation mode is "which frames are given".

A ``Condition`` is a run of given pixel frames placed at a frame index of the output
video. Text-to-video gives none; image-to-video gives frame 0; extension gives a prefix
(or, backwards, a suffix); interpolation gives both ends; a loop gives the same frame at
both ends. The generator turns the given frames into a latent-frame mask plus clean
latents, keeps those latents fixed at every denoising step (with t = 0, the DiT
contract), and pastes the given pixels back into the decoded video, so given frames come
out unchanged.

Frame <-> latent alignment (causal VAE, time factor T, 4 by default):
    latent 0      <- frame 0 alone (an image is a 1-frame video)
    latent k >= 1 <- frames 1 + T(k-1) ... Tk
so ``F`` frames need ``1 + ceil((F - 1) / T)`` latents, and decoding ``f`` latents gives
``1 + T(f - 1) >= F`` frames; the generator decodes that padded length and trims the tail.

A latent frame counts as given when any of its real (not padding) pixel frames is given.
The missing frames of such a latent (padding past the end, or real frames no condition
gives) are filled by holding the nearest given frame before encoding. The mode builders
below place given clips so that a clip's first frame starts a latent frame (frame 0 or a
frame ``1 + Tk``): its latents then match the VAE's own encoding of the clip and only the
invisible tail padding is ever held. A clip of ``1 + Tk`` frames (every worldreel output)
starting at frame 0 is encoded exactly as the VAE encodes it alone.

Encoding a run of given latents ``k0..k1`` with ``k0 >= 1``: the VAE treats the first frame
of any input as an image latent, so the segment sent to it starts one frame early, at the
last frame of latent ``k0 - 1`` (frame ``T(k0-1)``), and that anchor's latent is dropped;
the anchor is the real frame when it is given and a held copy of the run's first frame
otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from worldreel.data.video_io import fit_frames, to_tensor
from worldreel.errors import UserError


@dataclass
class Condition:
    """Given pixel frames placed at a frame index of the output.

    frames: uint8 (n, H, W, 3), or (H, W, 3) for a single image.
    at_index: output frame index of frames[0]; negative counts from the end, so
        ``at_index=-n`` makes the clip end on the last output frame.
    """

    frames: np.ndarray
    at_index: int = 0

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim == 3:
            frames = frames[None]  # (H, W, 3) -> (1, H, W, 3)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise UserError(f"condition frames must be (n, H, W, 3) RGB, got shape {tuple(frames.shape)}", param="conditions")
        if frames.dtype != np.uint8:
            raise UserError(f"condition frames must be uint8, got {frames.dtype}", param="conditions")
        self.frames = frames
        self.at_index = int(self.at_index)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the given frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


# ---------------------------------------------------------------------------------------
# Frame <-> latent arithmetic
# ---------------------------------------------------------------------------------------


def frames_for_seconds(seconds: float, fps: int) -> int:
    """Output frames for a clip of ``seconds``: the first frame plus one per 1/fps (4 s at 8 fps -> 33)."""
    return 1 + int(round(seconds * fps))


def latents_for_frames(frames: int, time_factor: int) -> int:
    """Latent frames that cover ``frames`` pixel frames (the last one may be padded)."""
    return 1 + math.ceil((frames - 1) / time_factor)


def frames_for_latents(latents: int, time_factor: int) -> int:
    """Pixel frames the VAE decodes from ``latents`` latent frames."""
    return 1 + time_factor * (latents - 1)


def latent_of_frame(frame: int, time_factor: int) -> int:
    """The latent frame holding pixel frame ``frame`` (0 -> 0, 1..T -> 1, T+1..2T -> 2, ...)."""
    return 0 if frame == 0 else 1 + (frame - 1) // time_factor


def frames_of_latent(latent: int, time_factor: int) -> range:
    """Pixel frames decoded from latent frame ``latent`` (in the padded timeline)."""
    if latent == 0:
        return range(0, 1)
    return range(1 + time_factor * (latent - 1), 1 + time_factor * latent)


# ---------------------------------------------------------------------------------------
# Placing conditions on the output timeline
# ---------------------------------------------------------------------------------------


def resample_fps(frames: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Pick the nearest source frame for each output time so motion keeps its real speed."""
    if fps_in <= 0 or abs(fps_in - fps_out) < 1e-3 or len(frames) == 1:
        return frames
    duration = (len(frames) - 1) / fps_in
    count = 1 + int(round(duration * fps_out))
    idx = np.clip(np.round(np.arange(count) * fps_in / fps_out).astype(int), 0, len(frames) - 1)
    return frames[idx]


def place_conditions(
    conditions: Sequence[Condition], num_frames: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Lay the given frames on an output timeline of ``num_frames`` frames at ``size`` (W, H).

    Returns pixels uint8 (num_frames, H, W, 3) (zeros where nothing is given) and given
    bool (num_frames,). Frames of another size are centre-cropped and resized first.
    Overlapping or out-of-range conditions are a UserError.
    """
    width, height = size
    pixels = np.zeros((num_frames, height, width, 3), np.uint8)
    given = np.zeros(num_frames, bool)
    for cond in conditions:
        n = len(cond.frames)
        start = cond.at_index if cond.at_index >= 0 else num_frames + cond.at_index
        if start < 0 or start + n > num_frames:
            raise UserError(
                f"a condition of {n} frame(s) at index {cond.at_index} does not fit in a {num_frames}-frame video",
                param="conditions",
            )
        if given[start : start + n].any():
            raise UserError(f"conditions overlap at frames {start}..{start + n - 1}", param="conditions")
        pixels[start : start + n] = fit_frames(cond.frames, size)
        given[start : start + n] = True
    return pixels, given


def latent_mask(given: np.ndarray, time_factor: int) -> np.ndarray:
    """(f,) bool: latent frames with at least one given real pixel frame."""
    num_latents = latents_for_frames(len(given), time_factor)
    mask = np.zeros(num_latents, bool)
    for k in range(num_latents):
        frames = [i for i in frames_of_latent(k, time_factor) if i < len(given)]
        mask[k] = bool(given[frames].any())
    return mask


def _hold_fill(pixels: np.ndarray, given: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Frames lo..hi-1 of the padded timeline, each missing one replaced by the nearest given frame.

    ``pixels``/``given`` may be shorter than ``hi`` (tail padding counts as missing).
    Ties go to the earlier frame. (hi - lo, H, W, 3) uint8.
    """
    real = np.flatnonzero(given[lo:hi]) + lo  # given frame indices inside the span
    if len(real) == 0:
        raise ValueError("a span with no given frame cannot be hold-filled")  # a bug, never user input
    out = []
    for i in range(lo, hi):
        if i < len(given) and given[i]:
            out.append(pixels[i])
        else:
            out.append(pixels[real[np.argmin(np.abs(real - i))]])
    return np.stack(out)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (first, last) pairs."""
    runs, start = [], None
    for k, value in enumerate(list(mask) + [False]):
        if value and start is None:
            start = k
        elif not value and start is not None:
            runs.append((start, k - 1))
            start = None
    return runs


def encode_given(
    encode: Callable, pixels: np.ndarray, given: np.ndarray, time_factor: int
) -> tuple[object, np.ndarray]:
    """Clean latents of the given frames, aligned to the output's latent grid.

    encode: video (1, 3, F, H, W) float in [-1, 1] -> latents (1, C, f, h, w) (the VAE's
        deterministic encode; chunked for long inputs).
    Returns (known (C, f, h, w) float tensor, zeros where not given; mask (f,) bool).
    Each run of given latents k0..k1 is encoded as one segment (see the module docstring
    for the anchor frame that keeps the grid aligned when k0 >= 1).
    """
    import torch

    mask = latent_mask(given, time_factor)
    num_latents = len(mask)
    known = None
    for k0, k1 in _runs(mask):
        last = frames_of_latent(k1, time_factor)[-1]  # last frame of the run, may be padding
        if k0 == 0:
            segment = _hold_fill(pixels, given, 0, last + 1)  # (1 + T*k1, H, W, 3)
            drop = 0
        else:
            first = frames_of_latent(k0, time_factor)[0]
            anchor = first - 1  # last frame of latent k0 - 1: the VAE reads it as an image
            body = _hold_fill(pixels, given, first, last + 1)  # (T*(k1-k0+1), H, W, 3)
            head = pixels[anchor : anchor + 1] if given[anchor] else body[:1]
            segment = np.concatenate([head, body])  # (1 + T*(k1-k0+1), H, W, 3)
            drop = 1
        video = to_tensor(segment)  # (3, F, H, W) in [-1, 1]
        z = encode(video[None])[0, :, drop:]  # (C, k1 - k0 + 1, h, w)
        if z.shape[1] != k1 - k0 + 1:
            raise RuntimeError(f"VAE gave {z.shape[1]} latents for {k1 - k0 + 1}; time factor mismatch")
        if known is None:
            known = torch.zeros(z.shape[0], num_latents, *z.shape[2:], dtype=z.dtype, device=z.device)
        known[:, k0 : k1 + 1] = z
    return known, mask


# ---------------------------------------------------------------------------------------
# Mode builders: each returns the conditions and the output frame count
# ---------------------------------------------------------------------------------------


def as_clip(frames: np.ndarray) -> np.ndarray:
    """An image (H, W, 3) or a video (n, H, W, 3) as a clip (n, H, W, 3)."""
    return Condition(frames).frames


def animate_conditions(image: np.ndarray, num_frames: int) -> tuple[list[Condition], int]:
    """Image-to-video: the image (or a clip's first frame) is frame 0."""
    return [Condition(as_clip(image)[:1], 0)], num_frames


def extend_conditions(
    video: np.ndarray, new_frames: int, time_factor: int, *, backward: bool = False
) -> tuple[list[Condition], int]:
    """Continue a clip forwards, or make what came before it (backward).

    Forward: the clip is the prefix and ``new_frames`` follow it. Backward: the clip is the
    suffix; the new part is rounded up to ``1 + Tm`` frames so the clip's first frame starts
    a latent frame (its latents then match the VAE's own encoding; the tail that pads its
    last latent is trimmed after decoding).
    """
    clip = as_clip(video)
    if not backward:
        return [Condition(clip, 0)], len(clip) + new_frames
    m = max(1, math.ceil((new_frames - 1) / time_factor))
    total = 1 + time_factor * m + len(clip)
    return [Condition(clip, -len(clip))], total


def interpolate_conditions(
    first: np.ndarray, last: np.ndarray, gap_latents: int, time_factor: int
) -> tuple[list[Condition], int]:
    """Fill ``gap_latents`` latent frames between two keyframes or clips.

    ``first`` starts at frame 0; ``last`` starts on the first frame of the latent after the
    gap, so both ends are latent-aligned (a first clip of ``1 + Ta`` frames fills latents
    0..a exactly). Returns the conditions and the output frame count.
    """
    head, tail = as_clip(first), as_clip(last)
    head_latents = latents_for_frames(len(head), time_factor)
    start = frames_of_latent(head_latents + max(1, gap_latents), time_factor)[0]  # first frame of the tail's latent
    total = start + len(tail)
    return [Condition(head, 0), Condition(tail, start)], total


def loop_conditions(first_frame: np.ndarray, gap_latents: int, time_factor: int) -> tuple[list[Condition], int]:
    """A loop: interpolate from a frame back to the same frame; the caller drops the last frame.

    Without its duplicate last frame the video ends one step before its first frame, so
    played on repeat the last frame flows into the first.
    """
    frame = as_clip(first_frame)[:1]
    return interpolate_conditions(frame, frame, gap_latents, time_factor)
