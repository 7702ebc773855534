"""SQLite journal of every study's state: what makes a batch resumable.

Each study moves ``pending -> running -> done | error``. The finished record
(the JSON line) is committed in the same transaction that marks the study
done, so the journal, not the JSONL file, is the truth: after a ``kill -9`` a
rerun finds finished studies finished, re-runs the ones caught ``running``
and rewrites the JSONL from the journal, so every study appears exactly once.
SR UIDs are fixed when a study is first claimed, so a retried study pushes
the same SOP instance again (the PACS replaces it) instead of a duplicate.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        # One connection per thread that uses it; autocommit off, explicit transactions.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ run settings

    def secret(self) -> str:
        """A random key kept with the journal, used to hash identifiers for logs."""
        return self._meta_default("hash_secret", secrets.token_hex(16))

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
        with self._db:
            (count,) = self._db.execute("SELECT COUNT(*) FROM studies").fetchone()
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO studies (key, ordinal, locator, updated) "
                "VALUES (?, ?, ?, ?)",
                (key, count, json.dumps(locator), time.time()),
            )
        return cursor.rowcount == 1

    def add_or_reopen(self, key: str, locator: dict[str, Any]) -> None:
        """A listener got (more) instances of a study: new, or finished and to be redone."""
        if not self.add(key, locator):
            with self._db:
                self._db.execute(
                    "UPDATE studies SET state = 'pending', record = NULL, locator = ?, "
                    "updated = ? WHERE key = ? AND state IN ('done', 'error')",
                    (json.dumps(locator), time.time(), key),
                )

    def pending_or_interrupted(self) -> list[StudyEntry]:
        rows = self._db.execute(
            "SELECT key FROM studies WHERE state IN ('pending', 'running') ORDER BY ordinal"
        ).fetchall()
        return [self.get(key) for (key,) in rows]

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

    def pending(self) -> list[StudyEntry]:
        rows = self._db.execute(
            "SELECT key FROM studies WHERE state = 'pending' ORDER BY ordinal"
        ).fetchall()
        return [self.claim_identity(key) for (key,) in rows]

    def claim_identity(self, key: str) -> StudyEntry:
        """The study's entry, giving it stable SR/SC UIDs the first time it is seen."""
        with self._db:
            self._db.execute(
                "UPDATE studies SET sr_series_uid = ?, sr_sop_uid = ?, sc_series_uid = ?, "
                "sc_sop_uid = ? WHERE key = ? AND sr_sop_uid IS NULL",
                (generate_uid(), generate_uid(), generate_uid(), generate_uid(), key),
            )
        return self.get(key)

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
        with self._db:
            self._db.execute(
                "UPDATE studies SET state = 'running', attempts = attempts + 1, updated = ? "
                "WHERE key = ?",
                (time.time(), key),
            )

    def finish(self, key: str, record: dict[str, Any]) -> None:
        """Mark done or error together with its output record, in one transaction."""
        state = DONE if record.get("status") == "ok" else ERROR
        with self._db:
            self._db.execute(
                "UPDATE studies SET state = ?, record = ?, updated = ? WHERE key = ?",
                (state, json.dumps(record, sort_keys=True), time.time(), key),
            )

    # ------------------------------------------------------------------ reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Finished records in discovery order (what the JSONL file must hold)."""
        cursor = self._db.execute(
            "SELECT record FROM studies WHERE record IS NOT NULL ORDER BY ordinal"
        )
        for (record,) in cursor:
            yield json.loads(record)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall()
        return {state: count for state, count in rows}
