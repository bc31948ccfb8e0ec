"""Running the service: worker processes under supervision, and a server in a background thread.

``WorkerPool`` starts ``worldreel worker`` processes and restarts any that exit (a crash,
an OOM kill, a timed-out generation), so ``worldreel serve --workers N`` keeps N workers.
``BackgroundServer`` runs uvicorn in a thread on 127.0.0.1 and an ephemeral port; the
load benchmark and the tests use it to talk to a real HTTP server.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path


class WorkerPool:
    """``count`` supervised worker processes on one data folder."""

    def __init__(self, data: str | Path, count: int, *, models: list[str] | None = None, device: str = "cpu",
                 lease_seconds: float | None = None, job_timeout: float | None = None, steps: int | None = None,
                 extra_args: list[str] | None = None):
        self.command = [sys.executable, "-m", "worldreel", "worker", "--data", str(data), "--device", device,
                        "--exit-with-parent"]
        for model in models or []:
            self.command += ["--model", model]
        if lease_seconds is not None:
            self.command += ["--lease", str(lease_seconds)]
        if job_timeout is not None:
            self.command += ["--job-timeout", str(job_timeout)]
        if steps is not None:
            self.command += ["--steps", str(steps)]
        if device == "cpu":  # N workers share the cores instead of each claiming all of them
            self.command += ["--threads", str(max(1, (os.cpu_count() or 1) // max(1, count)))]
        self.command += extra_args or []
        self.count = count
        self.procs: list[subprocess.Popen] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="worker-pool")

    def start(self) -> "WorkerPool":
        self.procs = [subprocess.Popen(self.command) for _ in range(self.count)]
        self._thread.start()
        return self

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stop.is_set():
                    print(f"worldreel serve: worker {proc.pid} exited with {proc.returncode}; restarting",
                          file=sys.stderr, flush=True)
                    time.sleep(min(backoff, 30.0))  # a worker that cannot start must not spin
                    backoff *= 2
                    self.procs[i] = subprocess.Popen(self.command)
                    self.restarts += 1
            if all(p.poll() is None for p in self.procs):
                backoff = max(1.0, backoff / 2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every worker (its running job goes back to the queue), then SIGKILL stragglers."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class BackgroundServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; ``url`` is its base address."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")
        self.url = ""

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
