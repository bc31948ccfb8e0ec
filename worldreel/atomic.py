"""Atomic file writes: every file worldreel writes appears whole or not at all; and the one
reader of the JSON-lines files worldreel writes and appends to (``read_jsonl``).

A writer gets a temporary path in the destination's folder (same file system, so the final
``os.replace`` is atomic), writes it, and on success the file takes the mode any new file
would get under the process's umask (``mkstemp`` creates 0600), is optionally fsynced, and
is renamed onto the destination. On any error the temporary file is removed and the old
destination, if any, is untouched. ``durable=True`` also fsyncs the file and its folder, so
the new file survives a power cut (checkpoints, latent shards, the service's media).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    """The process umask now, read without changing it where the OS says it (Linux
    /proc/self/status), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error the
    file written there replaces ``path``. The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; an error leaves nothing behind


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any, *, durable: bool = False) -> Path:
    """``data`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(data, indent=2) + "\n", durable=durable)


class BadLine(ValueError):
    """A line of a JSON-lines file that is not JSON; the message names the file and the line."""

    def __init__(self, path: str | Path, number: int, reason: str):
        super().__init__(f"{path} line {number}: {reason}")
        self.path, self.number, self.reason = Path(path), number, reason


def read_jsonl(path: str | Path, *, bad: Callable[[int, str], None] | None = None) -> list[tuple[int, Any]]:
    """``(line number from 1, value)`` of each non-blank line of a JSON-lines file.

    A line that is not JSON raises ``BadLine``; with ``bad`` it is left out and
    ``bad(number, reason)`` is called instead (a log whose last line a kill cut short, a
    user's file whose bad lines are reported and skipped). The caller checks the values' shape.
    """
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except ValueError as err:
            if bad is None:
                raise BadLine(path, number, f"not JSON ({err})") from None
            bad(number, f"not JSON ({err})")
    return rows
