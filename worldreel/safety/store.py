"""The user's worldreel data folder, where secrets made on first use live (never in the repo).

``$XDG_DATA_HOME/worldreel`` (default ``~/.local/share/worldreel``), following the XDG base
directory spec; callers and tests may pass another folder. Secrets (the watermark key, the
signing key) are written atomically with mode 0600 in a 0700 folder, so a second process that
races the first one reads a whole file, and other users of the machine read nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

from worldreel.errors import UserError


def data_dir(folder: str | Path | None = None) -> Path:
    """The data folder (created 0700 when missing): ``folder`` if given, else the XDG one."""
    if folder is None:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        folder = Path(base) / "worldreel"
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise UserError(f"cannot create the worldreel data folder {folder}: {err}", param="data_dir") from None
    return folder


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 unless the file already exists (first writer wins)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # link() fails when the target exists, so two processes creating the key at once agree on one.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
