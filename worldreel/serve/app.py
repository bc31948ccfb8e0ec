"""The HTTP service: the OpenAI Videos API over the job queue, plus the studio page.

Routes follow what the installed ``openai`` client sends (``openai/resources/videos.py``):
    POST   /v1/videos                      multipart: prompt, model, seconds, size, input_reference
    GET    /v1/videos                      after, limit, order -> a list page
    GET    /v1/videos/{id}                 the video object (with an "openai-poll-after-ms" hint)
    DELETE /v1/videos/{id}                 delete a video, or cancel an unfinished job
    GET    /v1/videos/{id}/content         variant = video | thumbnail | spritesheet
    POST   /v1/videos/{id}/remix           JSON: prompt
    POST   /v1/videos/extensions           multipart: prompt, seconds, video (a file) or video[id]
    POST   /v1/videos/edits                multipart: prompt, video (a file) or video[id]
    GET    /v1/models                      the served models with their sizes and lengths
Every error is OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``; bad
input is a 4xx naming the parameter, never a 5xx. A prompt the prompt policy refuses
(``safety/policy.py``; as given, or as the workers' rule rewriter will rewrite it) is a 400
with code ``moderation_blocked`` and OpenAI's exact message, before anything is stored or
queued; the server logs its category (logger ``worldreel.serve``), never the prompt. The app never generates: it queues jobs
in ``<data>/jobs.db`` for worker processes (``worker.py``), so it stays responsive while
they are busy, and a restart loses nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Literal, Optional

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from worldreel.atomic import write_bytes
from worldreel.errors import UserError
from worldreel.serve import media
from worldreel.serve.auth import KeyRing, check_prompt, check_upload_size, decode_data_url, decode_image, probe_video
from worldreel.serve.config import ServeConfig
from worldreel.serve.models import ServedModel, format_seconds, format_size, parse_seconds, parse_size, pick_model
from worldreel.serve.queue import FINAL, Job, JobQueue, QueueFull, new_id
from worldreel.serve.schemas import (ERROR_RESPONSES, APIError, Video, VideoDeleted, VideoList,
                                     video_from_job)
from worldreel.serve.worker import data_paths

STATIC_DIR = Path(__file__).parent / "static"
MODERATION_MESSAGE = "Your request was blocked by our moderation system."  # OpenAI's own wording
log = logging.getLogger("worldreel.serve")
CONTENT_TYPES = {"video": ("video.mp4", "video/mp4"), "thumbnail": ("thumbnail.jpg", "image/jpeg"),
                 "spritesheet": ("spritesheet.jpg", "image/jpeg")}
REMIX_STRENGTH = 0.8  # remix: the source's layout, re-imagined; most of the noise schedule is re-run
EDIT_STRENGTH = 0.6  # edit: closer to the source
FORM_OVERHEAD = 64 * 1024  # room for the text fields of a multipart body beside the upload

_bearer = HTTPBearer(auto_error=False, description="An API key from the server's keys file.")


def create_app(data: str | Path, models: dict[str, ServedModel], *, keys: KeyRing | None = None,
               cfg: ServeConfig | None = None, policy=None) -> FastAPI:
    """The service for the data folder ``data`` serving ``models``; ``policy`` defaults to the shipped prompt policy."""
    from worldreel.safety.policy import default_policy

    cfg = cfg or ServeConfig()
    # One policy per process: its text encoder loads on the first prompt the patterns pass
    # (`worldreel serve` warms it at start-up) and stays, with its embeddings cached.
    policy = policy or default_policy()
    keys = keys or KeyRing()
    data = Path(data)
    db_path, videos_dir, uploads_dir = data_paths(data)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(db_path, lease_seconds=cfg.lease_seconds, max_attempts=cfg.max_attempts)

    app = FastAPI(title="worldreel", version="0.1.0", docs_url=None, redoc_url=None,
                  description="An OpenAI-compatible Videos API for worldreel models. Point the `openai` "
                              "client at `base_url=http://HOST:PORT/v1`.")
    app.state.queue, app.state.cfg, app.state.models, app.state.keys = queue, cfg, models, keys
    app.state.policy = policy
    app.add_middleware(BodyLimit, limit=cfg.max_upload_bytes + FORM_OVERHEAD)

    # ---- errors in OpenAI's shape ------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = loc[0] if loc else None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
        return JSONResponse(APIError(400, message, param=param, code=code).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "Not found" if err.status_code == 404 else str(err.detail)
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405:  # name every method of the path, not just the first route's
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return JSONResponse(APIError(err.status_code, message, code=None).body(), status_code=err.status_code,
                            headers=headers)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception) -> JSONResponse:  # a bug: say so, keep the shape
        return JSONResponse(APIError(500, f"internal error: {type(err).__name__}", type="server_error").body(),
                            status_code=500)

    def owner(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> str:
        # The header is read directly (``credentials`` only documents the scheme in OpenAPI).
        return keys.owner(request.headers.get("authorization"))

    def own_job(video_id: str, who: str) -> Job:
        job = queue.get(video_id, owner=who)
        if job is None:  # another key's video is "not found", too: its existence is not revealed
            raise APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="not_found")
        return job

    def completed_source(video_id: str, who: str, param: str) -> Job:
        job = own_job(video_id, who)
        if job.status != "completed":
            raise APIError(409, f"video {video_id} is {job.status}; only a completed video can be used here",
                           param=param, code="video_not_ready")
        return job

    def link_source(job: Job, job_id: str) -> str:
        """Give a new job its own link to the source video, so deleting the source later is harmless."""
        rel = f"uploads/{job_id}.mp4"
        src, dst = data / job.output_dir / "video.mp4", data / rel  # type: ignore[operator]
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return rel

    def submit(who: str, **fields) -> Video:
        try:
            job = queue.submit(owner=who, max_pending=cfg.max_pending_per_key, **fields)
        except QueueFull as full:
            if fields.get("input_path"):
                (data / fields["input_path"]).unlink(missing_ok=True)
            raise APIError(429, f"Too many unfinished videos for this key: {full}. Wait for one to finish.",
                           code="rate_limit_exceeded", type="rate_limit_error") from None
        return video_from_job(job)

    def new_seed(seed: Optional[int]) -> int:
        return int(seed) if seed is not None else secrets.randbelow(2**31)

    def moderate(prompt: str, seed: int, route: str, who: str) -> None:
        """400 ``moderation_blocked`` when the policy refuses the prompt as given or as a worker will rewrite it."""
        from worldreel.pipelines.prompts import PromptRewriter

        texts = [prompt]
        try:  # the workers' generators rewrite with the rules and the job's seed
            texts.append(PromptRewriter().rewrite(prompt, seed=seed).text)
        except UserError:
            pass  # the rules cannot read it: the job will fail in the worker, nothing new reaches the model
        for verdict in policy.check_many(texts):
            if not verdict.allowed:
                digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
                log.warning("moderation: refused %s for %s: category %s (%s), prompt sha256 %s", route, who,
                            verdict.category, verdict.source, digest)
                raise APIError(400, MODERATION_MESSAGE, param="prompt", code="moderation_blocked")

    def save_upload_video(upload: UploadFile, job_id: str, model: ServedModel) -> tuple[str, tuple[int, int], float]:
        """Store an uploaded source video; (path, size, seconds) after checking its header."""
        payload = upload.file.read(cfg.max_upload_bytes + 1)
        check_upload_size(payload, cfg, "video")
        rel = f"uploads/{job_id}.mp4"
        write_bytes(data / rel, payload, durable=True)
        try:
            width, height, frames, fps = probe_video(data / rel, cfg)
        except APIError:
            (data / rel).unlink(missing_ok=True)
            raise
        size = (width, height)
        try:
            size = parse_size(format_size(size), model)
        except APIError:
            size = parse_size(None, model)  # an unsupported size is fitted to the model's default
        model_fps = int(getattr(model.config, "fps", 8))
        seconds = max(1, round((frames - 1) / fps * model_fps)) / model_fps  # whole model frames
        return rel, size, seconds

    # ---- routes ------------------------------------------------------------------------
    # The prompt's limits, documented for clients (checked by check_prompt, whose messages say more).
    prompt_schema = {"minLength": 1, "maxLength": cfg.max_prompt_chars, "pattern": r"\S"}
    remix_body = create_model("RemixBody", __doc__="JSON body of POST /v1/videos/{video_id}/remix.",
                              prompt=(str, Field(description="Updated text prompt that directs the remix generation.",
                                                 json_schema_extra=prompt_schema)))

    @app.post("/v1/videos", response_model=Video, responses={**ERROR_RESPONSES, 413: ERROR_RESPONSES[400],
                                                            429: ERROR_RESPONSES[400]}, tags=["videos"])
    def create_video(prompt: str = Form(..., description="What to generate.", json_schema_extra=prompt_schema),
                     model: Optional[str] = Form(None, description="A served worldreel model (GET /v1/models)."),
                     seconds: Optional[str] = Form(None, description="Clip length in seconds, e.g. \"4\"."),
                     size: Optional[str] = Form(None, description="WIDTHxHEIGHT, e.g. \"64x64\"."),
                     seed: Optional[int] = Form(None, ge=0, lt=2**31, description="worldreel: a fixed seed."),
                     input_reference: Optional[UploadFile] = File(None, description="An image for frame 0."),
                     input_reference_url: Optional[str] = Form(None, alias="input_reference[image_url]",
                                                               description="A base64 data: URL of the image."),
                     input_reference_file: Optional[str] = Form(None, alias="input_reference[file_id]"),
                     who: str = Depends(owner)) -> Video:
        check_prompt(prompt, cfg)
        seed = new_seed(seed)
        moderate(prompt, seed, "create", who)
        chosen = pick_model(model, models)
        width, height = parse_size(size, chosen)
        length = parse_seconds(seconds, chosen)
        job_id, input_path = new_id(), None
        image = None
        if input_reference_file:
            raise APIError(400, "file ids are not supported; upload the image as input_reference",
                           param="input_reference[file_id]", code="unsupported_parameter")
        if input_reference is not None:
            image = decode_image(input_reference.file.read(cfg.max_upload_bytes + 1), cfg)
        elif input_reference_url:
            param = "input_reference[image_url]"
            image = decode_image(decode_data_url(input_reference_url, cfg, param=param), cfg, param=param)
        if image is not None:
            input_path = f"uploads/{job_id}.png"
            media.write_png(data / input_path, media.fit_frame(image, (width, height)))
        return submit(who, job_id=job_id, model=chosen.name, prompt=prompt, seconds=format_seconds(length),
                      size=format_size((width, height)), seed=seed, input_path=input_path)

    @app.get("/v1/videos", response_model=VideoList, responses=ERROR_RESPONSES, tags=["videos"])
    def list_videos(after: Optional[str] = Query(None, description="The last id of the previous page."),
                    limit: int = Query(20, ge=1, le=cfg.max_list_limit),
                    order: Literal["asc", "desc"] = Query("desc"),
                    who: str = Depends(owner)) -> VideoList:
        try:
            jobs, more = queue.list(who, after=after or None, limit=limit, order=order)  # "after=" is no cursor
        except KeyError:
            raise APIError(400, f"no video with id '{after}' to list after", param="after",
                           code="invalid_value") from None
        data_ = [video_from_job(j) for j in jobs]
        return VideoList(data=data_, first_id=data_[0].id if data_ else None,
                         last_id=data_[-1].id if data_ else None, has_more=more)

    @app.get("/v1/videos/{video_id}", response_model=Video, responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400]},
             tags=["videos"])
    def retrieve_video(video_id: str, response: Response, who: str = Depends(owner)) -> Video:
        job = own_job(video_id, who)
        if job.status not in FINAL:
            response.headers["openai-poll-after-ms"] = str(cfg.poll_after_ms)
        return video_from_job(job)

    @app.delete("/v1/videos/{video_id}", response_model=VideoDeleted,
                responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400]}, tags=["videos"])
    def delete_video(video_id: str, who: str = Depends(owner)) -> VideoDeleted:
        job = queue.delete(video_id, who)
        if job is None:
            raise APIError(404, f"No video found with id '{video_id}'.", param="video_id", code="not_found")
        shutil.rmtree(videos_dir / job.id, ignore_errors=True)
        for suffix in (".png", ".mp4"):
            (uploads_dir / f"{job.id}{suffix}").unlink(missing_ok=True)
        return VideoDeleted(id=job.id)

    @app.get("/v1/videos/{video_id}/content", responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "The file."},
        **ERROR_RESPONSES, 404: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[400]}, response_class=FileResponse,
        tags=["videos"])
    def download_content(video_id: str, variant: Literal["video", "thumbnail", "spritesheet"] = Query("video"),
                         who: str = Depends(owner)) -> FileResponse:
        job = own_job(video_id, who)
        if job.status != "completed" or not job.output_dir:
            raise APIError(409, f"video {video_id} is {job.status}; its content is available once it is completed",
                           param="video_id", code="video_not_ready")
        name, media_type = CONTENT_TYPES[variant]
        path = data / job.output_dir / name
        if not path.is_file():  # deleted a moment ago
            raise APIError(404, f"No content found for video '{video_id}'.", param="video_id", code="not_found")
        return FileResponse(path, media_type=media_type, filename=f"{video_id}{Path(name).suffix}")

    def remix_video(video_id: str, body, who: str = Depends(owner)) -> Video:
        check_prompt(body.prompt, cfg)
        source = completed_source(video_id, who, "video_id")
        moderate(body.prompt, source.seed, "remix", who)
        job_id = new_id()
        return submit(who, job_id=job_id, kind="remix", model=source.model, prompt=body.prompt, seconds=source.seconds,
                      size=source.size, seed=source.seed, source_id=source.id, input_path=link_source(source, job_id),
                      params={"strength": REMIX_STRENGTH})

    # The body model is built per app (its limits come from cfg), so it is attached as a real class:
    # a string annotation (this module uses postponed annotations) could not name a local.
    remix_video.__annotations__["body"] = remix_body
    app.post("/v1/videos/{video_id}/remix", response_model=Video, tags=["videos"],
             responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[400],
                        429: ERROR_RESPONSES[400]})(remix_video)

    def video_source(video: Optional[UploadFile], video_id: Optional[str], who: str, job_id: str,
                     model: Optional[str]) -> tuple[ServedModel, str, tuple[int, int], float, Optional[Job]]:
        """(model, input path, size, seconds, source job) from an uploaded video or a video id."""
        if video is not None and video_id:
            raise APIError(400, "send either video (a file) or video[id], not both", param="video")
        if video_id:
            source = completed_source(video_id, who, "video[id]")
            w, h = (int(v) for v in source.size.split("x"))
            return models_or_404(source.model), link_source(source, job_id), (w, h), float(source.seconds), source
        if video is None:
            raise APIError(400, "video is required: upload an MP4 as video, or send video[id] of a completed video",
                           param="video", code="missing_required_parameter")
        chosen = pick_model(model, models)
        rel, size, seconds = save_upload_video(video, job_id, chosen)
        return chosen, rel, size, seconds, None

    def models_or_404(name: str) -> ServedModel:
        if name not in models:
            raise APIError(400, f"the model {name!r} of that video is no longer served; allowed values: "
                           f"{', '.join(models)}", param="video[id]", code="invalid_value")
        return models[name]

    @app.post("/v1/videos/extensions", response_model=Video,
              responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[400],
                         413: ERROR_RESPONSES[400], 429: ERROR_RESPONSES[400]}, tags=["videos"])
    def extend_video(prompt: str = Form(..., description="What happens next.", json_schema_extra=prompt_schema),
                     seconds: str = Form(..., description="Length of the new segment in seconds."),
                     video: Optional[UploadFile] = File(None, description="The video to continue (MP4)."),
                     video_id: Optional[str] = Form(None, alias="video[id]", description="Or a completed video's id."),
                     model: Optional[str] = Form(None, description="Model for an uploaded video."),
                     seed: Optional[int] = Form(None, ge=0, lt=2**31),
                     who: str = Depends(owner)) -> Video:
        check_prompt(prompt, cfg)
        seed = new_seed(seed)
        moderate(prompt, seed, "extensions", who)  # before the upload is stored
        job_id = new_id()
        chosen, rel, size, source_seconds, source = video_source(video, video_id, who, job_id, model)
        try:
            total = source_seconds + parse_seconds(seconds, chosen)
            try:
                parse_seconds(format_seconds(total), chosen)
            except APIError as err:
                raise APIError(400, f"the extended video would be {format_seconds(total)} s long: {err.message}",
                               param="seconds", code="invalid_value") from None
        except APIError:
            (data / rel).unlink(missing_ok=True)  # the job will not run: drop its copy of the source
            raise
        fps = int(getattr(chosen.config, "fps", 8))
        return submit(who, job_id=job_id, kind="extend", model=chosen.name, prompt=prompt, seconds=format_seconds(total),
                      size=format_size(size), seed=seed, source_id=source.id if source else None,
                      input_path=rel, params={"source_frames": 1 + round(source_seconds * fps)})

    @app.post("/v1/videos/edits", response_model=Video,
              responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[400],
                         413: ERROR_RESPONSES[400], 429: ERROR_RESPONSES[400]}, tags=["videos"])
    def edit_video(prompt: str = Form(..., description="How to change the video.", json_schema_extra=prompt_schema),
                   video: Optional[UploadFile] = File(None, description="The video to edit (MP4)."),
                   video_id: Optional[str] = Form(None, alias="video[id]", description="Or a completed video's id."),
                   model: Optional[str] = Form(None, description="Model for an uploaded video."),
                   seed: Optional[int] = Form(None, ge=0, lt=2**31),
                   who: str = Depends(owner)) -> Video:
        check_prompt(prompt, cfg)
        # Before the upload is stored. The job's seed may come from its source, known only after:
        # the rewrite is checked with seed 0 here (seeds only pick colours and motions from the
        # world's vocabulary) and the worker's generator checks it again with the job's seed.
        moderate(prompt, seed if seed is not None else 0, "edits", who)
        job_id = new_id()
        chosen, rel, size, source_seconds, source = video_source(video, video_id, who, job_id, model)
        return submit(who, job_id=job_id, kind="edit", model=chosen.name, prompt=prompt,
                      seconds=format_seconds(source_seconds), size=format_size(size),
                      seed=new_seed(seed if seed is not None else (source.seed if source else None)),
                      source_id=source.id if source else None, input_path=rel, params={"strength": EDIT_STRENGTH})

    @app.post("/v1/videos/detect", responses={**ERROR_RESPONSES, 413: ERROR_RESPONSES[400]}, tags=["videos"])
    def detect_video(video: UploadFile = File(..., description="A video (MP4) or image to check."),
                     who: str = Depends(owner)) -> dict:
        """Is this ours? Watermark score, p-value and payload, the C2PA state, and the caller's job it came from."""
        from worldreel.serve.detect import detect_upload

        return detect_upload(video, who, queue, cfg)

    @app.get("/v1/models", tags=["models"], responses=ERROR_RESPONSES)
    def list_models(who: str = Depends(owner)) -> dict:
        return {"object": "list", "data": [model_card(m) for m in models.values()]}

    @app.get("/healthz", tags=["service"])
    def health() -> dict:
        alive = queue.workers(within=max(15.0, 3 * cfg.heartbeat_seconds))
        ready = sum(1 for w in alive if w["state"] in ("idle", "busy"))
        return {"status": "ok", "jobs": queue.counts(), "workers": ready, "workers_loading": len(alive) - ready,
                "auth": "open" if keys.is_open else "keys"}

    @app.get("/", include_in_schema=False)
    def studio() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """Methods the routes matching this path accept; a literal path (``/v1/videos/edits``) wins over
    a templated one (``/v1/videos/{video_id}``) that its text happens to fit."""
    from starlette.routing import Match, Route

    literal, templated = set(), set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] != Match.NONE:
            (templated if route.param_convertors else literal).update(route.methods)
    return sorted((literal or templated) - {"HEAD"}) or ["GET"]


