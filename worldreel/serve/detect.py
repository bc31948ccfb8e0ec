"""``POST /v1/videos/detect``: check an uploaded file for our watermark and manifest, and name the
caller's job it came from.

The watermark payload of a service video is derived from its job id (``safety/output.job_payload``),
so a detected payload is matched against the caller's own jobs only: another key's videos are
neither found nor revealed (the same rule as every other route). The provenance state is that of
the uploaded bytes: a re-encoded copy is "unsigned" even when the watermark still names the job.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from worldreel.errors import UserError
from worldreel.serve.auth import check_upload_size
from worldreel.serve.config import ServeConfig
from worldreel.serve.queue import JobQueue
from worldreel.serve.schemas import APIError

SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".gif", ".png", ".jpg", ".jpeg", ".webp"}


def find_job(queue: JobQueue, owner: str, payload: int) -> str | None:
    """The id of ``owner``'s job whose watermark payload is ``payload`` (newest first), if any."""
    from worldreel.safety.output import job_payload

    after = None
    while True:
        jobs, more = queue.list(owner, after=after, limit=500)
        for job in jobs:
            if job_payload(job.id) == payload:
                return job.id
        if not more or not jobs:
            return None
        after = jobs[-1].id


def detect_upload(upload, owner: str, queue: JobQueue, cfg: ServeConfig) -> dict:
    """Detection for an uploaded file (an ``UploadFile``), as the response body."""
    from worldreel.safety.inspect import inspect_file

    data = upload.file.read(cfg.max_upload_bytes + 1)
    check_upload_size(data, cfg, "video")
    suffix = Path(upload.filename or "").suffix.lower()
    suffix = suffix if suffix in SUFFIXES else ".mp4"
    with tempfile.TemporaryDirectory(prefix="worldreel-detect-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            result = inspect_file(path, cfg.keys_dir)
        except UserError as err:
            raise APIError(400, f"the upload is not a readable video or image ({err.message})", param="video",
                           code="invalid_value") from None
    result.pop("file", None)
    job = find_job(queue, owner, result["payload"]) if result["ours"] and result["payload"] is not None else None
    return {"object": "video.detection", "watermarked": result.pop("ours"), **result, "video_id": job}
