"""CLI commands: ``worldreel bench vae`` (the autoencoder benchmark, ``eval/vae_bench.py``)."""
from __future__ import annotations

from typing import Optional

import typer


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    groups["bench"].command("vae")(bench_vae)


def bench_vae(
    model: Optional[str] = typer.Option(None, "--model", help="Model folder or shipped model name to measure."),
    json_out: str = typer.Option(..., "--json", help="Where to write the JSON report (written atomically)."),
    clips: int = typer.Option(64, "--clips", help="Held-out 33x64x64 reel-world clips to measure."),
    train_steps: int = typer.Option(0, "--train-steps", help="Train the spacetime and the per-frame 2-D autoencoder "
                                    "from scratch for N steps each, identically, and compare them at an equal latent budget."),
    preset: str = typer.Option("4x8x8x16", "--preset", help="Autoencoder layout for --train-steps: 4x8x8x16, 4x16x16x64, 8x8x8x32."),
    batch_size: int = typer.Option(8, "--batch-size", help="Training batch for --train-steps."),
    data: str = typer.Option("world", "--data", help="The clips: world (the reel world; 'auto' means the same)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure chunked decode memory for 4 s vs 60 s."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
) -> None:
    """Autoencoder PSNR/SSIM, compression, CPU speed and memory; spacetime vs per-frame."""
    from pathlib import Path

    from worldreel.atomic import write_json
    from worldreel.errors import UserError
    from worldreel.eval.vae_bench import VAEBenchConfig, run_bench

    if clips < 1:
        raise UserError("must be at least 1", param="clips")
    if train_steps < 0:
        raise UserError("must be 0 or more", param="train-steps")
    out = Path(json_out)
    if not out.parent.exists():
        raise UserError(f"folder {out.parent} does not exist", param="json")
    if data not in ("world", "auto"):
        raise UserError(f"the autoencoder bench measures reel-world clips: give world, not {data!r}", param="data")
    cfg = VAEBenchConfig(clips=clips, train_steps=train_steps, preset=preset, batch_size=batch_size,
                         memory=memory, train_seed=seed)
    report = run_bench(cfg, model)
    write_json(out, report)
    rows = [(k, v) for k, v in report.items() if k in ("model",)] + list(report.get("comparison", {}).items())
    for name, row in rows:
        if isinstance(row, dict):
            typer.echo(f"{name:>13}: PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  ratio {row['compression_ratio']}x  "
                       f"encode {row['encode_fps']} fps  decode {row['decode_fps']} fps")
    typer.echo(f"wrote {out}")
