"""A durable job queue on SQLite (WAL) with leases: jobs survive killed workers and restarts.

Why leases: a worker claims a job by writing its name and a deadline (``lease_until``) in
one transaction, and renews the deadline while it works (``heartbeat``). A worker killed
with SIGKILL simply stops renewing; the next ``claim`` by anyone first puts every job with
an expired lease back in the queue (or fails it after ``max_attempts`` claims), so no job
is ever lost and none is deleted before it is done (huey's failure mode, DEPENDENCIES.md).
``complete`` and ``fail`` only succeed for the worker that still holds the lease, so a
job completes exactly once even when a slow worker's lease was taken over.

Every transition is appended to an ``events`` table (claimed, requeued, completed, ...):
the tests and ``worldreel bench serve`` count completions from it.

All methods open short transactions on a per-thread connection, so one ``JobQueue`` may be
shared by the API's threads; each process opens its own.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

ACTIVE = ("queued", "in_progress")  # statuses that count against a key's queue bound
FINAL = ("completed", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: listing and FIFO claims
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,                    -- the key's owner id; never the key itself
    kind TEXT NOT NULL,                     -- create | remix | extend | edit
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seconds TEXT NOT NULL,                  -- total length as the API shows it ("4")
    size TEXT NOT NULL,                     -- "WxH"
    seed INTEGER NOT NULL,
    source_id TEXT,                         -- remix/extend/edit: the video it started from
    input_path TEXT,                        -- an uploaded image or video, relative to the data dir
    params TEXT NOT NULL DEFAULT '{}',      -- extra generation settings as JSON
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    output_dir TEXT,                        -- finished files, relative to the data dir
    model_prompt TEXT,                      -- the prompt as the rewriter gave it to the model
    error TEXT,                             -- JSON {"code", "message", "param"} when failed
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    pid INTEGER,
    state TEXT NOT NULL,                    -- loading | idle | busy | stopped
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
"""


class QueueFull(Exception):
    """The owner already has ``max_pending`` unfinished jobs."""


@dataclass
class Job:
    """One row of the jobs table."""

    seq: int
    id: str
    owner: str
    kind: str
    model: str
    prompt: str
    seconds: str
    size: str
    seed: int
    source_id: str | None
    input_path: str | None
    params: dict = field(default_factory=dict)
    status: str = "queued"
    progress: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    output_dir: str | None = None
    model_prompt: str | None = None
    error: dict | None = None
    deleted_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        data = dict(row)
        data["params"] = json.loads(data["params"] or "{}")
        data["error"] = json.loads(data["error"]) if data["error"] else None
        return cls(**data)


