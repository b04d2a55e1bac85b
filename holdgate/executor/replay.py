"""The replay store: which request_ids this executor has already run, durably and boundedly.

A signed allow stays valid until its ``expires_at``: anyone holding the record
(a log reader, a compromised runtime, a retry loop) could present it again.
The store makes each request_id run at most once:

* **Claimed before running.**  `claim` commits a row for the request_id
  *before* the handler starts, so a crash in the middle of a run leaves the
  request claimed (state ``claimed``): it is never run a second time.  At most
  once, not at least once, is the safe side for an action an agent asked for.
* **Atomic across threads and processes.**  The row is an ``INSERT`` into a
  table whose primary key is the request_id; SQLite serialises writers with
  its file lock, so of two claimants (threads, or processes sharing the file)
  exactly one inserts and the other sees the conflict.
* **Survives a restart.**  SQLite in WAL mode with ``synchronous=FULL``: a
  claim that returned is on disk before the handler runs.
* **Bounded.**  A row is only needed while its verdict could still be
  accepted: once ``expires_at`` has passed the executor refuses the verdict as
  EXPIRED anyway.  Rows are pruned ``grace`` seconds after their expiry (the
  grace covers a wall clock stepped backwards).  So the store holds at most
  the allows executed within one verdict lifetime; `max_entries` is a hard cap
  beyond that, reached only if that rate is abnormal: the store then refuses
  new claims (fail closed) rather than forget a live one.

Why SQLite and not RocksDB (which the worker uses): RocksDB admits one
process per database, and several executor processes must be able to share
one replay store; SQLite gives that, plus an atomic insert-if-absent, from the
standard library.  Keep the file on a local disk (SQLite locking over NFS is
unreliable).
"""
from __future__ import annotations

import enum
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

__all__ = ["Claim", "ReplayStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executed (
    request_id    TEXT PRIMARY KEY,
    expires_at    REAL NOT NULL,
    agent_id      TEXT NOT NULL,
    action_digest TEXT NOT NULL,
    claimed_at    REAL NOT NULL,
    state         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS executed_expiry ON executed (expires_at);
"""


class Claim(enum.Enum):
    """What `ReplayStore.claim` found."""

    CLAIMED = "claimed"          # recorded now: the caller may run the action once
    DUPLICATE = "duplicate"      # recorded before (by anyone sharing this store): refuse
    FULL = "full"                # at capacity with entries still live: refuse


class ReplayStore:
    """request_id -> claim, in one SQLite file shared by every executor that uses `path`.

    Thread-safe (one connection behind a lock) and process-safe (SQLite's
    file lock).  `busy_timeout` is how long a claim waits for another process
    holding the write lock before it raises (the executor then refuses).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_entries: int = 1_000_000,
                 grace: float = 60.0, prune_interval: float = 5.0, busy_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1 or grace < 0 or prune_interval < 0:
            raise ValueError("max_entries must be >= 1, grace and prune_interval >= 0")
        self.path = Path(path)
        self.max_entries, self.grace, self.prune_interval = max_entries, grace, prune_interval
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # rows gate replays
        # isolation_level=None: every statement commits on its own, nothing is left
        # pending in a Python-side transaction when a claim returns.
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._count = self._exact_count()
        self._next_prune = 0.0

    # ------------------------------------------------------------------ claims
    def claim(self, request_id: str, *, expires_at: float, agent_id: str = "",
              action_digest: str = "", now: float | None = None) -> Claim:
        """Record `request_id` as executed, unless it already is; durable when it returns.

        Raises `sqlite3.Error` when the store cannot answer (locked past
        `busy_timeout`, disk full): callers must treat that as a refusal.
        """
        if not math.isfinite(expires_at):
            raise ValueError("expires_at must be a finite time")
        at = self._clock() if now is None else now
        with self._lock:
            if at >= self._next_prune or self._count >= self.max_entries:
                self._prune_locked(at)
            if self._count >= self.max_entries:
                return Claim.FULL
            cursor = self._db.execute(
                "INSERT INTO executed (request_id, expires_at, agent_id, action_digest,"
                " claimed_at, state) VALUES (?, ?, ?, ?, ?, 'claimed')"
                " ON CONFLICT (request_id) DO NOTHING",
                (request_id, float(expires_at), agent_id, action_digest, at))
            if cursor.rowcount != 1:
                return Claim.DUPLICATE
            self._count += 1
            return Claim.CLAIMED

    def finish(self, request_id: str, *, ok: bool) -> None:
        """Note how the run ended (``done``/``failed``); a row left ``claimed`` crashed mid-run."""
        with self._lock:
            self._db.execute("UPDATE executed SET state = ? WHERE request_id = ?",
                             ("done" if ok else "failed", request_id))

    def state(self, request_id: str) -> str | None:
        """``claimed``, ``done``, ``failed``, or None when unknown (never run, or pruned)."""
        with self._lock:
            row = self._db.execute("SELECT state FROM executed WHERE request_id = ?",
                                   (request_id,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ bound
    def prune(self, now: float | None = None) -> int:
        """Forget claims whose verdict expired more than `grace` seconds ago; how many."""
        with self._lock:
            return self._prune_locked(self._clock() if now is None else now)

    def _prune_locked(self, now: float) -> int:
        removed = self._db.execute("DELETE FROM executed WHERE expires_at < ?",
                                   (now - self.grace,)).rowcount
        # Recount: other processes sharing the file insert and prune too.
        self._count = self._exact_count()
        self._next_prune = now + self.prune_interval
        return max(0, removed)

    def _exact_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM executed").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return self._exact_count()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
