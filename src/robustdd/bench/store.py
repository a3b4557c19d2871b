"""The result store: an SQLite index of jobs beside a tree of checksummed artifacts.

Layout of a store directory::

    index.sqlite            jobs (key, kind, spec, deps, status, worker, heartbeat, ...)
    artifacts/<key>/        what a finished job produced (a distilled set, record.json)

Guarantees:

* **Nothing half-written is ever used.** A job writes its artifact into
  ``artifacts/.tmp-<key>-<worker>/``, then renames it to ``artifacts/<key>/`` (one atomic
  rename) and only then marks the job ``done`` with the artifact's SHA-256 (over every file,
  in name order) in one transaction. A worker killed at any point leaves either no artifact, a
  stray temporary directory (ignored, removed on the next claim of that job), or a complete
  artifact whose job is not yet ``done``: the next run verifies its checksum and adopts it
  instead of redoing the work.
* **Concurrent workers neither lose nor duplicate work.** Claims run in ``BEGIN IMMEDIATE``
  transactions (SQLite WAL mode), so exactly one worker gets a job. A ``running`` job whose
  worker is gone (same host and the process no longer exists, or its heartbeat is older than
  the lease) can be claimed again.
* **Dependencies** (distill → evaluate) are read from the store: a job is claimable when every
  job it depends on is ``done``; a failed dependency fails its dependants.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdd.bench.grid import Job
from robustdd.errors import CorruptDataError

__all__ = ["ClaimedJob", "ResultStore", "artifact_digest", "worker_id"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    deps TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    worker TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    error TEXT,
    created REAL NOT NULL,
    finished REAL,
    seconds REAL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
STORE_FORMAT = "robustdd.bench-store"
STORE_VERSION = 1
DEFAULT_LEASE = 3600.0  # seconds without a heartbeat after which a running job is reclaimed


def worker_id(run: str | None = None) -> str:
    """``host:pid`` of this process, with ``/run`` appended when a run token is given."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}/{run}" if run else base


