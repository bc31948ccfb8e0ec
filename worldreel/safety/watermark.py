"""A keyed invisible watermark with a 32-bit payload, added to the frames before the final encode.

What was measured first (issue 34, 64 px reel-world clips): marks in the starting noise do not
survive the sampler, and a smooth spread-spectrum luma pattern strong enough to survive H.264
CRF 28 (36 dB) shows as mottling on flat sky. This design keeps every change on flat regions
within 2 luma levels and gets its robustness from where the energy sits instead:

* **Cells of 2x2 pixels (at 64 px), signs from the key.** H.264 codes 4x4 blocks; a 2-px
  checker of random signs keeps most of its energy through CRF 28 and through a resize to half
  size and back, where smooth blobs of the same power lose it to quantisation (measured while
  designing: detection after CRF 28 rose from 70-80 % to 95 % at equal PSNR).
* **Constant over time.** Every frame carries the same pattern, so the detector averages all
  frames (moving objects average out, the mark does not), a halved frame rate changes nothing,
  and static regions survive the encoder's skip blocks.
* **Luma only.** The same offset is added to R, G and B, so chroma (subsampled and coarsely
  quantised by every encoder) is untouched and no hue shifts appear.
* **Perceptual masking.** ``strength`` levels on flat regions (2, the invisibility target's
  limit), ``texture_strength`` where the local contrast hides more.
* **Payload by cells.** Half of the cells carry the 32-bit payload plus a CRC-8, coded by
  the rate-1/2, K=7 convolutional code (generators 171, 133 octal, as in 802.11) and decoded
  with soft Viterbi; the other cells are the payload-free sync pattern the detector scores.
* **A small geometric search.** Crops of 90-95 % resized back to full size are undone by trying
  scales 1/0.95 and 1/0.9 at every integer offset; the score is the best normalised correlation
  over all of them, and the false-positive threshold is calibrated on that maximum, so every
  hypothesis counts toward the false-positive rate (``worldreel bench watermark``).

The key (32 random bytes) lives in the user's data folder (``safety/store.py``), made on first
use; anyone holding it can detect, decode and also forge or strip the mark, so keep it private.
"""
from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from worldreel.errors import UserError
from worldreel.safety.store import data_dir, write_secret

KEY_FILE = "watermark.key"
PAYLOAD_BITS = 32
CRC_BITS = 8
_K = 7  # constraint length of the convolutional code
_GENERATORS = (0o171, 0o133)
CODED_BITS = 2 * (PAYLOAD_BITS + CRC_BITS + _K - 1)  # 92: rate 1/2 with a zero tail
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, what H.264's yuv420p carries

# The detector's null distribution: the best score over the geometric search on clean 64 px
# clips (reel-world renders and world-tiny generations, no watermark, each attack applied), measured
# by `worldreel bench watermark` (docs/safety.md has the runs: 22,500 clean scores each from 1,500
# true renders and 1,000 generated clips, 9 attacks each). A maximum over many hypotheses has a
# heavier upper tail than a Gaussian (the largest clean score, 0.1135, sat beyond the Gaussian
# fit's 1e-6 point), so the tail above the 99th percentile TAIL_U is modelled as exponential with
# mean excess TAIL_BETA (the peaks-over-threshold method), and THRESHOLD is where that tail reaches
# 1e-6. The clean scores are correlations with the key's random pattern, so the fit moves with the
# key: two keys gave 1e-6 points of 0.1441 and 0.1301; these constants are the higher fit's.
TAIL_U = 0.0841  # 99th percentile of the clean scores
TAIL_P = 0.01  # share of clean scores above TAIL_U
TAIL_BETA = 0.0065  # mean excess of the clean scores above TAIL_U
NULL_MEDIAN = 0.0487  # median of the clean scores
THRESHOLD = round(TAIL_U + TAIL_BETA * math.log(TAIL_P / 1e-6), 4)  # false-positive rate 1e-6


@dataclass
class WatermarkConfig:
    """How the mark is made and searched for; embedder and detector must use the same values."""

    strength: float = 2.0  # luma levels added on flat regions (the invisibility target allows 2)
    texture_strength: float = 4.0  # luma levels where the local contrast masks it (3 fell short at CRF 28)
    texture_level: float = 4.0  # local luma std (3x3, levels) above which a pixel counts as textured
    payload_fraction: float = 0.5  # share of cells that carry the payload; the rest is sync
    median_size: int = 5  # detector: content estimated by a median filter of this size (3 or 5)
    residual_clip: float = 2.0  # detector: residual clipped to +-this, so edges weigh like mark pixels
    crops: tuple[float, ...] = (0.95, 0.9)  # detector: crop fractions (resized back) searched besides none
    threshold: float = THRESHOLD  # detector: score at and above which a video is called marked


