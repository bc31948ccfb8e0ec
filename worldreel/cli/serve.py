"""CLI commands: ``worldreel serve``, ``worldreel worker`` and ``worldreel bench serve``.

    worldreel serve --model world-tiny --workers 2            # http://127.0.0.1:8000 (studio at /)
    worldreel serve --host 0.0.0.0 --keys keys.txt            # other machines need API keys
    worldreel worker --data worldreel-data                    # one more worker on the same queue
    worldreel bench serve --clients 4 --jobs 16 --workers 2   # jobs/minute, API latency, exactly-once
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    app, bench = groups[""], groups["bench"]

    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on; anything but loopback needs API keys."),
        port: int = typer.Option(8000, help="TCP port."),
        workers: int = typer.Option(1, min=0, help="Worker processes to start (0: run `worldreel worker` yourself)."),
        data: Path = typer.Option(Path("worldreel-data"), help="Folder for the job database, uploads and videos."),
        keys: Optional[Path] = typer.Option(None, help="File of API keys, one per line (# comments)."),
        api_key: List[str] = typer.Option([], "--api-key", envvar="WORLDREEL_API_KEY",
                                          help="An API key (repeatable); also read from $WORLDREEL_API_KEY."),
        model: List[str] = typer.Option(["world-tiny"], help="Model to serve, by name or folder (repeatable)."),
        device: str = typer.Option("cpu", help="Device the workers generate on (cpu, cuda, ...)."),
        max_pending: int = typer.Option(8, min=1, help="Unfinished jobs allowed per key (more answer 429)."),
        job_timeout: float = typer.Option(900.0, min=1.0, help="Seconds before a running generation fails."),
        steps: Optional[int] = typer.Option(None, min=1, help="Sampler steps per video (default: the model's)."),
        no_watermark: bool = typer.Option(False, "--no-watermark", help="Research only: outputs carry no invisible watermark (logged)."),
        no_sign: bool = typer.Option(False, "--no-sign", help="Research only: outputs carry no C2PA manifest (logged)."),
        keys_dir: Optional[Path] = typer.Option(None, "--keys-dir", help="Watermark and signing keys (default: $XDG_DATA_HOME/worldreel)."),
    ) -> None:
        """Serve the OpenAI-compatible Videos API and the web studio, with worker processes."""
        from worldreel.serve.app import create_app
        from worldreel.serve.auth import KeyRing, check_bind
        from worldreel.serve.config import ServeConfig
        from worldreel.serve.models import resolve_models
        from worldreel.serve.runner import WorkerPool

        ring = KeyRing.load(keys, api_key)
        check_bind(host, ring)
        served = resolve_models(model)
        cfg = ServeConfig(max_pending_per_key=max_pending, job_timeout_seconds=job_timeout, watermark=not no_watermark,
                          sign=not no_sign, keys_dir=str(keys_dir) if keys_dir else None)
        marks = ["--no-watermark"] * no_watermark + ["--no-sign"] * no_sign + (["--keys-dir", str(keys_dir)] if keys_dir else [])
        if no_watermark or no_sign:
            print(f"worldreel: WARNING: research mode, {' '.join(marks)}: outputs are not fully marked", file=sys.stderr)
        app = create_app(data, served, keys=ring, cfg=cfg)
        import threading

        # Load the prompt policy's text encoder off the request path, so the first request is not slow.
        threading.Thread(target=app.state.policy.warm, daemon=True, name="policy-warm").start()
        access = f"{len(ring)} API key(s)" if not ring.is_open else "no API keys: open to this machine only"
        print(f"worldreel: serving {', '.join(served)} on http://{host}:{port} (studio /, API /v1) with "
              f"{workers} worker(s); {access}; data in {data.resolve()}", file=sys.stderr, flush=True)
        pool = WorkerPool(data, workers, models=[m.source for m in served.values()], device=device,
                          job_timeout=job_timeout, steps=steps, extra_args=marks).start() if workers else None
        import uvicorn

        try:
            uvicorn.run(app, host=host, port=port, log_level="info")
        finally:
            if pool is not None:
                pool.stop()

    @app.command("worker")
    def worker(
        data: Path = typer.Option(Path("worldreel-data"), help="The data folder of a `worldreel serve`."),
        model: List[str] = typer.Option([], help="Only take jobs for these models (name or folder; default: any)."),
        device: str = typer.Option("cpu", help="Device to generate on."),
        lease: float = typer.Option(30.0, min=1.0, help="Seconds of silence after which a job is given to another worker."),
        job_timeout: float = typer.Option(900.0, min=1.0, help="Seconds before a running generation fails."),
        steps: Optional[int] = typer.Option(None, min=1, help="Sampler steps per video (default: the model's)."),
        threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (default: torch's choice)."),
        no_watermark: bool = typer.Option(False, "--no-watermark", help="Research only: outputs carry no invisible watermark (logged)."),
        no_sign: bool = typer.Option(False, "--no-sign", help="Research only: outputs carry no C2PA manifest (logged)."),
        keys_dir: Optional[Path] = typer.Option(None, "--keys-dir", help="Watermark and signing keys (default: $XDG_DATA_HOME/worldreel)."),
        exit_with_parent: bool = typer.Option(False, hidden=True, help="Stop when the starting process is gone."),
    ) -> None:
        """Run generation jobs from a service's queue until stopped (SIGTERM returns the running job)."""
        from functools import partial

        if threads is not None:  # several workers on one CPU should split its cores, not fight over them
            import torch

            torch.set_num_threads(threads)

        from worldreel.serve.config import ServeConfig
        from worldreel.serve.models import resolve_models
        from worldreel.serve.worker import load_generator, run_worker

        if not (data / "jobs.db").exists():
            from worldreel.errors import UserError

            raise UserError(f"{data} has no jobs.db: start `worldreel serve --data {data}` first", param="data")
        models = {name: m.source for name, m in resolve_models(model).items()} if model else None
        cfg = ServeConfig(lease_seconds=lease, heartbeat_seconds=min(5.0, lease / 4), job_timeout_seconds=job_timeout,
                          watermark=not no_watermark, sign=not no_sign, keys_dir=str(keys_dir) if keys_dir else None)
        run_worker(data, models=models, factory=partial(load_generator, device=device, steps=steps), cfg=cfg,
                   exit_with_parent=exit_with_parent)

    @bench.command("serve")
    def bench_serve(
        clients: int = typer.Option(4, min=1, max=64, help="Concurrent clients."),
        jobs: int = typer.Option(16, min=1, max=1000, help="Videos to create in all."),
        workers: int = typer.Option(2, min=1, max=32, help="Worker processes."),
        model: str = typer.Option("world-tiny", help="Model name or folder."),
        random_model: bool = typer.Option(False, help="Use a randomly initialised world-tiny (no weights needed)."),
        steps: Optional[int] = typer.Option(None, min=1, help="Sampler steps per video (default: the model's)."),
        seconds: str = typer.Option("4", help="Length of each video."),
        size: str = typer.Option("64x64", help="Size of each video."),
        time_limit: float = typer.Option(900.0, min=10.0, help="Give up after this many seconds."),
        out: Optional[Path] = typer.Option(None, help="Also write the report as JSON here."),
    ) -> None:
        """Load-test a local service (127.0.0.1 only): jobs/minute, API latency while busy, exactly-once."""
        from worldreel.eval.load import LoadSettings, bench_local_service

        report = bench_local_service(LoadSettings(clients=clients, jobs=jobs, seconds=seconds, size=size,
                                                  time_limit=time_limit),
                                     workers=workers, model=model, random_model=random_model, steps=steps)
        print(report.summary())
        if out is not None:
            report.save(out)
        if not report.ok:
            raise typer.Exit(1)