class JobQueue:
    """The jobs of one data folder (``<data>/jobs.db``)."""

    def __init__(self, path: str | Path, *, lease_seconds: float = 30.0, max_attempts: int = 3,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn().executescript(_SCHEMA)  # IF NOT EXISTS: safe when several processes start at once

    # ---- connection and transactions -------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode; every change runs inside an explicit BEGIN IMMEDIATE below,
            # which takes the write lock up front so two claimers never pick the same job.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a completed job survives a power cut, too
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> "JobQueue._Tx":
        return JobQueue._Tx(self._conn())

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _event(self, db: sqlite3.Connection, job_id: str, event: str, worker: str | None = None, detail: str | None = None) -> None:
        db.execute("INSERT INTO events (job_id, at, event, worker, detail) VALUES (?, ?, ?, ?, ?)",
                   (job_id, self.clock(), event, worker, detail))

    # ---- API side ----------------------------------------------------------------------
    def submit(self, *, owner: str, model: str, prompt: str, seconds: str, size: str, seed: int,
               kind: str = "create", source_id: str | None = None, input_path: str | None = None,
               params: dict | None = None, max_pending: int | None = None, job_id: str | None = None) -> Job:
        """Queue a job; raises ``QueueFull`` when ``owner`` already has ``max_pending`` unfinished jobs."""
        job_id = job_id or new_id()
        with self._tx() as db:
            if max_pending is not None:
                (pending,) = db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN (?, ?) AND deleted_at IS NULL",
                    (owner, *ACTIVE)).fetchone()
                if pending >= max_pending:
                    raise QueueFull(f"{pending} unfinished jobs (the limit is {max_pending})")
            db.execute(
                "INSERT INTO jobs (id, owner, kind, model, prompt, seconds, size, seed, source_id, input_path,"
                " params, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                (job_id, owner, kind, model, prompt, seconds, size, int(seed), source_id, input_path,
                 json.dumps(params or {}), self.clock()))
            self._event(db, job_id, "submitted")
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when it does not exist, is deleted, or belongs to another owner."""
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ? AND deleted_at IS NULL", (job_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return Job.from_row(row)

    def list(self, owner: str, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        """One page of ``owner``'s jobs in creation order, and whether more follow."""
        desc = order == "desc"
        where, args = "owner = ? AND deleted_at IS NULL", [owner]
        if after is not None:
            row = self._conn().execute("SELECT seq FROM jobs WHERE id = ? AND owner = ?", (after, owner)).fetchone()
            if row is None:
                raise KeyError(after)
            where += " AND seq < ?" if desc else " AND seq > ?"
            args.append(row["seq"])
        rows = self._conn().execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY seq {'DESC' if desc else 'ASC'} LIMIT ?",
            (*args, limit + 1)).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def delete(self, job_id: str, owner: str) -> Job | None:
        """Delete (or cancel, when unfinished) ``owner``'s job; its worker notices at its next heartbeat."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND owner = ? AND deleted_at IS NULL",
                             (job_id, owner)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET deleted_at = ? WHERE id = ?", (self.clock(), job_id))
            self._event(db, job_id, "cancelled" if row["status"] in ACTIVE else "deleted")
        return Job.from_row(row)

    # ---- worker side -------------------------------------------------------------------
    def requeue_expired(self) -> int:
        """Return jobs whose worker went silent to the queue (or fail them after max_attempts)."""
        with self._tx() as db:
            return self._requeue_expired(db)

    def _requeue_expired(self, db: sqlite3.Connection) -> int:
        now = self.clock()
        rows = db.execute("SELECT id, attempts, lease_owner FROM jobs WHERE status = 'in_progress' AND lease_until < ?",
                          (now,)).fetchall()
        for row in rows:
            if row["attempts"] >= self.max_attempts:
                error = {"code": "worker_lost", "param": None,
                         "message": f"the job's worker stopped {row['attempts']} times; giving up"}
                db.execute("UPDATE jobs SET status = 'failed', completed_at = ?, lease_owner = NULL, lease_until = NULL,"
                           " error = ? WHERE id = ?", (now, json.dumps(error), row["id"]))
                self._event(db, row["id"], "failed", row["lease_owner"], "lease expired, attempts exhausted")
            else:
                db.execute("UPDATE jobs SET status = 'queued', progress = 0, lease_owner = NULL, lease_until = NULL"
                           " WHERE id = ?", (row["id"],))
                self._event(db, row["id"], "requeued", row["lease_owner"], "lease expired")
        return len(rows)

    def claim(self, worker: str, models: list[str] | None = None) -> Job | None:
        """Atomically take the oldest queued job (of ``models`` when given) for ``worker``."""
        with self._tx() as db:
            self._requeue_expired(db)
            query, args = "SELECT id FROM jobs WHERE status = 'queued' AND deleted_at IS NULL", []
            if models is not None:
                query += f" AND model IN ({','.join('?' * len(models))})"
                args += list(models)
            row = db.execute(query + " ORDER BY seq LIMIT 1", args).fetchone()
            if row is None:
                return None
            now = self.clock()
            db.execute("UPDATE jobs SET status = 'in_progress', progress = 0, attempts = attempts + 1, lease_owner = ?,"
                       " lease_until = ?, started_at = ? WHERE id = ?", (worker, now + self.lease_seconds, now, row["id"]))
            self._event(db, row["id"], "claimed", worker)
        return self.get(row["id"])

    def heartbeat(self, job_id: str, worker: str, progress: int | None = None) -> bool:
        """Renew the lease (and record progress 0-100); False when the job was lost or deleted."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_until = ?, progress = COALESCE(?, progress) WHERE id = ? AND lease_owner = ?"
                " AND status = 'in_progress' AND deleted_at IS NULL",
                (self.clock() + self.lease_seconds, None if progress is None else int(progress), job_id, worker))
            return cur.rowcount == 1

    def complete(self, job_id: str, worker: str, *, output_dir: str, model_prompt: str | None = None) -> bool:
        """Mark the job completed with its files; only the lease holder can, and only once."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'completed', progress = 100, completed_at = ?, output_dir = ?, model_prompt = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = 'in_progress'"
                " AND deleted_at IS NULL", (self.clock(), output_dir, model_prompt, job_id, worker))
            if cur.rowcount == 1:
                self._event(db, job_id, "completed", worker)
            return cur.rowcount == 1

    def fail(self, job_id: str, worker: str, *, code: str, message: str, param: str | None = None) -> bool:
        """Mark the job failed (no retry: the error is in the input or the model, not the worker)."""
        error = json.dumps({"code": code, "message": message, "param": param})
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'failed', completed_at = ?, error = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ? AND status = 'in_progress' AND deleted_at IS NULL",
                (self.clock(), error, job_id, worker))
            if cur.rowcount == 1:
                self._event(db, job_id, "failed", worker, code)
            return cur.rowcount == 1

    def release(self, job_id: str, worker: str) -> bool:
        """Give a claimed job back untouched (a worker shutting down cleanly); the claim is not counted."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
                " lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = 'in_progress'", (job_id, worker))
            if cur.rowcount == 1:
                self._event(db, job_id, "released", worker)
            return cur.rowcount == 1

    def worker_seen(self, worker: str, state: str, pid: int | None = None) -> None:
        """Record that ``worker`` is alive and what it is doing (for /healthz and the benchmark)."""
        now = self.clock()
        with self._tx() as db:
            db.execute("INSERT INTO workers (name, pid, state, started_at, seen_at) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT(name) DO UPDATE SET state = excluded.state, seen_at = excluded.seen_at",
                       (worker, pid, state, now, now))

    def workers(self, within: float | None = None) -> list[dict]:
        """Workers seen in the last ``within`` seconds (all when None), stopped ones excluded."""
        rows = self._conn().execute("SELECT * FROM workers WHERE state != 'stopped' AND seen_at >= ? ORDER BY name",
                                    (self.clock() - within if within is not None else 0.0,))
        return [dict(r) for r in rows]

    # ---- inspection --------------------------------------------------------------------
    def events(self, job_id: str | None = None) -> list[dict]:
        """The transition log, oldest first (for one job or all)."""
        query, args = "SELECT job_id, at, event, worker, detail FROM events", ()
        if job_id is not None:
            query, args = query + " WHERE job_id = ?", (job_id,)
        return [dict(r) for r in self._conn().execute(query + " ORDER BY seq", args).fetchall()]

    def counts(self) -> dict[str, int]:
        """Number of live jobs per status."""
        rows = self._conn().execute("SELECT status, COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    def iter_all(self) -> Iterator[Job]:
        for row in self._conn().execute("SELECT * FROM jobs ORDER BY seq"):
            yield Job.from_row(row)


def new_id() -> str:
    """A video id in OpenAI's style: ``video_`` and 32 hex digits."""
    return "video_" + secrets.token_hex(16)
