"""The order journal: every order intent is written (and fsynced) before its request leaves.

SQLite in WAL mode with ``synchronous=FULL``: a row committed here survives a SIGKILL or a power
cut the moment :meth:`OrderJournal.sending` returns, and only then is the request sent (status
updates after the answer are committed without the disk flush: see :meth:`OrderJournal.update`). After a
crash, the rows still ``SENDING`` or ``UNKNOWN`` are exactly the orders whose fate must be looked
up on the exchange (by client order id) before anything is sent again — which is how a restart
never duplicates an order (:meth:`trader.exchange.trading.TradingClient.submit`).

States::

    SENDING  -> PLACED (exchange answered 200: it exists, see ``order_id``)
             -> REJECTED (exchange answered 4xx: it does not exist)
             -> UNKNOWN (timeout / 5xx / crash: it may exist) -> PLACED | NOT_PLACED
    NOT_PLACED: proven absent (not found after its recvWindow passed on the server's clock):
                it may be sent again, with the same client order id.

Table ``intents``: ``client_order_id`` (primary key), ``symbol``, ``params`` (JSON of what is
sent, Decimal as strings), ``status``, ``order_id``, ``timestamp_ms`` and ``recv_window_ms`` of
the last attempt (server clock), ``attempts``, ``created_ms`` / ``updated_ms`` (wall clock), ``error``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trader.errors import StoreError

__all__ = ["FINAL", "JournalEntry", "OrderJournal"]

#: Statuses after which nothing more is sent for the intent.
FINAL = frozenset({"PLACED", "REJECTED"})
_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class JournalEntry:
    """One row of the journal (see the module docstring for the columns)."""

    client_order_id: str
    symbol: str
    params: dict[str, Any]
    status: str
    order_id: int | None
    timestamp_ms: int | None
    recv_window_ms: int | None
    attempts: int
    error: str | None


class OrderJournal:
    """SQLite journal of order intents (thread-safe; one connection).

    Args:
        path: the database file (created with its directory), or ``":memory:"`` for tests of parsing.

    Raises:
        StoreError: the file cannot be opened or is not a journal.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the order journal at {self.path}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS intents (client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, "
                "params TEXT NOT NULL, status TEXT NOT NULL, order_id INTEGER, timestamp_ms INTEGER, "
                "recv_window_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, "
                "updated_ms INTEGER NOT NULL, error TEXT)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS intents_status ON intents(status)")
            # its own version row: the trade ledger shares the file and owns PRAGMA user_version
            self._db.execute("CREATE TABLE IF NOT EXISTS journal_info (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO journal_info VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            version = int(self._db.execute("SELECT value FROM journal_info WHERE key = 'schema'").fetchone()[0])
            if version > _SCHEMA_VERSION:
                raise StoreError(f"order journal {self.path} has schema {version}, newer than this trader ({_SCHEMA_VERSION})")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"order journal {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the order journal at {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def get(self, client_order_id: str) -> JournalEntry | None:
        """The entry of ``client_order_id``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT client_order_id, symbol, params, status, order_id, timestamp_ms, recv_window_ms, attempts, error "
                "FROM intents WHERE client_order_id = ?",
                (client_order_id,),
            ).fetchone()
        return None if row is None else _entry(row)

    def sending(self, client_order_id: str, symbol: str, params: dict[str, Any], timestamp_ms: int, recv_window_ms: int) -> None:
        """Record an attempt *before* it is sent (committed and synced on return)."""
        now = int(time.time() * 1000)
        blob = orjson.dumps(params, default=str).decode()
        with self._lock:
            self._db.execute(
                "INSERT INTO intents (client_order_id, symbol, params, status, timestamp_ms, recv_window_ms, attempts, created_ms, updated_ms) "
                "VALUES (?, ?, ?, 'SENDING', ?, ?, 1, ?, ?) ON CONFLICT(client_order_id) DO UPDATE SET status='SENDING', "
                "params=excluded.params, timestamp_ms=excluded.timestamp_ms, recv_window_ms=excluded.recv_window_ms, "
                "attempts=attempts+1, updated_ms=excluded.updated_ms, error=NULL",
                (client_order_id, symbol, blob, timestamp_ms, recv_window_ms, now, now),
            )

    def update(self, client_order_id: str, status: str, order_id: int | None = None, error: str | None = None) -> None:
        """Move an intent to ``status`` (keeps a known ``order_id``).

        Committed without waiting for the disk (``synchronous=NORMAL``: it survives a killed process,
        not a power cut): losing it is safe — the row stays SENDING / UNKNOWN and the next start looks
        the order up — whereas :meth:`sending` must reach the disk before the request leaves.
        """
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute(
                    "UPDATE intents SET status = ?, order_id = COALESCE(?, order_id), error = ?, updated_ms = ? WHERE client_order_id = ?",
                    (status, order_id, error, int(time.time() * 1000), client_order_id),
                )
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def unresolved(self) -> list[JournalEntry]:
        """Intents whose fate is not known (``SENDING`` / ``UNKNOWN``), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_order_id, symbol, params, status, order_id, timestamp_ms, recv_window_ms, attempts, error "
                "FROM intents WHERE status IN ('SENDING', 'UNKNOWN') ORDER BY created_ms"
            ).fetchall()
        return [_entry(r) for r in rows]

    def all(self) -> list[JournalEntry]:
        """Every intent, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_order_id, symbol, params, status, order_id, timestamp_ms, recv_window_ms, attempts, error "
                "FROM intents ORDER BY created_ms"
            ).fetchall()
        return [_entry(r) for r in rows]


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(row[0], row[1], orjson.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])
