"""A data folder made one prompt at a time and resumable: what ``train pairs`` and ``train
judge-data`` write (train/pairs.py, train/judge.py).

Such a folder holds an info file (what made it: the model's weights and the settings, the command,
at the end a summary), a rows file (one JSON line per prompt done, ``k`` its number, each naming
its item file or null) and the item files. Opening it again for the same makers keeps the rows
whose item file is still there (a lost one is made again); opening it for other makers is refused,
naming each setting that differs, so one folder never mixes two models' data.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from worldreel.atomic import read_jsonl, write_json, write_text
from worldreel.errors import UserError


def as_stored(value):
    """``value`` as the info file holds it (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The names in ``new`` whose values ``old`` does not share; a section that is a dict in
    both is compared key by key (``section.key``, either side's keys). ``ignore``: such names
    that may differ (e.g. ``config.prompts``: a folder grows)."""
    new = as_stored(new)
    named = []
    for name, value in new.items():
        was = old.get(name)
        if isinstance(value, dict) and isinstance(was, dict):
            named += [f"{name}.{key}" for key in sorted(set(value) | set(was)) if value.get(key) != was.get(key)]
        elif was != value:
            named.append(name)
    return sorted(n for n in named if n not in ignore)


@dataclass
class RowsFolder:
    out: Path
    info_file: str
    rows_file: str
    made_by: dict
    command: str
    precision: str
    rows: list[dict] = field(default_factory=list)

    def todo(self, count: int) -> list[int]:
        """The prompts of 0..count-1 not done yet (a line on stderr when some are)."""
        done = {row["k"] for row in self.rows}
        todo = [k for k in range(count) if k not in done]
        if self.rows:
            print(f"{self.out}: kept {len(self.rows)} prompts done; making {len(todo)} more", file=sys.stderr)
        return todo

    def add(self, row: dict) -> None:
        """One prompt done: the rows file is rewritten at once (an interrupted run loses at most
        the prompt it was making)."""
        self.rows.append(row)
        write_text(self.out / self.rows_file,
                   "".join(json.dumps(r) + "\n" for r in sorted(self.rows, key=lambda r: r["k"])))

    def write_info(self, **extra) -> None:
        write_json(self.out / self.info_file, {**self.made_by, "command": self.command, "precision": self.precision,
                                               **extra})


def open_rows_folder(out: str | Path, made_by: dict, *, info_file: str, rows_file: str, item: str, what: str,
                     command: str = "", precision: str = "", ignore: tuple[str, ...] = (),
                     defaults: dict | None = None) -> RowsFolder:
    """Open (or start) the folder ``out`` for ``made_by``; its info file is written at once.

    item: the rows' key naming their item file; what: the folder's contents in the refusal
    ("pairs"); ignore: as in ``differences``; defaults: per section, the values of settings an
    older folder does not name (an option added since had its default then). A call without a
    command keeps the command that made the folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", param="out")
    info_path = out / info_file
    if info_path.is_file():
        from worldreel.model_folder import read_json

        old = read_json(info_path) or {}  # unreadable: made otherwise in every respect
        for section, values in (defaults or {}).items():
            if isinstance(old.get(section), dict):
                old[section] = {**as_stored(values), **old[section]}
        differ = differences(old, made_by, ignore)
        if differ:
            raise UserError(f"{out} holds {what} made otherwise (differ in {', '.join(differ)}); use a new --out",
                            param="out")
        command = command or old.get("command", "")
    rows = [row for _, row in read_jsonl(out / rows_file)] if (out / rows_file).is_file() else []
    kept = [row for row in rows if not row.get(item) or (out / row[item]).is_file()]  # a lost item is made again
    folder = RowsFolder(out, info_file, rows_file, as_stored(made_by), command, precision, kept)
    folder.write_info()
    return folder

