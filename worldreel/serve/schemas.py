"""Response shapes of the Videos API, as the ``openai`` package defines them, and the error shape.

Field names follow ``openai/types/video.py`` (``Video``), ``video_delete_response.py`` and
the list page ``SyncConversationCursorPage`` (``data``, ``has_more``, ``last_id``; we add
``object`` and ``first_id`` as OpenAI's list responses do). worldreel adds two fields the
client keeps as extras: ``model_prompt`` (the rewritten prompt the model saw) and ``seed``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from worldreel.serve.queue import Job


class VideoError(BaseModel):
    code: str = Field(description="A machine-readable error code.")
    message: str = Field(description="A human-readable description of the error.")
    param: Optional[str] = Field(None, description="The request parameter associated with the error, if any.")


class Video(BaseModel):
    """Structured information describing a generated video job."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(description="Approximate completion percentage (0-100).")
    created_at: int
    completed_at: Optional[int] = None
    expires_at: Optional[int] = None
    model: str
    prompt: Optional[str] = None
    remixed_from_video_id: Optional[str] = None
    seconds: str = Field(description="Duration in seconds; for extensions, the stitched total.")
    size: str = Field(description="Resolution, WIDTHxHEIGHT.")
    error: Optional[VideoError] = None
    model_prompt: Optional[str] = Field(None, description="worldreel: the rewritten prompt the model was given.")
    seed: Optional[int] = Field(None, description="worldreel: the seed; the same seed and settings give the same video.")


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: Optional[str] = None
    last_id: Optional[str] = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class APIError(Exception):
    """An HTTP error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def video_from_job(job: Job) -> Video:
    """The API's view of a queue row."""
    error = VideoError(**job.error) if job.error else None
    return Video(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=int(job.progress),
        created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at is not None else None,
        model=job.model,
        prompt=job.prompt,
        remixed_from_video_id=job.source_id if job.kind == "remix" else None,
        seconds=job.seconds,
        size=job.size,
        error=error,
        model_prompt=job.model_prompt,
        seed=job.seed,
    )


# Responses every route may give, for the OpenAPI document (and schemathesis's checks).
ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "Invalid request (the error names the parameter)."},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
}
