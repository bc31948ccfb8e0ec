"""The durable job queue and the worker: leases, exactly-once, SIGKILL, restarts, timeouts.

Also home of ``FakeGenerator``, the fast stand-in generator that the service tests (and
the worker subprocesses they start) use where the real model's output does not matter.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from worldreel.errors import UserError
from worldreel.serve.config import ServeConfig
from worldreel.serve.queue import JobQueue, QueueFull
from worldreel.serve.worker import Worker

TESTS_DIR = Path(__file__).parent


class FakeGenerator:
    """Stands in for ``Generator``: frames drawn from the seed, ``steps`` progress calls ``delay`` apart."""

    def __init__(self, steps: int = 4, delay: float = 0.0, fps: int = 8, fail: Exception | None = None):
        self.steps, self.delay, self.fail = steps, delay, fail
        self.config = SimpleNamespace(fps=fps)
        self.calls: list[dict] = []

    def generate(self, prompt, *, seconds=None, size=None, seed=None, conditions=(), strength=None, progress=None, **kw):
        self.calls.append(dict(prompt=prompt, seconds=seconds, size=size, seed=seed, conditions=list(conditions),
                               strength=strength))
        if self.fail is not None:
            raise self.fail
        width, height = size
        count = 1 + round(seconds * self.config.fps)
        for step in range(self.steps):
            time.sleep(self.delay)
            if progress is not None:
                progress((step + 1) / self.steps)
        rng = np.random.default_rng(seed)
        colour = rng.integers(40, 255, size=3, dtype=np.uint8)
        frames = np.zeros((count, height, width, 3), np.uint8)
        for i in range(count):  # a square moving right: the video has motion and a seed-dependent colour
            x = (i * 2) % max(1, width - 8)
            frames[i, height // 2 - 4:height // 2 + 4, x:x + 8] = colour
        for c in conditions:
            frames[c.at_index:c.at_index + len(c.frames)] = c.frames
        return SimpleNamespace(frames=frames, fps=self.config.fps, model_prompt=f"rewritten: {prompt}", seed=seed)


def fast_cfg(**overrides) -> ServeConfig:
    base = dict(lease_seconds=2.0, heartbeat_seconds=0.2, poll_seconds=0.05, max_attempts=3)
    base.update(overrides)
    return ServeConfig(**base)


def submit(queue: JobQueue, owner: str = "alice", **kw):
    fields = dict(owner=owner, model="world-tiny", prompt="a red ball falls", seconds="1", size="32x32", seed=1)
    fields.update(kw)
    return queue.submit(**fields)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_claims_are_fifo_atomic_and_exactly_once(tmp_path):
    queue = JobQueue(tmp_path / "jobs.db")
    ids = [submit(queue, prompt=f"job {i}").id for i in range(24)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        q = JobQueue(tmp_path / "jobs.db")  # its own connection, as another process would have
        while (job := q.claim(name)) is not None:
            with lock:
                claimed.append(job.id)
            assert q.complete(job.id, name, output_dir="x")
            assert not q.complete(job.id, name, output_dir="x")  # a second completion is refused

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # every job claimed once, none twice
    completions = [e["job_id"] for e in queue.events() if e["event"] == "completed"]
    assert sorted(completions) == sorted(ids)
    first = JobQueue(tmp_path / "other.db")
    a, b = submit(first, prompt="a"), submit(first, prompt="b")
    assert first.claim("w").id == a.id and first.claim("w").id == b.id  # oldest first


def test_expired_lease_requeues_and_the_old_worker_cannot_complete(tmp_path):
    clock = Clock()
    queue = JobQueue(tmp_path / "jobs.db", lease_seconds=10, max_attempts=3, clock=clock)
    job = submit(queue)
    assert queue.claim("w1").id == job.id
    clock.now += 5
    assert queue.heartbeat(job.id, "w1", progress=40)  # renewed: lease now ends at +15
    clock.now += 9
    assert queue.claim("w2") is None  # still leased to w1
    clock.now += 7  # w1 went silent past its lease
    again = queue.claim("w2")
    assert again is not None and again.id == job.id and again.attempts == 2 and again.progress == 0
    assert not queue.heartbeat(job.id, "w1", progress=90)  # w1 lost it
    assert not queue.complete(job.id, "w1", output_dir="videos/a1")
    assert queue.complete(job.id, "w2", output_dir="videos/a2")
    final = queue.get(job.id)
    assert final.status == "completed" and final.output_dir == "videos/a2"
    kinds = [(e["event"], e["worker"]) for e in queue.events(job.id)]
    assert kinds == [("submitted", None), ("claimed", "w1"), ("requeued", "w1"), ("claimed", "w2"), ("completed", "w2")]


def test_retries_are_capped(tmp_path):
    clock = Clock()
    queue = JobQueue(tmp_path / "jobs.db", lease_seconds=1, max_attempts=2, clock=clock)
    job = submit(queue)
    for worker in ("w1", "w2"):
        assert queue.claim(worker).id == job.id
        clock.now += 2
    assert queue.claim("w3") is None
    failed = queue.get(job.id)
    assert failed.status == "failed" and failed.error["code"] == "worker_lost" and failed.attempts == 2


def test_cancel_bound_isolation_and_persistence(tmp_path):
    queue = JobQueue(tmp_path / "jobs.db")
    a1 = submit(queue, owner="alice", max_pending=2)
    submit(queue, owner="alice", max_pending=2)
    with pytest.raises(QueueFull):
        submit(queue, owner="alice", max_pending=2)
    submit(queue, owner="bob", max_pending=2)  # another key's bound is its own
    assert queue.get(a1.id, owner="bob") is None and queue.delete(a1.id, "bob") is None
    assert queue.delete(a1.id, "alice").id == a1.id  # cancels the queued job
    assert queue.get(a1.id) is None
    submit(queue, owner="alice", max_pending=2)  # room again
    running = queue.claim("w")
    assert queue.delete(running.id, running.owner) is not None
    assert not queue.heartbeat(running.id, "w")  # its worker learns at the next heartbeat
    reopened = JobQueue(tmp_path / "jobs.db")  # a restart sees the same jobs
    assert [j.id for j in reopened.iter_all()] == [j.id for j in queue.iter_all()]
    a4 = submit(reopened, owner="alice")
    live = [j.id for j in reopened.iter_all() if j.owner == "alice" and j.deleted_at is None]
    page, more = reopened.list("alice", limit=1, order="asc")
    assert more and [j.id for j in page] == live[:1]
    page, more = reopened.list("alice", after=page[0].id, limit=1, order="asc")
    assert not more and [j.id for j in page] == [a4.id]


def test_worker_writes_files_then_completes(tmp_path):
    cfg = fast_cfg()
    gen = FakeGenerator(steps=3)
    worker = Worker(tmp_path, factory=lambda source: gen, cfg=cfg)
    job = submit(worker.queue, seconds="1", size="32x32", seed=7)
    assert worker.run(max_jobs=1) == 1
    done = worker.queue.get(job.id)
    assert done.status == "completed" and done.progress == 100 and done.model_prompt == "rewritten: a red ball falls"
    out = tmp_path / done.output_dir
    assert sorted(p.name for p in out.iterdir()) == ["spritesheet.jpg", "thumbnail.jpg", "video.mp4"]
    from worldreel.data.video_io import read_video

    frames, fps = read_video(out / "video.mp4")
    assert frames.shape == (9, 32, 32, 3) and fps == 8
    assert gen.calls[0]["seed"] == 7 and gen.calls[0]["size"] == (32, 32) and gen.calls[0]["seconds"] == 1.0


def test_worker_failures_cancel_and_timeout(tmp_path):
    cfg = fast_cfg(job_timeout_seconds=0.6, timeout_grace_seconds=30)
    gens = {"bad": FakeGenerator(fail=UserError("unknown colour 'teal'", param="prompt")),
            "slow": FakeGenerator(steps=100, delay=0.05), "boom": FakeGenerator(fail=RuntimeError("kaput"))}
    worker = Worker(tmp_path, factory=lambda source: gens[source], cfg=cfg)
    bad = submit(worker.queue, model="bad")
    boom = submit(worker.queue, model="boom")
    slow = submit(worker.queue, model="slow")
    worker.run(max_jobs=3)
    assert worker.queue.get(bad.id).error == {"code": "invalid_value", "message": "unknown colour 'teal'", "param": "prompt"}
    assert worker.queue.get(boom.id).error["code"] == "generation_failed"
    timed_out = worker.queue.get(slow.id)
    assert timed_out.status == "failed" and timed_out.error["code"] == "timeout"
    assert not (tmp_path / "videos" / slow.id).exists()  # no files from a failed job

    # A job deleted while it runs stops at the next progress call and leaves no files.
    cancel = submit(worker.queue, model="slow")
    cfg.job_timeout_seconds = 60
    threading.Timer(0.5, lambda: worker.queue.delete(cancel.id, "alice")).start()
    started = time.monotonic()
    worker.run(max_jobs=1)
    assert time.monotonic() - started < 4.0  # stopped early, not after 100 steps
    assert not (tmp_path / "videos" / cancel.id).exists()
    assert [e["event"] for e in worker.queue.events(cancel.id)] == ["submitted", "claimed", "cancelled"]


WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_serve_queue import FakeGenerator, fast_cfg
    from worldreel.serve.worker import run_worker

    class Hung(FakeGenerator):  # never calls back, never returns (in time)
        def generate(self, *args, **kwargs):
            time.sleep(60)

    delay = float(sys.argv[1])
    make = (lambda source: Hung()) if delay < 0 else (lambda source: FakeGenerator(steps=20, delay=delay))
    run_worker({data!r}, factory=make, cfg=fast_cfg(lease_seconds=1.5, job_timeout_seconds=0.5, timeout_grace_seconds=0.5)
               if delay < 0 else fast_cfg(lease_seconds=1.5))
""")