@dataclass
class Detection:
    """What the detector found in a video."""

    marked: bool  # score >= threshold
    score: float  # best normalised correlation over the geometric search
    p_value: float  # chance a clean video scores this high (tail fit of the measured null)
    payload: int | None  # the 32-bit payload when its CRC checks, else None
    bits: list[int] = field(default_factory=list)  # the decoded payload bits (MSB first), CRC or not
    geometry: tuple[float, int, int] = (1.0, 0, 0)  # (scale, x offset, y offset) of the best hypothesis


# ---------------------------------------------------------------------------------------
# Key
# ---------------------------------------------------------------------------------------

def load_key(folder: str | Path | None = None) -> bytes:
    """The watermark key from the data folder, made (32 random bytes, 0600) on first use."""
    path = data_dir(folder) / KEY_FILE
    if not path.exists():
        write_secret(path, secrets.token_hex(32).encode() + b"\n")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a watermark key ({err}); move it away to make a new one", param="key") from None
    if len(key) < 16:
        raise UserError(f"{path}: a watermark key has at least 16 bytes, this one {len(key)}", param="key")
    return key


# ---------------------------------------------------------------------------------------
# Error correction: CRC-8 + rate-1/2 convolutional code, soft Viterbi
# ---------------------------------------------------------------------------------------

def _crc8(bits: np.ndarray) -> np.ndarray:
    """CRC-8 (polynomial x^8 + x^2 + x + 1) of a bit array, as 8 bits."""
    reg = 0
    for b in bits:
        reg ^= int(b) << 7
        reg = ((reg << 1) ^ 0x07) & 0xFF if reg & 0x80 else (reg << 1) & 0xFF
    return np.array([(reg >> (7 - i)) & 1 for i in range(8)], dtype=np.uint8)


def _parity(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> 4)
    x = x ^ (x >> 2)
    x = x ^ (x >> 1)
    return x & 1


_STATES = np.arange(1 << (_K - 1))
# For state s (the last K-1 inputs, newest in the top bit) and input u: the register (u, s) and
# the two coded bits it emits; the next state drops the oldest input.
_REG = np.stack([(u << (_K - 1)) | _STATES for u in (0, 1)])  # (2, 64)
_OUT = np.stack([_parity(_REG & g) for g in _GENERATORS], axis=-1)  # (2, 64, 2)
_NEXT = _REG >> 1  # (2, 64)