def model_card(model: ServedModel) -> dict:
    """A model in OpenAI's list shape, with the sizes and lengths it accepts (the studio's menus)."""
    from worldreel.pipelines.generate import supported_sizes

    sizes, seconds = [], []
    for w, h in supported_sizes(model.config):
        sizes.append(format_size((w, h)))
    for candidate in ("1", "2", "4", "8", "12", "16", "20"):
        try:
            parse_seconds(candidate, model)
            seconds.append(candidate)
        except APIError:
            pass
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "worldreel", "sizes": sizes,
            "seconds": seconds, "default_size": format_size(tuple(model.config.default_size)),  # type: ignore[attr-defined]
            "default_seconds": format_seconds(float(model.config.default_seconds))}  # type: ignore[attr-defined]


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, before any parsing.

    The body is counted as it arrives and buffered (it is at most ``limit`` bytes), so the form
    parser never sees an oversize body. A body somewhat over the limit is read to its end
    before answering, so the client (which is still sending) reliably receives the 413.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit
        self.drain_limit = 4 * limit  # bodies up to this size are read (and dropped) before the 413

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.drain_limit:
            return await self._too_large(send)  # far too large to read: answer and let the server close
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.drain_limit:
                return await self._too_large(send)
            if total <= self.limit:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        if total > self.limit:  # read to the end so the client gets to see the answer
            return await self._too_large(send)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_again():
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_again, send)

    async def _too_large(self, send) -> None:
        err = APIError(413, f"request body is larger than {self.limit} bytes", code="request_too_large")
        await JSONResponse(err.body(), status_code=413)({"type": "http"}, None, send)
