"""Who may call the service, and what a request may carry.

Keys: Bearer tokens listed in a keys file (one per line, ``#`` starts a comment) or given
as options. A key's videos belong to an owner id derived from a hash of the key, so the
database never stores a key, and another key's video is answered 404 (its existence is not
revealed). With no keys configured the service is open, so it must only listen on the
loopback interface: ``check_bind`` refuses anything else and says why.

Limits: prompt length, and uploads (images for ``input_reference``, videos for extend and
edit) whose size and pixel dimensions are read from the file header *before* anything is
decoded, so a small file that claims a huge image cannot exhaust memory.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from worldreel.errors import UserError
from worldreel.serve.config import ServeConfig
from worldreel.serve.schemas import APIError

OPEN_OWNER = "local"  # owner of every video when no keys are configured
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


def owner_id(key: str) -> str:
    """A stable, non-secret id for a key (what the database stores)."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:20]


class KeyRing:
    """The accepted API keys; empty means the service is open (loopback only)."""

    def __init__(self, keys: Iterable[str] = ()):
        self._owners = {hashlib.sha256(k.encode()).digest(): owner_id(k) for k in keys}

    @classmethod
    def load(cls, keys_file: str | Path | None = None, keys: Iterable[str] = ()) -> "KeyRing":
        """Keys from ``keys_file`` (one per line) plus ``keys``; short keys are refused."""
        found = [k.strip() for k in keys if k.strip()]
        if keys_file is not None:
            path = Path(keys_file)
            if not path.is_file():
                raise UserError(f"keys file {path} does not exist", param="keys")
            for line in path.read_text().splitlines():
                token = line.split("#", 1)[0].strip()
                if token:
                    found.append(token.split()[0])
        for key in found:
            if len(key) < 16:
                raise UserError("API keys must be at least 16 characters long (use e.g. `openssl rand -hex 24`)",
                                param="keys")
        return cls(found)

    @property
    def is_open(self) -> bool:
        return not self._owners

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, authorization: str | None) -> str:
        """The owner of the request's Bearer key; 401 in OpenAI's shape when missing or unknown."""
        if self.is_open:
            return OPEN_OWNER
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                           code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        found = self._owners.get(hashlib.sha256(token.strip().encode()).digest())
        if found is None:
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuse to serve an open (keyless) API on anything but the loopback interface."""
    if keys.is_open and not is_loopback(host):
        raise UserError(
            f"no API keys are configured, so the service only listens on 127.0.0.1, not {host!r}: "
            "pass --keys FILE (one key per line) or --api-key KEY to serve other machines",
            param="host")


# ---- request limits ------------------------------------------------------------------------
def check_prompt(prompt: str | None, cfg: ServeConfig, *, param: str = "prompt") -> str:
    if prompt is None or not prompt.strip():
        raise APIError(400, "prompt must be a non-empty string", param=param, code="missing_required_parameter")
    if len(prompt) > cfg.max_prompt_chars:
        raise APIError(400, f"prompt is {len(prompt)} characters long; the limit is {cfg.max_prompt_chars}",
                       param=param, code="string_above_max_length")
    return prompt


def check_upload_size(data: bytes, cfg: ServeConfig, param: str) -> None:
    if len(data) > cfg.max_upload_bytes:
        raise APIError(413, f"{param} is {len(data)} bytes; the limit is {cfg.max_upload_bytes} bytes",
                       param=param, code="file_too_large")
    if not data:
        raise APIError(400, f"{param} is empty", param=param, code="invalid_file")


def decode_image(data: bytes, cfg: ServeConfig, *, param: str = "input_reference") -> np.ndarray:
    """An uploaded image as uint8 (H, W, 3), its size checked from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    check_upload_size(data, cfg, param)
    try:
        image = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as err:  # PIL's own header check, for absurd sizes
        raise APIError(400, f"{param} is too large ({err}); the limit is {cfg.max_image_side} pixels a side and "
                       f"{cfg.max_image_pixels} pixels in all", param=param, code="image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise APIError(400, f"{param} is not a readable image ({', '.join(IMAGE_FORMATS)} expected): {err}",
                       param=param, code="invalid_image") from None
    with image:
        if image.format not in IMAGE_FORMATS:
            raise APIError(400, f"{param} is a {image.format} image; send one of {', '.join(IMAGE_FORMATS)}",
                           param=param, code="invalid_image_format")
        width, height = image.size
        if max(width, height) > cfg.max_image_side or width * height > cfg.max_image_pixels:
            raise APIError(400, f"{param} is {width}x{height}; the limit is {cfg.max_image_side} pixels a side and "
                           f"{cfg.max_image_pixels} pixels in all", param=param, code="image_too_large")
        try:
            with warnings.catch_warnings():
                # Belt and braces: PIL's own decompression-bomb guard becomes an error, too.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.seek(0)  # the first frame of an animated image
                rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise APIError(400, f"{param} could not be decoded: {err}", param=param, code="invalid_image") from None
    return np.asarray(rgb, dtype=np.uint8)


def decode_data_url(url: str, cfg: ServeConfig, *, param: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URL; the service fetches nothing from the network."""
    if not url.startswith("data:"):
        raise APIError(400, f"{param} must be a data: URL (base64); this server does not fetch remote URLs",
                       param=param, code="invalid_url")
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise APIError(400, f"{param} must be a base64 data: URL", param=param, code="invalid_url")
    if len(payload) > cfg.max_upload_bytes * 4 // 3 + 4:
        raise APIError(413, f"{param} is larger than the {cfg.max_upload_bytes}-byte limit", param=param,
                       code="file_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param} is not valid base64", param=param, code="invalid_url") from None


def probe_video(path: Path, cfg: ServeConfig, *, param: str = "video") -> tuple[int, int, int, float]:
    """(width, height, frames, fps) of an uploaded video from its container header, within the limits."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise APIError(400, f"{param} has no video stream", param=param, code="invalid_video")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
            frames = stream.frames
            if not frames and stream.duration is not None and stream.time_base is not None:
                frames = int(round(float(stream.duration * stream.time_base) * fps))
    except APIError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise APIError(400, f"{param} is not a readable video (MP4 expected): {err}", param=param,
                       code="invalid_video") from None
    if width <= 0 or height <= 0:
        raise APIError(400, f"{param} has no picture size in its header", param=param, code="invalid_video")
    if max(width, height) > cfg.max_image_side or width * height > cfg.max_image_pixels:
        raise APIError(400, f"{param} is {width}x{height}; the limit is {cfg.max_image_side} pixels a side",
                       param=param, code="video_too_large")
    if frames > cfg.max_video_frames:
        raise APIError(400, f"{param} has {frames} frames; the limit is {cfg.max_video_frames}", param=param,
                       code="video_too_long")
    return width, height, int(frames), fps
