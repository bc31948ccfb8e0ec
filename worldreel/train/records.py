"""Stage records: each training run writes down how it made its weights, as it exports them.

A run that starts from another model's weights (``task.init``) inherits that model's records
when it starts (``lineage.json`` in the run folder: the model named may be replaced later, e.g.
a shipped one), and its export writes them plus its own ``StageRecord`` into
``model/training.json``. A model folder therefore always lists every stage of its lineage,
and ``train pack`` and ``train average`` only copy and join lists.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from worldreel.atomic import read_jsonl, write_json
from worldreel.config import from_dict, to_dict
from worldreel.model_folder import StageRecord, find, read_json, read_stages, write_stages

LINEAGE_FILE = "lineage.json"  # in a run folder: the stages of the model it started from, as they were then


def cli_command(task: str) -> str:
    """This process's ``worldreel train TASK ...`` command as a user would type it again (no
    ``--resume``); "" when the process was started some other way (a test, a notebook)."""
    args = sys.argv[1:]
    return "worldreel " + shlex.join(a for a in args if a != "--resume") if args[:2] == ["train", task] else ""


def command_for(given: str, task: str, preset: str, run: Path, steps: int, task_options: list[str]) -> str:
    """The command that reproduces a run: the one given (the CLI's), else one spelt from the run's
    settings; with ``--out`` added where the run folder was the default, so the card can name it."""
    if not given:
        given = f"worldreel train {task} --preset {preset} --steps {steps}" + "".join(
            f" --set {shlex.quote('task.' + o)}" for o in task_options)
    return given if "--out" in shlex.split(given) else f"{given} --out {run}"


def start_lineage(run: Path, part: str, init: str, *, resumed: bool) -> None:
    """Keep, in the run folder, the ``part`` stages of the model ``init`` names (none for a
    random start). A resumed run keeps the record its first start wrote."""
    if resumed and (run / LINEAGE_FILE).is_file():
        return
    stages = read_stages(find(init, "task.init"), part) if init else []
    write_json(run / LINEAGE_FILE, [to_dict(s) for s in stages])


def last_eval(run: Path) -> dict[str, Any]:
    """The last ``{"eval": ...}`` line of the run's log.jsonl, with its step ({} if none)."""
    found: dict[str, Any] = {}
    log = run / "log.jsonl"
    if log.is_file():
        for _, row in read_jsonl(log, bad=lambda number, reason: None):  # a line cut by a crash
            if isinstance(row, dict) and isinstance(row.get("eval"), dict) and row["eval"]:
                found = {"step": row.get("step"), **row["eval"]}
    return found


def finish_stage(run: Path, model_dir: Path, record: StageRecord) -> None:
    """Write ``model_dir/training.json``: the lineage the run started from, then ``record``."""
    stages = [from_dict(StageRecord, s) for s in (read_json(run / LINEAGE_FILE) or [])]
    record.finished = record.finished or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_stages(model_dir, stages + [record])
