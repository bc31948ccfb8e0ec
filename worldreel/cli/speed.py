"""CLI commands: ``worldreel bench speed`` (eval/speed.py): denoiser step vs diffusers' Wan, FLOP/s, real-time factor."""
from __future__ import annotations

from typing import Optional

import typer


SHORT = {"worldreel DiT": "ours (DiT)", "diffusers WanTransformer3DModel": "diffusers Wan"}  # table labels


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    groups["bench"].command("speed")(speed)


def speed(
    json_out: Optional[str] = typer.Option(None, "--json", help="write the results as JSON to this file"),
    preset: str = typer.Option("world-tiny", help="denoiser architecture to time"),
    tokens: str = typer.Option("144,576,2304", help="token counts, comma-separated (each 9 x a square)"),
    batch: int = typer.Option(2, help="items per denoiser call (2 = one guided sampling step)"),
    repeats: int = typer.Option(5, help="timed calls per measurement (best reported, median in the JSON)"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default)"),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="also time diffusers.WanTransformer3DModel"),
    model: str = typer.Option("world-tiny", help="model (name or folder) for the generation row; '' skips it"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    train: bool = typer.Option(False, "--train", help="instead: training steps of the denoiser and the autoencoder and "
                               "generation, per precision (fp32, bf16, bf16+compile), matmul peak per dtype (CPU)"),
    compile: bool = typer.Option(True, "--compile/--no-compile", help="with --train: also time bf16 + torch.compile "
                                 "(minutes of compiling on 2 cores)"),
) -> None:
    """Denoiser step time side by side with diffusers' Wan transformer, FLOP/s vs matmul peak, generation speed.

    With --train: training step time and latent tokens/s per precision, matmul peaks, and
    generation of a 4 s clip (sampling alone, and the whole process) per precision.
    """
    from worldreel.errors import UserError

    if train:
        return _train_speed(json_out, preset, repeats, threads, model, compile)

    from rich.console import Console
    from rich.table import Table

    from worldreel.eval.speed import SpeedConfig, run_speed

    try:
        token_list = [int(v) for v in tokens.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"tokens must be comma-separated whole numbers, got {tokens!r}", param="tokens") from None
    if batch < 1 or repeats < 1 or threads < 0:
        raise UserError("batch and repeats must be >= 1, threads >= 0", param="batch")
    if device not in ("cpu", "cuda") or (device == "cuda" and not __import__("torch").cuda.is_available()):
        raise UserError(f"device must be cpu or cuda (with a GPU present), got {device!r}", param="device")
    cfg = SpeedConfig(preset=preset, tokens=token_list, batch=batch, repeats=repeats, threads=threads, peer=peer,
                      model=model, device=device)
    err = Console(stderr=True)
    result = run_speed(cfg, log=lambda msg: err.print(f"[dim]{msg}…[/dim]"))

    # Table: one row per (model, tokens); then the generation row.
    m = result["machine"]
    table = Table(title=f"denoiser step ({preset}, batch {batch}) on {m['device']} x{m['threads']} threads, best of {repeats}; "
                        f"fp32 matmul peak {m['matmul_peak_gflops']:.0f} GFLOP/s")
    for col in ("model", "tokens", "params (M)", "forward (ms)", "fwd+bwd (ms)", "fwd GFLOP", "fwd % peak", "fwd+bwd % peak"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in result["denoiser"]:
        if "status" in row:
            table.add_row(SHORT.get(row["model"], row["model"]), str(row["tokens"]), "-", row["status"], "", "", "", "")
            continue
        table.add_row(SHORT.get(row["model"], row["model"]), str(row["tokens"]), f"{row['params'] / 1e6:.2f}", f"{row['forward_s'] * 1e3:.1f}",
                      f"{row['forward_backward_s'] * 1e3:.1f}", f"{row['forward_gflop']:.2f}",
                      f"{100 * row['forward_util']:.0f}%", f"{100 * row['forward_backward_util']:.0f}%")
    out = Console(width=max(Console().width, 110))
    out.print(table)
    gen = result.get("generation")
    if gen:
        if gen["status"] == "ok":
            out.print(f"generation: {gen['seconds']:g} s at {gen['size']} ({gen['frames']} frames, {gen['steps']} "
                      f"{gen['sampler']} steps, guidance {gen['guidance']:g}) took {gen['generate_s']:.2f} s: "
                      f"[bold]{gen['realtime_ratio']:.2f}x[/bold] real time ({gen['weights']})")
        else:
            out.print(f"generation: {gen['status']}")
    if json_out:
        _write_json(json_out, result)


def _write_json(json_out: str, result: dict) -> None:
    import sys

    from worldreel.atomic import write_json

    path = write_json(json_out, result)
    print(f"wrote {path}", file=sys.stderr)


def _train_speed(json_out, preset: str, repeats: int, threads: int, model: str, compile: bool) -> None:
    """``bench speed --train``: run eval/train_speed.py, print one table per model and the generation lines."""
    from rich.console import Console
    from rich.table import Table

    from worldreel.errors import UserError
    from worldreel.eval.train_speed import MODES, TrainSpeedConfig, run_train_speed

    if repeats < 1 or threads < 0:
        raise UserError("repeats must be >= 1, threads >= 0", param="repeats")
    modes = [m for m in MODES if compile or not m.endswith("+compile")]
    cfg = TrainSpeedConfig(preset=preset, repeats=repeats, threads=threads, model=model, modes=modes)
    err = Console(stderr=True)
    r = run_train_speed(cfg, log=lambda msg: err.print(f"[dim]{msg}…[/dim]"))
    out = Console(width=max(Console().width, 110))
    table = Table(title=f"training step ({preset}, {r['machine.threads']} threads, best of {repeats}); matmul peak "
                        f"fp32 {r['matmul.fp32.gflops']:.0f}, bf16 {r['matmul.bf16.gflops']:.0f} GFLOP/s")
    for col in ("model", "shape", "precision", "step (ms)", "median (ms)", "latent tok/s", "vs fp32", "first step (s)"):
        table.add_column(col, justify="left" if col in ("model", "precision") else "right")
    for prefix, label in (("train.dit", "denoiser"), ("train.dit.large", "denoiser"), ("train.vae", "autoencoder"),
                          ("train.vae.large", "autoencoder")):
        if f"{prefix}.shape" not in r:
            continue
        for mode in modes:
            step = r[f"{prefix}.{mode}.step_s"]
            ratio = r.get(f"{prefix}.fp32.step_s", float("nan")) / step
            table.add_row(label, "x".join(map(str, r[f"{prefix}.shape"])), mode, f"{step * 1e3:.0f}",
                          f"{r[f'{prefix}.{mode}.step_s_median'] * 1e3:.0f}", f"{r[f'{prefix}.{mode}.latent_tokens_per_s']:.0f}",
                          f"{ratio:.2f}x", f"{r[f'{prefix}.{mode}.first_step_s']:.1f}")
    out.print(table)
    for precision in ("fp32", "bf16"):
        if f"generate.{precision}.whole_process_s" in r:
            out.print(f"generate {r['generate.clip']} in {precision}: sampling {r[f'generate.{precision}.sampling_s']:.2f} s, "
                      f"warm generate {r[f'generate.{precision}.generate_s']:.2f} s, whole process "
                      f"{r[f'generate.{precision}.whole_process_s']:.2f} s")
    if json_out:
        _write_json(json_out, r)