def payload_bits(payload: int) -> np.ndarray:
    """The 32-bit payload, MSB first."""
    if not isinstance(payload, (int, np.integer)) or not 0 <= int(payload) < 2**PAYLOAD_BITS:
        raise UserError(f"the watermark payload is a 32-bit number (0 to {2**PAYLOAD_BITS - 1}), got {payload!r}",
                        param="payload")
    return np.array([(int(payload) >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.uint8)


def encode_payload(payload: int) -> np.ndarray:
    """Payload + CRC-8 + zero tail through the convolutional code: (92,) coded bits."""
    bits = payload_bits(payload)
    info = np.concatenate([bits, _crc8(bits), np.zeros(_K - 1, np.uint8)])
    state, out = 0, []
    for u in info:
        out.extend(_OUT[u, state])
        state = _NEXT[u, state]
    return np.array(out, dtype=np.uint8)


def viterbi(soft: np.ndarray) -> np.ndarray:
    """Maximum-likelihood info bits (payload + CRC, tail dropped) from soft coded values.

    soft: (92,) floats, positive meaning coded bit 0. The path metric adds soft * (1 - 2c).
    """
    n = len(soft) // 2
    sign = 1.0 - 2.0 * _OUT  # (2, 64, 2): +1 for coded 0
    # Next state m = (u, s >> 1): its input is m's top bit and its two predecessors differ in s's lowest bit.
    m = _STATES
    u_of = m >> (_K - 2)
    pred = np.stack([((m << 1) & (len(m) - 1)), ((m << 1) & (len(m) - 1)) | 1])  # (2, 64)
    metric = np.full(len(_STATES), -np.inf)
    metric[0] = 0.0
    back = np.zeros((n, len(_STATES)), dtype=np.int64)  # per step and state: the surviving predecessor
    for t in range(n):
        gain = sign[..., 0] * soft[2 * t] + sign[..., 1] * soft[2 * t + 1]  # (2, 64): input u from state s
        cand = metric[pred] + gain[u_of[None, :], pred]  # (2, 64): the two ways into each state
        pick = np.argmax(cand, axis=0)
        back[t] = pred[pick, m]
        metric = cand[pick, m]
    state, bits = 0, []  # the zero tail ends in state 0
    for t in range(n - 1, -1, -1):
        bits.append(state >> (_K - 2))  # the input that led into this state
        state = back[t, state]
    bits = np.array(bits[::-1], dtype=np.uint8)
    return bits[: PAYLOAD_BITS + CRC_BITS]


# ---------------------------------------------------------------------------------------
# The keyed pattern
# ---------------------------------------------------------------------------------------

def cell_size(height: int, width: int) -> int:
    """Pixels per cell side: 2 at 64 px, growing with the frame so the cell grid stays ~32 cells."""
    return 2 * max(1, round(min(height, width) / 64))


@lru_cache(maxsize=16)
def _layout(key: bytes, gh: int, gw: int, payload_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of a (gh, gw) grid: the key's sign (+-1) and the coded bit it carries (-1 = sync)."""
    seed = hashlib.sha256(key + f"worldreel-watermark-v1/{gh}x{gw}".encode()).digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(gh, gw))
    role = np.full(gh * gw, -1, dtype=np.int64)
    carriers = rng.permutation(gh * gw)[: int(round(payload_fraction * gh * gw))]
    role[carriers] = np.arange(len(carriers)) % CODED_BITS  # every coded bit gets the same number of cells (+-1)
    return sign, role.reshape(gh, gw)


def _pixels(cells: np.ndarray, height: int, width: int, cell: int) -> np.ndarray:
    """(gh, gw) cell values -> (H, W) pixel values (edge rows/columns beyond the grid copy the last cell)."""
    up = np.kron(cells, np.ones((cell, cell), dtype=cells.dtype))  # (gh*cell, gw*cell)
    return np.pad(up, ((0, height - up.shape[0]), (0, width - up.shape[1])), mode="edge")


def _luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ _LUMA  # (F, H, W, 3) -> (F, H, W)


def embed(frames: np.ndarray, payload: int, *, key: bytes, config: WatermarkConfig | None = None) -> np.ndarray:
    """Watermark uint8 (F, H, W, 3) frames with a 32-bit payload; returns new uint8 frames."""
    import cv2

    cfg = config or WatermarkConfig()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UserError(f"frames to watermark must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}",
                        param="frames")
    _, h, w, _ = frames.shape
    if min(h, w) < 16:
        raise UserError(f"frames of {w}x{h} are too small to watermark (16 px or more per side)", param="frames")
    cell = cell_size(h, w)
    sign, role = _layout(key, h // cell, w // cell, cfg.payload_fraction)
    code = encode_payload(payload)
    cells = sign * np.where(role >= 0, 1.0 - 2.0 * code[np.maximum(role, 0)], 1.0).astype(np.float32)
    pattern = _pixels(cells, h, w, cell)  # (H, W) of +-1
    # Perceptual mask from each frame's own local contrast: flat sky gets `strength`, edges more.
    y = _luma(frames)  # (F, H, W)
    mean = np.stack([cv2.blur(f, (3, 3)) for f in y])
    var = np.stack([cv2.blur(f * f, (3, 3)) for f in y]) - mean * mean
    amp = np.where(np.sqrt(np.maximum(var, 0)) > cfg.texture_level, cfg.texture_strength, cfg.strength)
    delta = np.round(amp * pattern[None]).astype(np.int16)  # (F, H, W): same offset on R, G, B = luma only
    return np.clip(frames.astype(np.int16) + delta[..., None], 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------

def hypotheses(height: int, width: int, crops=(0.95, 0.9)) -> list[tuple[float, int, int]]:
    """(scale, x offset, y offset) the detector tries: as is, and each crop at every integer offset."""
    out = [(1.0, 0, 0)]
    for frac in crops:
        ny, nx = int(math.ceil((1 - frac) * height)), int(math.ceil((1 - frac) * width))
        out += [(1 / frac, ox, oy) for oy in range(ny + 1) for ox in range(nx + 1)]
    return out


def _residual(img: np.ndarray, size: int) -> np.ndarray:
    """What a median filter does not explain: the reel world is flat regions and sharp edges, which
    a median keeps, while the random 2-px cells are removed by it (measured while designing: payload
    bit accuracy after CRF 23 0.84 with a Gaussian high-pass, 0.99 with this)."""
    import cv2

    return img - cv2.medianBlur(np.ascontiguousarray(img, dtype=np.float32), size)


def _maps(height, width, scale, ox, oy):
    """Where each pixel of a crop-and-resized video came from in the original frame."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # A resize maps pixel centres: src = offset + (dst + 0.5) / scale - 0.5.
    return ox + (xs + 0.5) / scale - 0.5, oy + (ys + 0.5) / scale - 0.5


@lru_cache(maxsize=8)
def _search_bank(key: bytes, gh: int, gw: int, payload_fraction: float, median: int, crops: tuple):
    """The sync pattern under every hypothesis (as the detector's residual sees it, unit norm) and
    the cell each pixel came from."""
    import cv2

    # The detector works where a cell is 2 px (the video is area-resized to that first).
    cell, height, width = 2, 2 * gh, 2 * gw
    sign, role = _layout(key, gh, gw, payload_fraction)
    sync = _pixels(np.where(role < 0, sign, 0.0).astype(np.float32), height, width, cell)
    hyps = hypotheses(height, width, crops)
    bank = np.empty((len(hyps), height * width), dtype=np.float32)
    cells = np.empty((len(hyps), height * width), dtype=np.int64)
    for i, (s, ox, oy) in enumerate(hyps):
        mx, my = _maps(height, width, s, ox, oy)
        warped = cv2.remap(sync, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        p = _residual(warped, median).ravel()
        p = p - p.mean()
        bank[i] = p / (np.linalg.norm(p) + 1e-12)
        cy = np.clip(np.floor((my + 0.5) / cell).astype(np.int64), 0, gh - 1)
        cx = np.clip(np.floor((mx + 0.5) / cell).astype(np.int64), 0, gw - 1)
        cells[i] = (cy * gw + cx).ravel()
    return hyps, bank, cells


def p_value(score: float) -> float:
    """The chance a clean video scores at least ``score``: the exponential tail fitted to the measured
    clean scores above their 99th percentile; below it, a straight line in log-probability between
    the median (0.5) and that percentile (0.01), which is close to the measured shares."""
    if score >= TAIL_U:
        return TAIL_P * math.exp(-(score - TAIL_U) / TAIL_BETA)
    if score <= NULL_MEDIAN:
        return 0.5 if score > 0 else 1.0
    frac = (score - NULL_MEDIAN) / (TAIL_U - NULL_MEDIAN)
    return math.exp(math.log(0.5) + frac * (math.log(TAIL_P) - math.log(0.5)))


def detect(frames: np.ndarray, *, key: bytes, config: WatermarkConfig | None = None) -> Detection:
    """Look for the mark made with ``key`` in uint8 (F, H, W, 3) frames."""
    cfg = config or WatermarkConfig()
    if cfg.median_size not in (3, 5):
        raise UserError(f"median_size must be 3 or 5, got {cfg.median_size}", param="median_size")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"frames to check must be (F, H, W, 3), got {frames.shape}", param="frames")
    _, h, w, _ = frames.shape
    if min(h, w) < 16:
        raise UserError(f"frames of {w}x{h} are too small to carry a watermark", param="frames")
    # 1. Average the frames (the mark is the same in each) and keep what the content does not explain.
    import cv2

    mean = _luma(frames).mean(axis=0)  # (H, W)
    cell = cell_size(h, w)
    gh, gw = h // cell, w // cell
    if cell != 2:  # to the detector's scale, where a cell is 2 px
        mean = cv2.resize(mean[: gh * cell, : gw * cell], (2 * gw, 2 * gh), interpolation=cv2.INTER_AREA)
    r = np.clip(_residual(mean, cfg.median_size), -cfg.residual_clip, cfg.residual_clip).ravel()
    r = r - r.mean()
    norm = float(np.linalg.norm(r))
    hyps, bank, cells = _search_bank(key, gh, gw, cfg.payload_fraction, cfg.median_size, tuple(cfg.crops))
    if norm < 1e-6:  # a perfectly flat video carries nothing
        return Detection(False, 0.0, p_value(0.0), None, [], hyps[0])
    # 2. Score every geometric hypothesis: normalised correlation with the sync pattern.
    scores = bank @ (r / norm)  # (hypotheses,)
    best = int(np.argmax(scores))
    score = float(scores[best])
    # 3. Decode the payload under the best hypothesis: each coded bit sums its cells' evidence.
    sign, role = _layout(key, gh, gw, cfg.payload_fraction)
    cell_of = cells[best]
    bit_of = role.ravel()[cell_of]
    carrier = bit_of >= 0
    evidence = r[carrier] * sign.ravel()[cell_of[carrier]]
    soft = np.bincount(bit_of[carrier], weights=evidence, minlength=CODED_BITS)
    info = viterbi(soft / (np.abs(soft).mean() + 1e-12))
    bits, crc = info[:PAYLOAD_BITS], info[PAYLOAD_BITS:]
    payload = int("".join(map(str, bits)), 2) if np.array_equal(_crc8(bits), crc) else None
    return Detection(marked=score >= cfg.threshold, score=score, p_value=p_value(score), payload=payload,
                     bits=[int(b) for b in bits], geometry=hyps[best])