def _alive(worker: str | None) -> bool:
    """Whether ``worker`` (``host:pid[/run]``) may still be running (other hosts: assumed)."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.split("/", 1)[0].rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def artifact_digest(path: Path) -> str:
    """SHA-256 over every file under ``path`` (relative names and contents, in name order)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker now owns."""

    key: str
    kind: str
    spec: dict[str, Any]
    deps: tuple[str, ...]


class ResultStore:
    """The store in ``root`` (created if missing)."""

    def __init__(self, root: str | Path, *, lease: float = DEFAULT_LEASE):
        self.root = Path(root)
        self.lease = float(lease)
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "index.sqlite"
        self._refuse_foreign()
        with self._connect() as db:
            db.executescript(SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            if row is None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)",
                           (json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}),))
            else:
                found = json.loads(row[0])
                if found.get("format") != STORE_FORMAT or found.get("version") != STORE_VERSION:
                    raise CorruptDataError(f"{self.path}: not a robustdd bench store of version "
                                           f"{STORE_VERSION} (found {found})")

    def _refuse_foreign(self) -> None:
        """Refuse, without writing to it, an existing database that holds another program's
        tables (opening it read-write would switch it to WAL and add our tables)."""
        if not self.path.is_file():
            return
        try:
            db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise CorruptDataError(f"{self.path}: corrupt store index ({exc})") from exc
        if tables and "meta" not in tables:
            raise CorruptDataError(
                f"{self.path}: not a robustdd bench store (it holds the tables "
                f"{', '.join(sorted(tables))} of another program); use another --store")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise CorruptDataError(f"{self.path}: cannot open the store index ({exc})") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise CorruptDataError(f"{self.path}: corrupt store index ({exc})") from exc
            raise
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- registration and queries -------------------------------------------------------------

    def register(self, jobs: Iterable[Job]) -> int:
        """Add jobs not yet known (by key); returns how many were new. Jobs are claimed in
        the order they were registered (``created``, a microsecond apart within one call)."""
        now = time.time()
        rows = [(j.key, j.kind, json.dumps(j.spec, sort_keys=True), json.dumps(list(j.deps)),
                 now + i * 1e-6) for i, j in enumerate(jobs)]
        with self._transaction() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO jobs (key, kind, spec, deps, status, created) "
                           "VALUES (?, ?, ?, ?, 'pending', ?)", rows)
            return db.total_changes - before

    def status_counts(self, keys: Iterable[str] | None = None) -> dict[str, int]:
        """Jobs per status (of ``keys``, or of the whole store)."""
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        with self._connect() as db:
            rows = db.execute("SELECT key, status FROM jobs").fetchall()
        wanted = None if keys is None else set(keys)
        for key, status in rows:
            if wanted is None or key in wanted:
                counts[status] += 1
        return counts

    def _orphaned(self, worker: str | None, beat: float | None, now: float) -> bool:
        """Whether a running job's worker is gone (dead process here, or no recent heartbeat)."""
        return not _alive(worker) or beat is None or now - beat >= self.lease

    def orphaned_keys(self) -> list[str]:
        """Running jobs whose worker is gone; the next ``bench run`` of their grid reclaims
        them."""
        now = time.time()
        with self._connect() as db:
            rows = db.execute("SELECT key, worker, heartbeat FROM jobs WHERE status = 'running' "
                              "ORDER BY created, key").fetchall()
        return [key for key, worker, beat in rows if self._orphaned(worker, beat, now)]

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every job (optionally of one status) as a dict."""
        query = "SELECT key, kind, spec, deps, status, worker, attempts, sha256, error, " \
                "finished, seconds FROM jobs"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created, key", args).fetchall()
        names = ("key", "kind", "spec", "deps", "status", "worker", "attempts", "sha256",
                 "error", "finished", "seconds")
        out = []
        for row in rows:
            item = dict(zip(names, row, strict=True))
            item["spec"], item["deps"] = json.loads(item["spec"]), json.loads(item["deps"])
            out.append(item)
        return out

    def retry_failed(self, keys: Iterable[str] | None = None) -> int:
        """Put failed jobs (of ``keys``, or all) back to pending; returns how many."""
        wanted = None if keys is None else list(keys)
        with self._transaction() as db:
            if wanted is None:
                cur = db.execute("UPDATE jobs SET status = 'pending', error = NULL "
                                 "WHERE status = 'failed'")
                return cur.rowcount
            n = 0
            for key in wanted:
                n += db.execute("UPDATE jobs SET status = 'pending', error = NULL "
                                "WHERE status = 'failed' AND key = ?", (key,)).rowcount
            return n

    # -- claiming -----------------------------------------------------------------------------

    def claim(self, worker: str | None = None, keys: Iterable[str] | None = None
              ) -> ClaimedJob | None:
        """Claim one runnable job (of ``keys``, or any): pending with all dependencies done, or
        running under a worker that is gone. Jobs whose dependency failed are failed too."""
        worker = worker or worker_id()
        wanted = None if keys is None else set(keys)
        now = time.time()
        with self._transaction() as db:
            status = dict(db.execute("SELECT key, status FROM jobs").fetchall())
            rows = db.execute("SELECT key, kind, spec, deps, status, worker, heartbeat FROM jobs "
                              "WHERE status IN ('pending', 'running') ORDER BY created, key"
                              ).fetchall()
            for key, kind, spec, deps_text, st, owner, beat in rows:
                if wanted is not None and key not in wanted:
                    continue
                deps = json.loads(deps_text)
                if any(status.get(d) == "failed" for d in deps):
                    db.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ? "
                               "WHERE key = ?", ("a job it depends on failed", now, key))
                    continue
                if any(status.get(d) != "done" for d in deps):
                    continue
                if st == "running" and not self._orphaned(owner, beat, now):
                    continue
                db.execute("UPDATE jobs SET status = 'running', worker = ?, heartbeat = ?, "
                           "attempts = attempts + 1 WHERE key = ?", (worker, now, key))
                return ClaimedJob(key, kind, json.loads(spec), tuple(deps))
        return None

    def heartbeat(self, key: str, worker: str | None = None) -> None:
        """Tell the store this worker is still on ``key``."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET heartbeat = ? WHERE key = ? AND worker = ?",
                       (time.time(), key, worker or worker_id()))

    # -- artifacts ----------------------------------------------------------------------------

    def artifact_path(self, key: str) -> Path:
        return self.artifacts / key

    def staging_path(self, key: str, worker: str | None = None) -> Path:
        """A fresh temporary directory for ``key``'s artifact (stale ones are removed)."""
        for stale in self.artifacts.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        safe = (worker or worker_id()).replace(":", "_").replace("/", "_")
        path = self.artifacts / f".tmp-{key}-{safe}"
        path.mkdir(parents=True)
        return path

    def adopt_existing(self, key: str, seconds: float | None = None) -> bool:
        """If a complete artifact for ``key`` exists (a worker died between the rename and the
        commit), mark the job done without redoing it. Returns whether it did."""
        path = self.artifact_path(key)
        if not path.is_dir() or not (path / "COMPLETE").is_file():
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            return False
        self._mark_done(key, artifact_digest(path), seconds)
        return True

    def commit_artifact(self, key: str, staging: Path, seconds: float) -> None:
        """Move a finished ``staging`` directory into place and mark the job done."""
        (staging / "COMPLETE").write_text(json.dumps({"key": key, "finished": time.time()}))
        for f in staging.rglob("*"):
            if f.is_file():
                with f.open("rb") as handle:
                    os.fsync(handle.fileno())
        target = self.artifact_path(key)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        self._mark_done(key, artifact_digest(target), seconds)

    def _mark_done(self, key: str, digest: str, seconds: float | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET status = 'done', sha256 = ?, error = NULL, finished = ?, "
                       "seconds = COALESCE(?, seconds) WHERE key = ?",
                       (digest, time.time(), seconds, key))

    def fail(self, key: str, error: str) -> None:
        """Mark ``key`` failed with a one-line reason."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ? WHERE key = ?",
                       (error, time.time(), key))

    def verified_artifact(self, key: str) -> Path:
        """The artifact of a done job, after checking it against its recorded SHA-256."""
        with self._connect() as db:
            row = db.execute("SELECT status, sha256 FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] != "done":
            raise CorruptDataError(f"job {key} has no finished artifact in {self.root}")
        path = self.artifact_path(key)
        if not self._intact(key, row[1]):
            raise CorruptDataError(f"{path}: artifact missing or altered (checksum mismatch); "
                                   "rerun `robustdd bench run` with its grid: it sets the "
                                   "damaged artifact aside and redoes the job")
        return path

    def _intact(self, key: str, digest: str | None) -> bool:
        path = self.artifact_path(key)
        try:
            return path.is_dir() and artifact_digest(path) == digest
        except OSError:
            return False

    def reset_damaged(self, keys: Iterable[str]) -> list[str]:
        """Done jobs among ``keys`` whose artifact is missing or fails its checksum go back to
        pending; a damaged artifact is moved aside (``artifacts/<key>.damaged-<time>``), never
        deleted. Returns their keys."""
        wanted = set(keys)
        with self._connect() as db:
            rows = db.execute("SELECT key, sha256 FROM jobs WHERE status = 'done'").fetchall()
        damaged = [key for key, digest in rows
                   if key in wanted and not self._intact(key, digest)]
        for key in damaged:
            path = self.artifact_path(key)
            if path.exists():
                os.replace(path, self.artifacts / f"{key}.damaged-{int(time.time())}")
            with self._transaction() as db:
                db.execute("UPDATE jobs SET status = 'pending', sha256 = NULL, worker = NULL, "
                           "heartbeat = NULL, error = ? WHERE key = ? AND status = 'done'",
                           ("artifact was missing or altered; redone", key))
        return damaged
