"""Load test of the service: concurrent clients creating, polling and downloading videos.

``run_load`` drives a running service (loopback addresses only: a load test is never
pointed at someone else's machine) with ``clients`` threads that share ``jobs`` video
creations; each creates a video, polls it to the end and downloads it. Every API call is
timed. ``bench_local_service`` starts a private service (a temporary data folder, an HTTP
server on 127.0.0.1 and worker processes), runs the load, then reads the queue's event
log to check that every job completed exactly once.

Reported: jobs per minute (completed jobs over the span from the first create to the last
completion, with the model already loaded), p50/p95 latency of API calls made while the
workers were busy, and the exactly-once check. Counts and time are bounded.
"""
from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worldreel.errors import UserError


@dataclass
class LoadSettings:
    clients: int = 4  # concurrent client threads
    jobs: int = 16  # video creations in all, shared by the clients
    seconds: str = "4"  # length of each video
    size: str = "64x64"  # size of each video
    model: str | None = None  # model name; the service's first model when None
    poll_ms: int = 200  # client poll interval
    time_limit: float = 900.0  # give up (and report what finished) after this many seconds
    api_key: str | None = None  # Bearer key, when the service has keys


@dataclass
class LoadReport:
    jobs: int  # creations attempted
    completed: int  # jobs that reached "completed" and downloaded as MP4
    failed: int  # jobs that ended "failed" (or whose create or download failed)
    wall_seconds: float  # first create to last completion
    jobs_per_minute: float
    latency_ms: dict  # {"p50", "p95", "max", "calls"} of API calls while the workers were busy
    by_endpoint: dict  # endpoint -> {"p50", "p95", "calls"}
    completions_per_job: dict = field(default_factory=dict)  # completion events per job id (queue log)
    exactly_once: bool | None = None  # every job completed exactly once (None: no queue log to read)
    errors: list = field(default_factory=list)  # first few client-side errors
    settings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.completed == self.jobs and self.exactly_once is not False

    def summary(self) -> str:
        lat = self.latency_ms
        lines = [
            f"jobs: {self.completed}/{self.jobs} completed, {self.failed} failed, in {self.wall_seconds:.1f} s "
            f"-> {self.jobs_per_minute:.1f} jobs/minute",
            f"API latency while workers busy: p50 {lat.get('p50', float('nan')):.1f} ms, "
            f"p95 {lat.get('p95', float('nan')):.1f} ms, max {lat.get('max', float('nan')):.1f} ms over {lat.get('calls', 0)} calls",
        ]
        for name, stats in sorted(self.by_endpoint.items()):
            lines.append(f"  {name:<10} p50 {stats['p50']:7.1f} ms  p95 {stats['p95']:7.1f} ms  ({stats['calls']} calls)")
        if self.exactly_once is not None:
            counts = sorted(set(self.completions_per_job.values()))
            lines.append(f"exactly once: {'yes' if self.exactly_once else 'NO'} (completions per job: {counts})")
        lines += [f"error: {e}" for e in self.errors[:5]]
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


class _Client:
    """One keep-alive HTTP connection; every call is timed into ``calls``."""

    def __init__(self, base: str, key: str | None, calls: list):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key or 'none'}"}
        self.calls = calls
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, endpoint: str, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        start = time.monotonic()
        for attempt in range(2):  # one retry on a dropped keep-alive connection
            try:
                self.conn.request(method, self.prefix + path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        self.calls.append((start, (time.monotonic() - start) * 1000.0, endpoint))
        return response.status, data

    def create(self, prompt: str, settings: LoadSettings) -> dict:
        fields = {"prompt": prompt, "seconds": settings.seconds, "size": settings.size}
        if settings.model:
            fields["model"] = settings.model
        boundary = uuid.uuid4().hex
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items()) + f"--{boundary}--\r\n".encode()
        status, data = self.request("create", "POST", "/videos", body, f"multipart/form-data; boundary={boundary}")
        if status != 200:
            raise RuntimeError(f"create answered {status}: {data[:200]!r}")
        return json.loads(data)


PROMPTS = ("a red ball falls and bounces on the floor", "a blue box slides to the right",
           "a green ball rolls left; the camera pans right", "a yellow ball is thrown to the right")


