"""The service's durable job queue: one SQLite database (the standard library's ``sqlite3``, WAL mode) in the state
folder, one row per job, one job per study arrival.

States, in order::

    received  -> instances of the study are arriving (spooled into the job's input folder)
    queued    -> the study has been quiet for the stable time: waiting for the worker
    running   -> the worker is predicting it
    sending   -> its results are published in the job's output folder and wait to be sent (retried with back-off)
    sent      -> sent to the destination (final)
    done      -> finished, results kept in the state folder, no destination configured (final)
    failed    -> with the stage it failed in and the reason (final)

Every change is one committed transaction (``synchronous=FULL``), so a crash, ``kill -9`` or power loss loses no
state that was reported. At start, :meth:`JobQueue.recover` puts back what a stopped service left: a job that was
running is queued again unless its results were already published (then it goes on to sending), and a job that
stopped the service :data:`MAX_RUN_ATTEMPTS` times fails instead of stopping it again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECEIVED, QUEUED, RUNNING, SENDING = "received", "queued", "running", "sending"
SENT, DONE, FAILED = "sent", "done", "failed"
STATES = (RECEIVED, QUEUED, RUNNING, SENDING, SENT, DONE, FAILED)
FINAL_STATES = (SENT, DONE, FAILED)
# A job that was running when the service stopped this many times is failed rather than run again.
MAX_RUN_ATTEMPTS = 3
DATABASE_NAME = "jobs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    instances INTEGER NOT NULL DEFAULT 0,
    run_attempts INTEGER NOT NULL DEFAULT 0,
    send_attempts INTEGER NOT NULL DEFAULT 0,
    next_send_at REAL,
    received_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    sent_at REAL,
    stages TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_uid);
CREATE TABLE IF NOT EXISTS instances (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    sop_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (job_id, sop_instance_uid)
);
"""


@dataclass
class Job:
    """One row of the queue (see the module docstring for the states).

    Attributes:
        id: the job's number (the name of its folder, ``jobs/<id>/``).
        study_uid: the StudyInstanceUID (inbox studies: the folder's name when the files do not agree on one).
        source: where it came from (``dicom:<calling AE title>`` or ``inbox:<folder>``).
        state, stage, reason: where it is; for a failed job the stage it failed in and why.
        instances: the number of instances received.
        run_attempts, send_attempts: how often it was started, and sent.
        next_send_at: when the next send is due (epoch seconds), while sending.
        received_at, last_instance_at, queued_at, started_at, finished_at, sent_at: epoch seconds.
        stages: seconds per stage (receiving, waiting, predicting, the case's own stages, sending).
    """

    id: int
    study_uid: str
    source: str
    state: str
    stage: str = ""
    reason: str = ""
    instances: int = 0
    run_attempts: int = 0
    send_attempts: int = 0
    next_send_at: float | None = None
    received_at: float = 0.0
    last_instance_at: float = 0.0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    sent_at: float | None = None
    stages: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data (what the status endpoint shows)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["stages"] = json.loads(values.get("stages") or "{}")
    return Job(**values)


