"""Settings of the service: limits, leases, timeouts.

One dataclass shared by the API process and the workers, so both read the same numbers
(the API checks requests against the limits; the workers use the lease and timeout).
``worldreel serve`` builds it from its options; tests build it directly with small values.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    # Requests
    max_prompt_chars: int = 1000  # longer prompts are refused (400, param "prompt")
    max_upload_bytes: int = 8 * 1024 * 1024  # largest request body (an image or a video upload): 413 above it
    max_image_side: int = 4096  # widest/tallest input_reference image, read from its header before decoding
    max_image_pixels: int = 16_000_000  # width * height cap for an image, also checked before decoding
    max_video_frames: int = 400  # longest uploaded source video (extend/edit), read from the container header
    max_pending_per_key: int = 8  # queued + running jobs one key may have; the next create answers 429
    max_list_limit: int = 100  # largest page of GET /v1/videos
    poll_after_ms: int = 500  # "openai-poll-after-ms" hint sent with unfinished videos (the client's poll interval)

    # Jobs
    lease_seconds: float = 30.0  # a claimed job returns to the queue when its worker is silent this long
    heartbeat_seconds: float = 5.0  # how often a busy worker renews its lease (well under lease_seconds)
    max_attempts: int = 3  # claims per job; a job whose workers keep dying fails after this many
    job_timeout_seconds: float = 900.0  # a generation running longer than this fails with code "timeout"
    timeout_grace_seconds: float = 15.0  # after a timeout, how long a worker waits for the generator before exiting
    poll_seconds: float = 0.5  # idle worker's wait between looks at the queue

    # Marks on every output (docs/safety.md); switching either off is for research and is logged.
    watermark: bool = True  # embed the invisible watermark (payload derived from the job id)
    sign: bool = True  # sign video.mp4 with a C2PA manifest
    keys_dir: str | None = None  # folder with the watermark and signing keys (None: $XDG_DATA_HOME/worldreel)