def run_load(base_url: str, settings: LoadSettings) -> tuple[LoadReport, list[str], list[tuple[float, float, str]]]:
    """Drive the service at ``base_url`` (…/v1, loopback only).

    Returns the report, the created job ids, and every call as (monotonic start, ms, endpoint).
    """
    host = urlsplit(base_url).hostname or ""
    from worldreel.serve.auth import is_loopback

    if not is_loopback(host):
        raise UserError(f"the load test only runs against this machine (127.0.0.1), not {host!r}", param="url")
    calls: list = []
    ids: list[str] = []
    outcomes: dict[str, str] = {}
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(settings.jobs))
    deadline = time.monotonic() + settings.time_limit
    finished_at: list[float] = []

    def client_loop() -> None:
        client = _Client(base_url, settings.api_key, calls)
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            try:
                video = client.create(PROMPTS[n % len(PROMPTS)], settings)
                with lock:
                    ids.append(video["id"])
                while video["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
                    time.sleep(settings.poll_ms / 1000)
                    status, data = client.request("retrieve", "GET", f"/videos/{video['id']}")
                    video = json.loads(data) if status == 200 else video
                if video["status"] == "completed":
                    status, data = client.request("content", "GET", f"/videos/{video['id']}/content")
                    ok = status == 200 and data[4:8] == b"ftyp"  # an MP4 starts with its ftyp box
                    outcomes[video["id"]] = "completed" if ok else f"bad content ({status})"
                    finished_at.append(time.monotonic())
                else:
                    outcomes[video["id"]] = video["status"]
                client.request("list", "GET", "/videos?limit=10")
            except Exception as err:  # counted, reported, and the load goes on
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")

    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(settings.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    end = max(finished_at) if finished_at else time.monotonic()
    completed = sum(1 for v in outcomes.values() if v == "completed")
    wall = max(1e-9, end - start)
    report = LoadReport(
        jobs=settings.jobs, completed=completed, failed=settings.jobs - completed, wall_seconds=wall,
        jobs_per_minute=completed / wall * 60.0, latency_ms=_percentiles([c[1] for c in calls]),
        by_endpoint={name: _percentiles([c[1] for c in calls if c[2] == name])
                     for name in sorted({c[2] for c in calls})},
        errors=errors, settings=asdict(settings))
    return report, ids, calls


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "calls": 0}
    values = sorted(values)
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": q[49], "p95": q[94], "max": values[-1], "calls": len(values)}


def bench_local_service(settings: LoadSettings, *, workers: int = 2, model: str = "world-tiny",
                        random_model: bool = False, steps: int | None = None,
                        data: str | Path | None = None) -> LoadReport:
    """Start a private service on 127.0.0.1 with ``workers`` processes, run the load, check exactly-once."""
    from worldreel.serve.app import create_app
    from worldreel.serve.config import ServeConfig
    from worldreel.serve.models import resolve_models
    from worldreel.serve.queue import JobQueue
    from worldreel.serve.runner import BackgroundServer, WorkerPool

    with tempfile.TemporaryDirectory(prefix="worldreel-bench-") as tmp:
        root = Path(data) if data is not None else Path(tmp)
        if random_model:
            from worldreel.model_folder import save_random_model

            model = str(save_random_model(Path(tmp) / "world-tiny", "world-tiny"))
        served = resolve_models([model])
        cfg = ServeConfig(max_pending_per_key=settings.jobs + 1, poll_after_ms=settings.poll_ms)
        app = create_app(root / "service", served, cfg=cfg)
        queue: JobQueue = app.state.queue
        pool = WorkerPool(root / "service", workers, models=[m.source for m in served.values()], steps=steps).start()
        try:
            _wait_for_workers(queue, workers, timeout=min(300.0, settings.time_limit))
            with BackgroundServer(app) as server:
                report, ids, calls = run_load(server.url + "/v1", settings)
        finally:
            pool.stop()
        # Latency "while the workers were busy": calls between the first claim and the last completion.
        events = queue.events()
        claims = [e["at"] for e in events if e["event"] == "claimed"]
        dones = [e["at"] for e in events if e["event"] in ("completed", "failed")]
        if claims and dones:
            offset = time.time() - time.monotonic()  # the calls were timed on the monotonic clock
            busy = [c for c in calls if min(claims) <= c[0] + offset <= max(dones)]
            report.latency_ms = _percentiles([c[1] for c in busy])
        per_job = {job_id: 0 for job_id in ids}
        for e in events:
            if e["event"] == "completed" and e["job_id"] in per_job:
                per_job[e["job_id"]] += 1
        report.completions_per_job = per_job
        report.exactly_once = len(per_job) == settings.jobs and all(n == 1 for n in per_job.values())
        report.settings.update(workers=workers, model=Path(model).name, steps=steps, random_model=random_model)
        return report


def _wait_for_workers(queue, count: int, timeout: float) -> None:
    """Block until ``count`` workers have loaded their model and report idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for w in queue.workers(within=60.0) if w["state"] in ("idle", "busy")) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} workers did not become ready within {timeout:.0f} s")
