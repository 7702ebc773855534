"""SQLite journal of every study's state: what makes a batch resumable.

Each study moves ``pending -> running -> done | error``. The finished record
(the JSON line) is committed in the same transaction that marks the study
done, so the journal, not the JSONL file, is the truth: after a ``kill -9`` a
rerun finds finished studies finished, re-runs the ones caught ``running``
and rewrites the JSONL from the journal, so every study appears exactly once.
SR UIDs are fixed when a study is first claimed, so a retried study pushes
the same SOP instance again (the PACS replaces it) instead of a duplicate.

Commits are grouped (all discovered studies in one transaction, a batch's
claims and results in one each) and the WAL runs with ``synchronous=NORMAL``:
a commit is then safe against the process being killed (``kill -9``), and a
power cut can at worst roll back the last few commits, whose studies are then
redone with the same UIDs. Either way no study is lost or duplicated.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydicom.uid import generate_uid

from medplug.errors import MedplugError

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    key TEXT PRIMARY KEY,
    ordinal INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    locator TEXT NOT NULL,
    sr_series_uid TEXT,
    sr_sop_uid TEXT,
    sc_series_uid TEXT,
    sc_sop_uid TEXT,
    record TEXT,
    updated REAL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

PENDING, RUNNING, DONE, ERROR = "pending", "running", "done", "error"


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[Journal, P], R]) -> Callable[Concatenate[Journal, P], R]:
    """Run a journal method holding the connection's lock (the writer thread shares it)."""

    @functools.wraps(method)
    def wrapper(self: Journal, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class StudyEntry:
    """One study as the journal knows it."""

    key: str
    state: str
    attempts: int
    locator: dict[str, Any]
    sr_series_uid: str
    sr_sop_uid: str
    sc_series_uid: str
    sc_sop_uid: str


class Journal:
    """The study-state table of one output folder (``<out>/journal.sqlite``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the batch's threads (the output writer finishes
        # studies while the main thread claims new ones), serialised by a lock.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ run settings

    @_locked
    def secret(self) -> str:
        """A random key kept with the journal, used to hash identifiers for logs."""
        return self._meta_default("hash_secret", secrets.token_hex(16))

    @_locked
    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume a folder that was started with different plugins or options."""
        stored = self._meta_default("settings", json.dumps(settings, sort_keys=True))
        if json.loads(stored) != json.loads(json.dumps(settings, sort_keys=True)):
            raise MedplugError(
                f"{self.path.parent}: this output folder was started with settings "
                f"{stored}; rerun with the same settings or use a new --out folder"
            )

    def _meta_default(self, name: str, default: str) -> str:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, default))
        return self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]

    # ------------------------------------------------------------------ states

    def add(self, key: str, locator: dict[str, Any]) -> bool:
        """Record a discovered study; returns False if it was already known."""
        return self.add_many([(key, locator)]) == 1

    @_locked
    def add_many(self, studies: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Record discovered studies in one transaction; returns how many were new."""
        added = 0
        now = time.time()
        with self._db:
            (count,) = self._db.execute("SELECT COUNT(*) FROM studies").fetchone()
            for key, locator in studies:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO studies (key, ordinal, locator, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (key, count + added, json.dumps(locator), now),
                )
                added += cursor.rowcount
        return added

    @_locked
    def add_or_reopen(self, key: str, locator: dict[str, Any]) -> None:
        """A listener got (more) instances of a study: new, or finished and to be redone."""
        if not self.add(key, locator):
            with self._db:
                self._db.execute(
                    "UPDATE studies SET state = 'pending', record = NULL, locator = ?, "
                    "updated = ? WHERE key = ? AND state IN ('done', 'error')",
                    (json.dumps(locator), time.time(), key),
                )

    @_locked
    def pending_or_interrupted(self) -> list[StudyEntry]:
        rows = self._db.execute(
            "SELECT key FROM studies WHERE state IN ('pending', 'running') ORDER BY ordinal"
        ).fetchall()
        return [self.get(key) for (key,) in rows]

    @_locked
    def requeue_interrupted(self, retry_errors: bool = False) -> int:
        """Studies left ``running`` by a killed run (and errors, if asked) go back to pending."""
        states = (RUNNING, ERROR) if retry_errors else (RUNNING,)
        marks = ",".join("?" * len(states))
        with self._db:
            cursor = self._db.execute(
                f"UPDATE studies SET state = 'pending', record = NULL WHERE state IN ({marks})",
                states,
            )
        return cursor.rowcount

    @_locked
    def pending(self) -> list[StudyEntry]:
        """Every pending study, each given its stable SR/SC UIDs (one transaction)."""
        rows = self._db.execute(
            "SELECT key FROM studies WHERE state = 'pending' ORDER BY ordinal"
        ).fetchall()
        keys = [key for (key,) in rows]
        self._claim(keys)
        return [self.get(key) for key in keys]

    @_locked
    def claim_identity(self, key: str) -> StudyEntry:
        """The study's entry, giving it stable SR/SC UIDs the first time it is seen."""
        self._claim([key])
        return self.get(key)

    def _claim(self, keys: list[str]) -> None:
        with self._db:
            self._db.executemany(
                "UPDATE studies SET sr_series_uid = ?, sr_sop_uid = ?, sc_series_uid = ?, "
                "sc_sop_uid = ? WHERE key = ? AND sr_sop_uid IS NULL",
                [(generate_uid(), generate_uid(), generate_uid(), generate_uid(), key)
                 for key in keys],
            )  # fmt: skip

    @_locked
    def get(self, key: str) -> StudyEntry:
        row = self._db.execute(
            "SELECT key, state, attempts, locator, sr_series_uid, sr_sop_uid, "
            "sc_series_uid, sc_sop_uid FROM studies WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise KeyError(key)
        return StudyEntry(
            key=row[0],
            state=row[1],
            attempts=row[2],
            locator=json.loads(row[3]),
            sr_series_uid=row[4],
            sr_sop_uid=row[5],
            sc_series_uid=row[6],
            sc_sop_uid=row[7],
        )

    def mark_running(self, key: str) -> None:
        self.mark_running_many([key])

    @_locked
    def mark_running_many(self, keys: Iterable[str]) -> None:
        """Studies handed to a decoder: a kill from now on means they are redone."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "UPDATE studies SET state = 'running', attempts = attempts + 1, updated = ? "
                "WHERE key = ?",
                [(now, key) for key in keys],
            )

    def finish(self, key: str, record: dict[str, Any]) -> None:
        """Mark done or error together with its output record, in one transaction."""
        self.finish_many([(key, record)])

    @_locked
    def finish_many(self, finished: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Mark studies done or error together with their records, in one transaction."""
        now = time.time()
        rows = [
            (DONE if record.get("status") == "ok" else ERROR, json.dumps(record, sort_keys=True),
             now, key)
            for key, record in finished
        ]  # fmt: skip
        with self._db:
            self._db.executemany(
                "UPDATE studies SET state = ?, record = ?, updated = ? WHERE key = ?", rows
            )

    # ------------------------------------------------------------------ reading

    def records(self, page: int = 500) -> Iterator[dict[str, Any]]:
        """Finished records in discovery order (what the JSONL file must hold).

        Read a page at a time, so memory stays flat however many studies there are.
        """
        after = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT ordinal, record FROM studies WHERE record IS NOT NULL "
                    "AND ordinal > ? ORDER BY ordinal LIMIT ?",
                    (after, page),
                ).fetchall()
            for _, record in rows:
                yield json.loads(record)
            if len(rows) < page:
                return
            after = rows[-1][0]

    @_locked
    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall()
        return {state: count for state, count in rows}
