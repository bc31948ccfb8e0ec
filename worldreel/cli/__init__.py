"""The ``worldreel`` command line.

DESIGN.md names one ``cli.py``; it is a package instead so each concern keeps its commands
in its own file (``cli/world.py``, ``cli/generate.py``, ...) under STYLE rule 1, and this
file only assembles them. Each module exposes ``register(groups)`` and keeps heavy imports
(torch, PyAV) inside its commands, so ``worldreel --help`` stays instant.

A ``UserError`` (bad input) prints one line naming the parameter and exits with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

import typer

from worldreel.errors import UserError

app = typer.Typer(
    name="worldreel",
    help="worldreel: text-to-video world simulator. Generate, train, serve and measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
GROUPS: dict[str, typer.Typer] = {
    "": app,
    "world": typer.Typer(help="The reel world: render clips with exact captions.", no_args_is_help=True),
    "bench": typer.Typer(help="Benchmarks: world-bench, prediction, autoencoder, speed, watermark.", no_args_is_help=True),
    "train": typer.Typer(help="Train the autoencoder and the denoiser; build latent caches.", no_args_is_help=True),
    "safety": typer.Typer(help="The prompt policy: check a prompt, measure it, retrain its classifier.", no_args_is_help=True),
}
for _name, _group in GROUPS.items():
    if _name:
        app.add_typer(_group, name=_name)


def _register_all() -> None:
    from worldreel.cli import bench, generate, marks, predict, safety, serve, speed, train, vae, world

    for module in (world, bench, predict, vae, speed, generate, train, serve, safety, marks):
        module.register(GROUPS)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turning bad input into a one-line error."""
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool):  # click returns a typer.Exit's code here
            return code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # click's own usage errors carry their message and exit code
        if isinstance(err, _click_errors()):
            err.show()
            return err.exit_code
        raise
    return 0


def _click_errors() -> tuple[type, ...]:
    """click's usage-error base class, from click and from the copy that newer typer releases carry
    (``typer._click``), whose errors (a bad number for an option) are not click's own."""
    import importlib

    found = []
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(found)
