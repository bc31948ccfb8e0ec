"""The worker: claim a job, generate, write the files, mark it done; forever.

A worker process loads each model's ``Generator`` once and runs jobs one at a time. While
a job runs, a keep-alive thread renews the lease (so a worker killed with SIGKILL lets its
job go back to the queue once the lease expires, see ``queue.py``), enforces the job
timeout, and notices a job deleted by its owner (the progress callback then stops the
generation). Output files go to a folder of their own per attempt
(``videos/<id>/a<attempt>/``), each written to a temporary name and renamed, and the job is
marked completed only after all of them exist: a client can never download half a video.

The generator is injectable: ``Worker(..., factory=...)`` takes any callable mapping a
model source to an object with ``generate(prompt, *, seconds, size, seed, conditions,
strength, progress)`` returning ``frames``, ``fps`` and ``model_prompt``; the default loads
``worldreel.pipelines.generate.Generator``.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from worldreel.atomic import write_bytes
from worldreel.errors import UserError
from worldreel.serve import media
from worldreel.serve.config import ServeConfig
from worldreel.serve.queue import Job, JobQueue

GeneratorFactory = Callable[[str], Any]  # model source (name or folder) -> a loaded generator
TIMEOUT_EXIT_CODE = 75  # a worker whose generator ignored a timeout exits with this; `serve` restarts it


def load_generator(source: str, device: str = "cpu", steps: int | None = None) -> Any:
    """The default factory: the real pipeline (on the CPU unless told otherwise; ``steps`` overrides the sampler's)."""
    from worldreel.pipelines.generate import Generator, SamplingConfig

    return Generator.load(source, device=device, sampling=SamplingConfig(steps=steps) if steps else None)


class JobAborted(Exception):
    """Raised from the progress callback to stop a generation (deleted, lease lost, timeout, shutdown)."""


class _Running:
    """State shared by the generation thread and the keep-alive thread for one job."""

    def __init__(self) -> None:
        self.progress = 0  # percent, 0-99 while generating
        self.abort: str | None = None  # why to stop: "deleted or lost", "timeout", "stopping"
        self.done = threading.Event()
        self.last_write = 0.0


def data_paths(data: Path) -> tuple[Path, Path, Path]:
    """(database, videos folder, uploads folder) of a data folder."""
    return data / "jobs.db", data / "videos", data / "uploads"


class Worker:
    """Runs jobs from the queue of ``data`` with generators made by ``factory``."""

    def __init__(self, data: str | Path, *, models: dict[str, str] | None = None,
                 factory: GeneratorFactory = load_generator, cfg: ServeConfig | None = None,
                 name: str | None = None, log: Callable[[str], None] | None = None, exit_with_parent: bool = False):
        self.data = Path(data)
        self.cfg = cfg or ServeConfig()
        self.models = models  # served name -> source; None takes any model, loading it by name
        self.factory = factory
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.queue = JobQueue(data_paths(self.data)[0], lease_seconds=self.cfg.lease_seconds,
                              max_attempts=self.cfg.max_attempts)
        self.stop = threading.Event()
        self.log = log or (lambda msg: print(f"[worker {self.name}] {msg}", file=sys.stderr, flush=True))
        self._generators: dict[str, Any] = {}
        # A worker started by `serve` stops when serve is gone (killed without a chance to stop it),
        # instead of running on as an orphan; its job then goes back to the queue.
        self._parent = os.getppid() if exit_with_parent else None

    # ---- the loop ---------------------------------------------------------------------
    def run(self, *, max_jobs: int | None = None, idle_exit: float | None = None) -> int:
        """Run jobs until ``stop`` is set (or ``max_jobs`` ran, or the queue stayed empty ``idle_exit`` s)."""
        self.queue.worker_seen(self.name, "loading", os.getpid())
        for model in self.models or {}:  # load up front, so the first job does not wait for it
            self.generator(model)
        self.queue.worker_seen(self.name, "idle")
        done, idle_since, seen = 0, time.monotonic(), time.monotonic()
        models = list(self.models) if self.models is not None else None
        try:
            while not self.stop.is_set() and (max_jobs is None or done < max_jobs):
                job = self.queue.claim(self.name, models)
                if job is None:
                    if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                        break
                    if self._parent is not None and os.getppid() != self._parent:
                        self.log("the serving process is gone; stopping")
                        break
                    if time.monotonic() - seen > self.cfg.heartbeat_seconds:
                        self.queue.worker_seen(self.name, "idle")
                        seen = time.monotonic()
                    self.stop.wait(self.cfg.poll_seconds)
                    continue
                self.queue.worker_seen(self.name, "busy")
                self.run_job(job)
                self.queue.worker_seen(self.name, "idle")
                done += 1
                idle_since = seen = time.monotonic()
        finally:
            self.queue.worker_seen(self.name, "stopped")
        return done

    def generator(self, model: str) -> Any:
        """The model's generator, loaded on first use and kept."""
        if model not in self._generators:
            source = self.models[model] if self.models is not None else model
            started = time.monotonic()
            self._generators[model] = self.factory(source)
            self.log(f"loaded {model} in {time.monotonic() - started:.1f}s")
        return self._generators[model]

    # ---- one job ------------------------------------------------------------------------
    def run_job(self, job: Job) -> bool:
        """Generate ``job`` and record the outcome; True when it completed."""
        state = _Running()
        keeper = threading.Thread(target=self._keep_alive, args=(job, state), daemon=True)
        keeper.start()
        out_rel = f"videos/{job.id}/a{job.attempts}"
        out = self.data / out_rel
        started = time.monotonic()
        try:
            video = self._generate(job, state)
            # Files first, the completion mark last: "completed" implies every file is whole.
            out.mkdir(parents=True, exist_ok=True)
            _write_outputs(out, video, job, self.cfg, self.generator(job.model), self.data)
            state.done.set()
            keeper.join()
            if state.abort is None and self.queue.complete(job.id, self.name, output_dir=out_rel,
                                                           model_prompt=getattr(video, "model_prompt", None)):
                self.log(f"completed {job.id} in {time.monotonic() - started:.1f}s")
                return True
            self.log(f"{job.id}: finished but no longer ours ({state.abort or 'lease lost or deleted'}); discarded")
        except JobAborted as why:
            self.log(f"{job.id}: stopped ({why})")
            if str(why) == "stopping":
                self.queue.release(job.id, self.name)
        except UserError as err:
            self.queue.fail(job.id, self.name, code=err.code or "invalid_value", message=err.message, param=err.param)
            self.log(f"{job.id}: failed: {err}")
        except Exception as err:  # a bug or a broken model: the job fails, the worker lives on
            if self.queue.get(job.id) is None:  # deleted meanwhile (its folder too): nothing went wrong
                self.log(f"{job.id}: deleted while it ran; discarded")
            else:
                traceback.print_exc(file=sys.stderr)
                self.queue.fail(job.id, self.name, code="generation_failed", message=f"{type(err).__name__}: {err}")
        finally:
            state.done.set()
            keeper.join()
        shutil.rmtree(out, ignore_errors=True)  # this attempt's files, if any, are not the job's result
        return False

    def _generate(self, job: Job, state: _Running) -> Any:
        """Call the generator with the job's settings and given frames."""
        from worldreel.pipelines.conditioning import Condition

        generator = self.generator(job.model)
        width, height = (int(v) for v in job.size.split("x"))
        seconds = float(job.seconds)
        conditions, strength = [], job.params.get("strength")
        if job.input_path:
            source = self.data / job.input_path
            if not source.exists():
                raise UserError("the source of this job was deleted before it ran", param="video")
            if source.suffix == ".png":  # image-to-video: the picture is frame 0
                conditions.append(Condition(media.read_png(source), 0))
            else:  # extend / remix / edit: the source clip's frames from frame 0
                fps = int(getattr(getattr(generator, "config", None), "fps", 8))
                # extend: the whole source (the new part follows it); remix/edit: one frame per output frame
                wanted = int(job.params.get("source_frames") or (1 + round(seconds * fps)))
                frames = media.read_frames(source, (width, height), fps, max_frames=wanted)
                if len(frames) < wanted:  # a source a frame or two short of its length: hold its last frame
                    frames = np.concatenate([frames, np.repeat(frames[-1:], wanted - len(frames), axis=0)])
                conditions.append(Condition(frames, 0))

        def progress(fraction: float) -> None:
            if state.abort:
                raise JobAborted(state.abort)
            if self.stop.is_set():
                raise JobAborted("stopping")
            state.progress = max(state.progress, min(99, int(fraction * 100)))
            now = time.monotonic()
            if now - state.last_write > 0.25:  # live progress for pollers, without a write per step
                state.last_write = now
                if not self.queue.heartbeat(job.id, self.name, state.progress):
                    state.abort = "deleted or lost"
                    raise JobAborted(state.abort)

        kwargs: dict[str, Any] = dict(seconds=seconds, size=(width, height), seed=job.seed, progress=progress)
        if conditions:
            kwargs["conditions"] = conditions
        if strength is not None:
            kwargs["strength"] = float(strength)
        video = generator.generate(job.prompt, **kwargs)
        if state.abort:  # e.g. timed out while the generator ignored the callback
            raise JobAborted(state.abort)
        return video

    def _keep_alive(self, job: Job, state: _Running) -> None:
        """Renew the lease every ``heartbeat_seconds``; enforce the job timeout."""
        started = time.monotonic()
        while not state.done.wait(self.cfg.heartbeat_seconds):
            elapsed = time.monotonic() - started
            if elapsed > self.cfg.job_timeout_seconds and state.abort != "timeout":
                state.abort = "timeout"
                self.queue.fail(job.id, self.name, code="timeout",
                                message=f"generation took longer than {self.cfg.job_timeout_seconds:g} s")
            if state.abort == "timeout":
                if elapsed > self.cfg.job_timeout_seconds + self.cfg.timeout_grace_seconds:
                    # The generator ignores its callback: only leaving frees this worker.
                    self.log(f"{job.id}: generator did not stop after the timeout; exiting")
                    os._exit(TIMEOUT_EXIT_CODE)
                continue
            if not self.queue.heartbeat(job.id, self.name, state.progress):
                state.abort = state.abort or "deleted or lost"
            if self._parent is not None and os.getppid() != self._parent:
                self.stop.set()  # the job goes back to the queue at the next progress call
            self.queue.worker_seen(self.name, "busy")


def _write_outputs(out: Path, video, job: Job, cfg: ServeConfig, generator, data: Path) -> None:
    """video.mp4 (watermarked and signed by safety/output.py), thumbnail.jpg and spritesheet.jpg,
    each written whole or not at all. The thumbnails come from the watermarked frames' file."""
    from worldreel.safety.output import OutputOptions, job_payload, prompt_hash, write_output

    generation = {"mode": job.kind, "model": job.model, "weights_digest": _digest(generator), "seed": job.seed,
                  "sampling": getattr(video, "sampling", {}) or {}, "precision": getattr(generator, "precision", "fp32"),
                  "prompt_sha256": prompt_hash(job.prompt), "job_id": job.id}
    parent = data / job.input_path if job.input_path and job.kind != "create" else None
    options = OutputOptions(watermark=cfg.watermark, sign=cfg.sign, data_dir=cfg.keys_dir)
    write_output(out / "video.mp4", video.frames, video.fps, generation, options=options,
                 payload=job_payload(job.id), parent=parent)
    write_bytes(out / "thumbnail.jpg", media.encode_image(media.thumbnail(video.frames)), durable=True)
    write_bytes(out / "spritesheet.jpg", media.encode_image(media.spritesheet(video.frames)), durable=True)


_DIGESTS: dict[int, str | None] = {}


def _digest(generator) -> str | None:
    """The weights digest of a loaded generator, computed once per generator."""
    from worldreel.safety.output import weights_digest

    if id(generator) not in _DIGESTS:
        _DIGESTS[id(generator)] = weights_digest(generator)
    return _DIGESTS[id(generator)]


def run_worker(data: str | Path, *, models: dict[str, str] | None = None, factory: GeneratorFactory = load_generator,
               cfg: ServeConfig | None = None, handle_signals: bool = True, exit_with_parent: bool = False,
               **run_kwargs) -> int:
    """A worker process's main: stop cleanly on SIGTERM/SIGINT (the running job goes back to the queue)."""
    import signal

    worker = Worker(data, models=models, factory=factory, cfg=cfg, exit_with_parent=exit_with_parent)
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop.set())
    worker.log(f"started on {Path(data).resolve()}")
    if not worker.cfg.watermark or not worker.cfg.sign:  # research runs: say so in the log, every start
        worker.log("WARNING: outputs carry " + " and ".join(
            w for w, on in (("no watermark", not worker.cfg.watermark), ("no C2PA manifest", not worker.cfg.sign)) if on))
    return worker.run(**run_kwargs)
