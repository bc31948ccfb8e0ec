"""``bench predict``'s outputs for people: the printed tables and the error-against-horizon figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from worldreel.atomic import atomic_path
from worldreel.data.facts import FPS
from worldreel.eval.predict import CATEGORIES, GIVEN_FRAMES

LABELS = {
    "model": "model", "no_caption": "model, no caption", "copy_last": "copy last frame",
    "constant_velocity": "constant velocity", "truth": "truth", "autoencoder": "truth through autoencoder",
}
SHORT = {"model": "model", "no_caption": "no caption", "copy_last": "copy last", "constant_velocity": "const vel",
         "truth": "truth", "autoencoder": "autoenc"}
COLOURS = {"model": "#d62728", "no_caption": "#ff9896", "copy_last": "#7f7f7f", "constant_velocity": "#1f77b4",
           "truth": "#2ca02c", "autoencoder": "#98df8a"}


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.0%}"
    return f"{value:.3f}" if kind != "s" else f"{value:.2f}"


def print_tables(summary: dict, console=None) -> None:
    """By horizon (all objects), then by motion type over the whole continuation."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table, methods, horizons = summary["table"], summary["methods"], summary["horizons"]
    seconds = [h for h in horizons if h != "all"]
    by_h = Table(title=f"bench predict: {sum(summary['clips'].values())} clips "
                       f"({', '.join(f'{n} {s}' for s, n in summary['clips'].items() if n)}), by horizon")
    by_h.add_column("method")
    for h in seconds:
        by_h.add_column(f"pos {h}", justify="right")
    for h in seconds:
        by_h.add_column(f"ST {h}", justify="right")
    whole = Table(title="over the whole continuation (position in frame heights, lower is better; IoU higher)")
    whole.add_column("method")
    for name in ("position", "spatial IoU", "ST-IoU", "lost", "invented", "timing s"):
        whole.add_column(name, justify="right")
    for m in methods:
        rows = table[m]["all"]
        by_h.add_row(SHORT[m], *[_fmt(rows[h]["position"], "") for h in seconds],
                     *[_fmt(rows[h]["st_iou"], "") for h in seconds])
        a = rows["all"]
        whole.add_row(SHORT[m], _fmt(a["position"], ""), _fmt(a["spatial_iou"], ""), _fmt(a["st_iou"], ""),
                      _fmt(a["lost"], "pct"), _fmt(a["invented"], ""), _fmt(a["timing"], "s"))
    console.print(by_h)
    console.print(whole)
    for metric, title, kind in (("position", "position error (frame heights) over the whole continuation", ""),
                                ("timing", "contact timing error (s; a missed or invented bounce or hit counts 0.5)", "s"),
                                ("lost", "objects lost (share of object-frames)", "pct")):
        by_m = Table(title=f"by motion type: {title}")
        by_m.add_column("motion")
        by_m.add_column("events" if metric == "timing" else "obj-frames", justify="right")
        for m in methods:
            by_m.add_column(SHORT[m], justify="right")
        for cat in CATEGORIES:
            truth = table["truth"][cat]["all"]
            count = truth["events"] if metric == "timing" else truth["object_frames"]
            by_m.add_row(cat, str(count), *[_fmt(table[m][cat]["all"][metric], kind) for m in methods])
        console.print(by_m)


def write_plot(summary: dict, path, *, fps: float = FPS) -> Path:
    """Position error, lost share and per-frame motion IoU against time since the last given frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = (("position", "position error (frame heights)"), ("lost", "objects lost (share)"),
              ("frame_iou", "motion-mask IoU per frame"))
    for ax, (key, title) in zip(axes, panels):
        for m in summary["methods"]:
            values = np.array([np.nan if v is None else v for v in summary["curves"][m][key]], np.float64)
            t = (np.arange(values.size) + 1) / fps
            ax.plot(t, values, "-o", ms=2.5, lw=1.6 if m == "model" else 1.1, color=COLOURS[m], label=LABELS[m])
        for s in range(1, int(np.ceil(len(summary["curves"]["truth"][key]) / fps))):
            ax.axvline(s, color="#ccc", lw=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"seconds after the last given frame ({GIVEN_FRAMES} given)", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"bench predict: {sum(summary['clips'].values())} held-out clips", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