class JobQueue:
    """The queue in ``<state>/jobs.sqlite``; safe to use from several threads (one connection per thread) and
    several processes (SQLite's locking).

    Args:
        state_dir: the service's state folder (created).
        clock: the time source (epoch seconds).
    """

    def __init__(self, state_dir: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / DATABASE_NAME
        self.clock = clock
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)  # executescript commits by itself

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``) so that read-then-write steps do not race."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---- reading --------------------------------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        """The job with this number, or ``None``."""
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, states: tuple[str, ...] = STATES, limit: int | None = None) -> list[Job]:
        """The jobs in ``states``, newest first (at most ``limit``)."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id DESC"
        rows = self._connection().execute(sql + (f" LIMIT {int(limit)}" if limit else ""), states).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """The number of jobs in each state (every state named, zeros included)."""
        rows = self._connection().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {state: count for state, count in rows}
        return {state: found.get(state, 0) for state in STATES}

    def instance_paths(self, job_id: int) -> dict[str, str]:
        """The received instances of a job: SOPInstanceUID -> path relative to the job's input folder."""
        rows = self._connection().execute("SELECT sop_instance_uid, path FROM instances WHERE job_id = ?",
                                          (job_id,)).fetchall()
        return {uid: path for uid, path in rows}

    # ---- receiving ------------------------------------------------------------------------------------------------
    def receiving_job(self, study_uid: str, source: str) -> tuple[Job, Job | None]:
        """The job that takes the next instance of ``study_uid``: the study's job still receiving, else a new one.

        Returns:
            ``(job, earlier)``: ``earlier`` is the study's latest job when a new one was made for it (its instances
            belong to the new job too: a late series makes a new, complete run of the study), else ``None``. An
            earlier job still waiting in the queue is superseded (failed with the new job's number): it would predict
            an incomplete study.
        """
        now = self.clock()
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE study_uid = ? ORDER BY id DESC LIMIT 1", (study_uid,)).fetchone()
            if row is not None and row["state"] == RECEIVED:
                return _job(row), None
            cursor = db.execute("INSERT INTO jobs (study_uid, source, state, received_at, last_instance_at) "
                                "VALUES (?, ?, ?, ?, ?)", (study_uid, source, RECEIVED, now, now))
            job_id = int(cursor.lastrowid)
            earlier = _job(row) if row is not None else None
            if earlier is not None:
                db.execute("INSERT INTO instances (job_id, sop_instance_uid, series_instance_uid, path) "
                           "SELECT ?, sop_instance_uid, series_instance_uid, path FROM instances WHERE job_id = ?",
                           (job_id, earlier.id))
                db.execute("UPDATE jobs SET instances = (SELECT COUNT(*) FROM instances WHERE job_id = ?) WHERE id = ?",
                           (job_id, job_id))
                if earlier.state == QUEUED:
                    db.execute("UPDATE jobs SET state = ?, stage = 'queue', reason = ?, finished_at = ? WHERE id = ?",
                               (FAILED, f"superseded by job {job_id}: more instances of the study arrived", now,
                                earlier.id))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()), earlier

    def record_instance(self, job_id: int, sop_instance_uid: str, series_instance_uid: str, path: str) -> bool:
        """Record an instance written to the job's input folder (again: the same instance sent twice) and restart
        the job's quiet time. Returns False, recording nothing, when the job is no longer receiving (it was queued
        meanwhile): the instance then belongs to the study's next job."""
        now = self.clock()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != RECEIVED:
                return False
            db.execute("INSERT OR REPLACE INTO instances (job_id, sop_instance_uid, series_instance_uid, path) "
                       "VALUES (?, ?, ?, ?)", (job_id, sop_instance_uid, series_instance_uid, path))
            db.execute("UPDATE jobs SET instances = (SELECT COUNT(*) FROM instances WHERE job_id = ?), "
                       "last_instance_at = ? WHERE id = ?", (job_id, now, job_id))
        return True

    def add_received(self, study_uid: str, source: str, instances: int) -> Job:
        """A whole study that arrived at once (an inbox folder): a new job, already quiet."""
        now = self.clock()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO jobs (study_uid, source, state, instances, received_at, last_instance_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (study_uid, source, RECEIVED, instances, now, now))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (cursor.lastrowid,)).fetchone())

    def mark_queued(self, job_id: int) -> None:
        """Queue a receiving job now (a whole study taken from the inbox)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, queued_at = ? WHERE id = ? AND state = ?",
                       (QUEUED, self.clock(), job_id, RECEIVED))

    def queue_stable(self, stable_seconds: float) -> list[Job]:
        """Queue every receiving job whose last instance came at least ``stable_seconds`` ago. Returns them."""
        now = self.clock()
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = ? AND last_instance_at <= ? ORDER BY id",
                              (RECEIVED, now - stable_seconds)).fetchall()
            for row in rows:
                db.execute("UPDATE jobs SET state = ?, queued_at = ? WHERE id = ?", (QUEUED, now, row["id"]))
        return [_job(r) for r in rows]

    # ---- running --------------------------------------------------------------------------------------------------
    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it (``None`` when none is queued)."""
        now = self.clock()
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, stage = 'predict', started_at = ?, run_attempts = run_attempts + 1 "
                       "WHERE id = ?", (RUNNING, now, row["id"]))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def finish(self, job_id: int, state: str, stages: Mapping[str, float] | None = None, stage: str = "",
               reason: str = "") -> None:
        """End a run: ``state`` is :data:`SENDING`, :data:`DONE` or :data:`FAILED` (with ``stage`` and ``reason``);
        ``stages`` are merged into the job's stage times."""
        if state not in (SENDING, DONE, FAILED):
            raise ValueError(f"a run ends in sending, done or failed, not {state!r}")
        now = self.clock()
        with self._transaction() as db:
            self._merge_stages(db, job_id, stages)
            db.execute("UPDATE jobs SET state = ?, stage = ?, reason = ?, finished_at = ?, next_send_at = ? "
                       "WHERE id = ?", (state, stage, reason, now, now if state == SENDING else None,
                                        job_id))

    @staticmethod
    def _merge_stages(db: sqlite3.Connection, job_id: int, stages: Mapping[str, float] | None) -> None:
        if not stages:
            return
        row = db.execute("SELECT stages FROM jobs WHERE id = ?", (job_id,)).fetchone()
        merged = {**json.loads(row["stages"] or "{}"), **{k: round(float(v), 3) for k, v in stages.items()}}
        db.execute("UPDATE jobs SET stages = ? WHERE id = ?", (json.dumps(merged), job_id))

    # ---- sending --------------------------------------------------------------------------------------------------
    def due_sends(self) -> list[Job]:
        """The jobs waiting to be sent whose next attempt is due, oldest first."""
        rows = self._connection().execute("SELECT * FROM jobs WHERE state = ? AND next_send_at <= ? ORDER BY id",
                                          (SENDING, self.clock())).fetchall()
        return [_job(r) for r in rows]

    def sent(self, job_id: int, seconds: float) -> None:
        """The job's results were sent."""
        with self._transaction() as db:
            self._merge_stages(db, job_id, {"send": seconds})
            db.execute("UPDATE jobs SET state = ?, stage = '', reason = '', sent_at = ?, next_send_at = NULL, "
                       "send_attempts = send_attempts + 1 WHERE id = ?", (SENT, self.clock(), job_id))

    def send_failed(self, job_id: int, reason: str, retry_in: float) -> None:
        """A send failed: the job stays sending, its next attempt in ``retry_in`` seconds; the reason is kept."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET stage = 'send', reason = ?, send_attempts = send_attempts + 1, "
                       "next_send_at = ? WHERE id = ?", (reason, self.clock() + retry_in, job_id))

    # ---- restart --------------------------------------------------------------------------------------------------
    def recover(self, published: Callable[[int], bool]) -> list[tuple[Job, str]]:
        """Put back the jobs a stopped service left running.

        Args:
            published: whether a job's results were published (its output folder holds a finished run).

        Returns:
            ``(job, what was done)`` for each job that was running.
        """
        recovered = []
        now = self.clock()
        with self._transaction() as db:
            for row in db.execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,)).fetchall():
                job = _job(row)
                if published(job.id):
                    db.execute("UPDATE jobs SET state = ?, stage = '', finished_at = ?, next_send_at = ? WHERE id = ?",
                               (SENDING, now, now, job.id))
                    recovered.append((job, "its results were published before the stop: sending them"))
                elif job.run_attempts >= MAX_RUN_ATTEMPTS:
                    reason = (f"the service stopped {job.run_attempts} times while predicting this study; it is not "
                              "run again (see the job's log)")
                    db.execute("UPDATE jobs SET state = ?, stage = 'predict', reason = ?, finished_at = ? WHERE id = ?",
                               (FAILED, reason, now, job.id))
                    recovered.append((job, reason))
                else:
                    db.execute("UPDATE jobs SET state = ?, stage = '', queued_at = ? WHERE id = ?",
                               (QUEUED, now, job.id))
                    recovered.append((job, "it was running when the service stopped: queued again"))
        return recovered

    def release(self, job_id: int) -> None:
        """Queue a running job again without counting its start: the service was stopped on purpose (SIGTERM)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, stage = '', run_attempts = MAX(run_attempts - 1, 0), queued_at = ? "
                       "WHERE id = ? AND state = ?", (QUEUED, self.clock(), job_id, RUNNING))

    def requeue(self, job_id: int, reason: str) -> None:
        """Queue a running job again (its worker was lost), or fail it after :data:`MAX_RUN_ATTEMPTS` starts."""
        now = self.clock()
        with self._transaction() as db:
            row = db.execute("SELECT run_attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row["run_attempts"] >= MAX_RUN_ATTEMPTS:
                db.execute("UPDATE jobs SET state = ?, stage = 'predict', reason = ?, finished_at = ? WHERE id = ?",
                           (FAILED, f"{reason}; given up after {row['run_attempts']} attempts", now, job_id))
            else:
                db.execute("UPDATE jobs SET state = ?, stage = '', reason = ?, queued_at = ? WHERE id = ?",
                           (QUEUED, reason, now, job_id))