def _start_worker(script: Path, delay: float) -> subprocess.Popen:
    """A worker process; ``delay`` seconds per step, or a negative delay for a generator that hangs."""
    return subprocess.Popen([sys.executable, str(script), str(delay)], stderr=subprocess.PIPE, text=True)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_worker_job_is_requeued_and_completed_exactly_once(tmp_path):
    data = tmp_path / "data"
    queue = JobQueue(data / "jobs.db", lease_seconds=1.5)
    job = submit(queue, seconds="1", size="32x32")
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT.format(tests=str(TESTS_DIR), data=str(data)))

    slow = _start_worker(script, delay=0.3)  # 20 steps x 0.3 s: ~6 s of "generation"
    try:
        _wait(lambda: (j := queue.get(job.id)).status == "in_progress" and j.progress >= 10, 30, "progress")
        os.kill(slow.pid, signal.SIGKILL)  # no chance to clean up or release the job
        slow.wait()
    finally:
        if slow.poll() is None:
            slow.kill()
    assert queue.get(job.id).status == "in_progress"  # still leased to the dead worker
    assert queue.get(job.id).output_dir is None

    fast = _start_worker(script, delay=0.0)
    try:
        done = _wait(lambda: (j := queue.get(job.id)).status == "completed" and j, 30, "completion")
    finally:
        fast.send_signal(signal.SIGTERM)
        fast.wait(timeout=20)
    events = [e["event"] for e in queue.events(job.id)]
    assert events == ["submitted", "claimed", "requeued", "claimed", "completed"], events
    dead, alive = [e["worker"] for e in queue.events(job.id) if e["event"] == "claimed"]
    assert dead != alive and done.attempts == 2 and done.output_dir.endswith("/a2")
    from worldreel.data.video_io import read_video

    frames, _ = read_video(data / done.output_dir / "video.mp4")
    assert frames.shape == (9, 32, 32, 3)
    assert fast.returncode == 0  # SIGTERM is a clean stop


def test_hung_generation_times_out_and_the_worker_exits(tmp_path):
    from worldreel.serve.worker import TIMEOUT_EXIT_CODE

    data = tmp_path / "data"
    queue = JobQueue(data / "jobs.db")
    job = submit(queue)
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT.format(tests=str(TESTS_DIR), data=str(data)))
    hung = _start_worker(script, delay=-1)
    try:
        assert hung.wait(timeout=30) == TIMEOUT_EXIT_CODE  # it left; `worldreel serve` starts a fresh one
    finally:
        if hung.poll() is None:
            hung.kill()
    failed = queue.get(job.id)
    assert failed.status == "failed" and failed.error["code"] == "timeout" and failed.attempts == 1
