"""CLI commands for the watermark and provenance: ``detect``, ``verify``, ``bench watermark``.

    worldreel detect FILE [--json]          # ours or not: score, p-value, payload, provenance state
    worldreel verify FILE                   # the C2PA manifest: trusted / valid / invalid / unsigned
    worldreel bench watermark --count N --out DIR [--cache DIR] [--null N]

The keys are the ones in the user's data folder (``--data-dir`` for another one); see
docs/safety.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldreel.errors import UserError

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with the keys (default: $XDG_DATA_HOME/worldreel).")]


def register(groups) -> None:
    app, bench = groups[""], groups["bench"]

    @app.command("detect")
    def detect(
        file: Annotated[Path, typer.Argument(help="A video (MP4, GIF, ...) or an image to check.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Is this video ours? The invisible watermark's score, p-value and payload, and the C2PA state."""
        from worldreel.safety.inspect import inspect_file

        result = inspect_file(file, data_dir)
        if as_json:
            print(json.dumps(result, indent=2))
            return
        verdict = "ours (worldreel watermark found)" if result["ours"] else "not ours (no worldreel watermark found)"
        print(f"{file}: {verdict}")
        print(f"  score {result['score']:.4f} (threshold {result['threshold']:.4f}), p-value {result['p_value']:.2e}")
        payload = result["payload"]
        print(f"  payload: {payload if payload is not None else 'none (no payload passes its CRC)'}")
        prov = result["provenance"]
        print(f"  provenance: {prov['state']}" + (f" ({prov['action']})" if prov["action"] else ""))

    @app.command("verify")
    def verify(
        file: Annotated[Path, typer.Argument(help="The file whose C2PA manifest to check.")],
        trust: Annotated[Optional[Path], typer.Option("--trust", help="A PEM root to trust instead of the local worldreel root.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Check a file's C2PA provenance manifest: trusted, valid, invalid or unsigned (exit 1 unless trusted/valid)."""
        from worldreel.safety import provenance

        if trust is not None and not trust.is_file():
            raise UserError(f"{trust}: no such file", param="trust")
        result = provenance.verify(file, folder=data_dir, trust=trust)
        if as_json:
            print(json.dumps(result.__dict__, indent=2))
        else:
            print(f"{file}: {provenance.describe(result)}")
        if result.state not in ("trusted", "valid"):
            raise typer.Exit(1)

    @bench.command("watermark")
    def bench_watermark(
        count: Annotated[int, typer.Option("--count", help="Generated clips and true renders, each (the issue's run: 1000).")] = 1000,
        null: Annotated[int, typer.Option("--null", help="Extra clean-only true renders for the false-positive count.")] = 0,
        out: Annotated[Path, typer.Option("--out", help="Results folder (rows.jsonl, watermark.json).")] = Path("runs/bench-watermark"),
        cache: Annotated[Optional[Path], typer.Option("--cache", help="Generated clips' cache (default OUT/generated).")] = None,
        model: Annotated[str, typer.Option("--model", help="The model that generates the clips.")] = "world-tiny",
        steps: Annotated[Optional[int], typer.Option("--steps", help="Sampler steps (default: the model's).")] = None,
        generated: Annotated[Optional[int], typer.Option("--generated", help="Generated clips (default --count; 0 = true renders only).")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Robustness table: attack x detection rate / bit accuracy / false positives (resumable)."""
        from worldreel.eval import watermark_bench as wb
        from worldreel.safety import watermark

        if count < 1 or null < 0 or (generated is not None and generated < 0):
            raise UserError("--count must be 1 or more, --null and --generated 0 or more", param="count")
        cfg = wb.BenchConfig(generated=count if generated is None else generated, true=count, null=null,
                             model=model, steps=steps)
        result = wb.run(cfg, out, cache or out / "generated", key=watermark.load_key(data_dir),
                        log=lambda m: print(m, file=sys.stderr, flush=True))
        print(wb.format_table(result))
        print(f"wrote {out / 'watermark.json'}")
