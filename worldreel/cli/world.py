"""CLI commands: ``world render | caption | parse`` and ``bench render``.

    worldreel world render --count 100 --seed 0 --out clips/ [--size 64x64] [--seconds 4] [--holdout exclude]
    worldreel world caption --seed 3          # one scene's caption and facts
    worldreel world parse "two red balls fall; the camera pans left"
    worldreel bench render --clips 200 --json render.json

``world render`` writes NNNNNN.mp4 clips, ``captions.jsonl`` (one line per clip: file,
caption, facts, seed, size, seconds) and ``contact_sheet.png`` (a row of frames per clip
with its caption) to look at. Clip i comes from ``sample_scene(seed_i)`` with seed_i
derived from (--seed, i) and written to the JSONL, so any clip can be rebuilt alone.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from worldreel.errors import UserError

if TYPE_CHECKING:
    import numpy as np

SHEET_ROWS = 24  # the contact sheet shows at most this many clips
SHEET_FRAMES = 6  # frames per row, evenly spaced over the clip


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), checked by the world's size rule."""
    from worldreel.data.world import check_size

    from worldreel.config import parse_wxh

    return check_size(parse_wxh(text))


def clip_seed(seed: int, index: int) -> int:
    """The sample_scene seed of clip ``index`` of a render run started with ``seed``."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def contact_sheet(rows: list[tuple["np.ndarray", str]], frames: int = SHEET_FRAMES, scale: int = 2):
    """An image with one row per clip: ``frames`` evenly spaced frames, the caption beneath.

    rows: (clip uint8 (F, H, W, 3), caption). Returns uint8 (H_sheet, W_sheet, 3).
    """
    import textwrap

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    pad, line = 4, 13
    h, w = rows[0][0].shape[1] * scale, rows[0][0].shape[2] * scale
    width = frames * (w + pad) + pad
    chars = max(20, width // 6)
    blocks = []
    for clip, text in rows:
        idx = np.linspace(0, len(clip) - 1, frames).round().astype(int)
        wrapped = textwrap.wrap(text, chars) or [""]
        block = Image.new("RGB", (width, h + 2 * pad + line * len(wrapped)), (255, 255, 255))
        for k, f in enumerate(idx):
            img = Image.fromarray(clip[f]).resize((w, h), Image.NEAREST)
            block.paste(img, (pad + k * (w + pad), pad))
        draw = ImageDraw.Draw(block)
        for n, t in enumerate(wrapped):
            draw.text((pad, h + pad + 1 + n * line), t, fill=(0, 0, 0), font=font)
        blocks.append(np.asarray(block))
    return np.concatenate(blocks, 0)


def _render(count: int, seed: int, out: Path, size: str, seconds: float, holdout: str) -> None:
    import numpy as np
    from tqdm import tqdm

    from worldreel.atomic import write_text
    from worldreel.data.captions import caption
    from worldreel.data.facts import FPS, facts_to_dict
    from worldreel.data.render import render_clip
    from worldreel.data.video_io import write_image, write_video
    from worldreel.data.world import _check_holdout, check_seconds, sample_scene

    # 1. Check every argument before writing anything.
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}", param="count")
    wh, seconds, holdout = parse_size(size), check_seconds(seconds), _check_holdout(holdout)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", param="out")
    out.mkdir(parents=True, exist_ok=True)
    # 2. Render and encode each clip.
    lines, sheet = [], []
    for i in tqdm(range(count), desc="rendering", unit="clip", file=sys.stderr):
        s = clip_seed(seed, i)
        scene = sample_scene(s, size=wh, seconds=seconds, holdout=holdout)
        frames = render_clip(scene)
        name = f"{i:06d}.mp4"
        write_video(out / name, frames, FPS)
        text = caption(scene.facts, np.random.default_rng([s, 1]))
        lines.append({"file": name, "caption": text, "facts": facts_to_dict(scene.facts), "seed": s,
                      "size": list(wh), "seconds": seconds})
        if len(sheet) < SHEET_ROWS:
            sheet.append((frames, text))
    # 3. Captions (atomically) and the contact sheet.
    write_text(out / "captions.jsonl", "".join(json.dumps(row) + "\n" for row in lines))
    write_image(out / "contact_sheet.png", contact_sheet(sheet))
    print(f"wrote {count} clips, captions.jsonl and contact_sheet.png to {out}")


def _bench(clips: int, json_out: Optional[Path]) -> None:
    import os
    import platform
    import tempfile
    import time

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from worldreel.data.render import render_clip
    from worldreel.data.video_io import write_video
    from worldreel.data.world import sample_scene

    if clips < 1:
        raise UserError(f"clips must be at least 1, got {clips}", param="clips")
    # 1. Warm up (imports, first-call allocations), then time physics and drawing separately.
    render_clip(sample_scene(10**6))
    physics = drawing = encoding = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "warm.mp4", render_clip(sample_scene(10**6 + 1)), 8)
        for i in range(clips):
            t0 = time.perf_counter()
            scene = sample_scene(i)
            t1 = time.perf_counter()
            frames = render_clip(scene)
            t2 = time.perf_counter()
            physics, drawing = physics + t1 - t0, drawing + t2 - t1
            if i < 20:  # encoding is reported, not part of the target (training never encodes)
                write_video(Path(tmp) / "clip.mp4", frames, 8)
                encoding += time.perf_counter() - t2
    total = physics + drawing
    result = {
        "clips": clips, "size": [64, 64], "frames": int(frames.shape[0]),
        "clips_per_s_per_core": clips / total,
        "ms_per_clip": 1000 * total / clips, "ms_physics": 1000 * physics / clips, "ms_render": 1000 * drawing / clips,
        "ms_encode_h264": 1000 * encoding / min(clips, 20), "target_clips_per_s": 10.0,
        "processes": 1, "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(), "cpus_visible": os.cpu_count(),
    }
    table = Table(title="reel-world render benchmark (64x64x33, one process, one core)")
    for col in ("clips/s/core", "ms/clip", "physics ms", "render ms", "H.264 ms (not counted)", "target"):
        table.add_column(col, justify="right")
    table.add_row(f"{result['clips_per_s_per_core']:.1f}", f"{result['ms_per_clip']:.1f}", f"{result['ms_physics']:.1f}",
                  f"{result['ms_render']:.1f}", f"{result['ms_encode_h264']:.1f}", ">= 10")
    Console(stderr=False).print(table)
    print(f"torch threads {result['torch_threads']}, OMP_NUM_THREADS {result['omp_num_threads']}, "
          f"the world code itself is single-threaded (pymunk, skia raster)")
    if json_out is not None:
        from worldreel.atomic import write_json

        write_json(json_out, result)
        print(f"wrote {json_out}")


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    world, bench = groups["world"], groups["bench"]

    @world.command("render")
    def render(
        out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
        count: Annotated[int, typer.Option("--count", help="Number of clips.")] = 16,
        seed: Annotated[int, typer.Option("--seed", help="Base seed; clip i uses a seed derived from (seed, i).")] = 0,
        size: Annotated[str, typer.Option("--size", help="WxH, each side a multiple of 16.")] = "64x64",
        seconds: Annotated[float, typer.Option("--seconds", help="Clip length (1-60 s); 8 fps, 1 + 8*seconds frames.")] = 4.0,
        holdout: Annotated[str, typer.Option("--holdout", help="exclude (training), only (held-out combinations), any.")] = "exclude",
    ) -> None:
        """Render reel-world clips: NNNNNN.mp4, captions.jsonl, contact_sheet.png."""
        _render(count, seed, out, size, seconds, holdout)

    @world.command("caption")
    def caption_cmd(
        seed: Annotated[int, typer.Option("--seed", help="Scene seed (as in captions.jsonl).")] = 0,
        size: Annotated[str, typer.Option("--size", help="WxH.")] = "64x64",
        seconds: Annotated[float, typer.Option("--seconds", help="Clip length.")] = 4.0,
        holdout: Annotated[str, typer.Option("--holdout", help="exclude, only or any.")] = "exclude",
    ) -> None:
        """Print one scene's caption and facts (JSON)."""
        import numpy as np

        from worldreel.data.captions import caption
        from worldreel.data.facts import facts_to_dict
        from worldreel.data.world import check_seconds, sample_scene

        scene = sample_scene(seed, size=parse_size(size), seconds=check_seconds(seconds), holdout=holdout)
        print(json.dumps({"caption": caption(scene.facts, np.random.default_rng([seed, 1])),
                          "facts": facts_to_dict(scene.facts), "seed": seed}))

    @world.command("parse")
    def parse_cmd(text: Annotated[str, typer.Argument(help="A caption or prompt, e.g. 'a red ball falls'.")]) -> None:
        """Print the scene facts a prompt states (JSON), or what is outside the vocabulary."""
        from worldreel.data.captions import parse_caption
        from worldreel.data.facts import facts_to_dict

        print(json.dumps(facts_to_dict(parse_caption(text))))

    @bench.command("render")
    def bench_render(
        clips: Annotated[int, typer.Option("--clips", help="Clips to time.")] = 200,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here.")] = None,
    ) -> None:
        """Clips simulated and rendered per second on one core at 64x64x33 (target >= 10)."""
        _bench(clips, json_out)
