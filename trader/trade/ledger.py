"""The trading ledger: one SQLite file per account (WAL), written before anything leaves.

Tables (schema version in ``PRAGMA user_version``; :data:`MIGRATIONS` upgrade older files in place):

- ``positions``: one row per position: symbol, qty (base, Decimal text), entry price and time,
  cost (quote spent), status OPEN / CLOSED, exit reason, proceeds (quote received), fees (quote
  equivalent), closed time, the entry's client order id, mode (backtest / paper / live);
- ``orders``: every order we sent, by client order id: position, role (entry, take_profit_1, ...,
  exit), side, type, status, exchange order id, executed quantity, quote, update time;
- ``decisions``: every decision with its reason (enter, virtual, skip: slots_full, below_confidence, ...);
- ``virtual``: virtual positions (signals not traded) and their outcome — labelled samples for ``tune``;
- ``equity``: snapshots (time, equity, cash, state);
- ``meta``: key/value (day start equity, last decision time).

The order *journal* (:class:`trader.exchange.journal.OrderJournal`) lives in the same file, so an
intent and the ledger row that caused it survive together.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from trader.errors import StoreError

__all__ = ["MIGRATIONS", "Ledger", "PositionRow", "virtual_samples_since"]

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE IF NOT EXISTS positions (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, qty TEXT NOT NULL,
        entry_price TEXT NOT NULL, entry_ms INTEGER NOT NULL, cost TEXT NOT NULL, status TEXT NOT NULL,
        exit_reason TEXT, proceeds TEXT NOT NULL DEFAULT '0', fees TEXT NOT NULL DEFAULT '0', closed_ms INTEGER,
        entry_cid TEXT NOT NULL UNIQUE, mode TEXT NOT NULL, left_qty TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS orders (cid TEXT PRIMARY KEY, position_id INTEGER, role TEXT NOT NULL, symbol TEXT NOT NULL,
        side TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, order_id INTEGER, executed TEXT NOT NULL DEFAULT '0',
        quote TEXT NOT NULL DEFAULT '0', updated_ms INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS decisions (t_ms INTEGER NOT NULL, symbol TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
        score REAL, probability REAL);
    CREATE TABLE IF NOT EXISTS virtual (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, entry_ms INTEGER NOT NULL, entry_price REAL NOT NULL,
        reason TEXT NOT NULL, score REAL, probability REAL, status TEXT NOT NULL, exit_reason TEXT, exit_ms INTEGER, exit_price REAL,
        net_return REAL, UNIQUE(symbol, entry_ms));
    CREATE TABLE IF NOT EXISTS equity (t_ms INTEGER PRIMARY KEY, equity TEXT NOT NULL, cash TEXT NOT NULL, state TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS positions_status ON positions(status);
    CREATE INDEX IF NOT EXISTS orders_position ON orders(position_id);
    """,
    # 2: entries sent but not booked as a position yet (what TradeEngine.recover looks for at every step)
    """
    CREATE INDEX IF NOT EXISTS orders_unbooked ON orders(role, status) WHERE position_id IS NULL;
    """,
]


@dataclass(frozen=True)
class PositionRow:
    """A ``positions`` row (amounts as Decimal)."""

    id: int
    symbol: str
    qty: Decimal
    left_qty: Decimal
    entry_price: Decimal
    entry_ms: int
    cost: Decimal
    status: str
    exit_reason: str | None
    proceeds: Decimal
    fees: Decimal
    closed_ms: int | None
    entry_cid: str
    mode: str

    @property
    def pnl(self) -> Decimal:
        """Realised quote P&L of a closed position (proceeds - cost, fees included)."""
        return self.proceeds - self.cost


_POS_COLS = "id, symbol, qty, left_qty, entry_price, entry_ms, cost, status, exit_reason, proceeds, fees, closed_ms, entry_cid, mode"


class Ledger:
    """The SQLite ledger of one account.

    Args:
        path: the database file (its directory is created).
        durable: flush every commit to the disk (paper / live); a backtest's scratch ledger need not.

    Raises:
        StoreError: not a ledger, or written by a newer ``trader``.
    """

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(f"ledger {self.path} has schema {version}, newer than this trader ({len(MIGRATIONS)})")
            for v in range(version, len(MIGRATIONS)):
                self._db.executescript("BEGIN;" + MIGRATIONS[v] + f"; PRAGMA user_version={v + 1}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"ledger {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (committed on exit, rolled back on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # ------------------------------------------------------------------ positions and orders

    def open_position(self, symbol: str, qty: Decimal, entry_price: Decimal, entry_ms: int, cost: Decimal, fees: Decimal,
                      entry_cid: str, mode: str) -> int:
        """Record a filled entry; returns the position id (idempotent on ``entry_cid``)."""
        with self.tx() as db:
            row = db.execute("SELECT id FROM positions WHERE entry_cid = ?", (entry_cid,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = db.execute(
                "INSERT INTO positions (symbol, qty, left_qty, entry_price, entry_ms, cost, status, fees, entry_cid, mode) "
                "VALUES (?, ?, ?, ?, ?, ?, 'OPEN', ?, ?, ?)",
                (symbol, str(qty), str(qty), str(entry_price), entry_ms, str(cost), str(fees), entry_cid, mode),
            )
            return int(cur.lastrowid or 0)

    def reduce_position(self, position_id: int, qty: Decimal, proceeds: Decimal, fees: Decimal, t_ms: int, reason: str) -> PositionRow:
        """Book ``qty`` sold for ``proceeds`` (net of ``fees``); closes the position when nothing is left."""
        with self.tx() as db:
            row = db.execute(f"SELECT {_POS_COLS} FROM positions WHERE id = ?", (position_id,)).fetchone()
            p = _pos(row)
            left = max(p.left_qty - qty, Decimal(0))
            status = "CLOSED" if left == 0 else "OPEN"
            db.execute(
                "UPDATE positions SET left_qty = ?, proceeds = ?, fees = ?, status = ?, exit_reason = ?, closed_ms = ? WHERE id = ?",
                (str(left), str(p.proceeds + proceeds), str(p.fees + fees), status,
                 reason if status == "CLOSED" else p.exit_reason or reason, t_ms if status == "CLOSED" else None, position_id),
            )
            return _pos(db.execute(f"SELECT {_POS_COLS} FROM positions WHERE id = ?", (position_id,)).fetchone())

    def close_dust(self, position_id: int, t_ms: int, reason: str) -> None:
        """Close a position whose remainder is below what can be sold (step / minimum notional)."""
        with self.tx() as db:
            db.execute("UPDATE positions SET status = 'CLOSED', closed_ms = ?, exit_reason = COALESCE(exit_reason, ?) WHERE id = ?",
                       (t_ms, reason, position_id))

    def positions(self, status: str | None = None) -> list[PositionRow]:
        with self._lock:
            q = f"SELECT {_POS_COLS} FROM positions" + (" WHERE status = ?" if status else "") + " ORDER BY id"
            rows = self._db.execute(q, (status,) if status else ()).fetchall()
        return [_pos(r) for r in rows]

    def record_order(self, cid: str, position_id: int | None, role: str, symbol: str, side: str, kind: str, status: str,
                     order_id: int | None, executed: Decimal, quote: Decimal, t_ms: int) -> None:
        """Insert or update one order row."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO orders (cid, position_id, role, symbol, side, type, status, order_id, executed, quote, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cid) DO UPDATE SET status = excluded.status, "
                "order_id = COALESCE(excluded.order_id, order_id), executed = excluded.executed, quote = excluded.quote, "
                "updated_ms = excluded.updated_ms, position_id = COALESCE(excluded.position_id, position_id)",
                (cid, position_id, role, symbol, side, kind, status, order_id, str(executed), str(quote), t_ms),
            )

    def unbooked_entries(self) -> list[dict[str, Any]]:
        """Entry orders sent (or about to be) whose position is not booked: ``{cid, symbol, status, updated_ms}``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT cid, symbol, status, updated_ms FROM orders WHERE position_id IS NULL AND role = 'entry' "
                "AND status IN ('PENDING', 'NEW', 'PARTIALLY_FILLED') ORDER BY rowid"
            ).fetchall()
        return [{"cid": c, "symbol": s, "status": st, "updated_ms": u} for c, s, st, u in rows]

    def orders(self, position_id: int | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        q = "SELECT cid, position_id, role, symbol, side, type, status, order_id, executed, quote, updated_ms FROM orders"
        cond, args = [], []
        if position_id is not None:
            cond.append("position_id = ?")
            args.append(position_id)
        if open_only:
            cond.append("status IN ('NEW', 'PARTIALLY_FILLED', 'PENDING')")
        if cond:
            q += " WHERE " + " AND ".join(cond)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY rowid", args).fetchall()
        keys = ("cid", "position_id", "role", "symbol", "side", "type", "status", "order_id", "executed", "quote", "updated_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ decisions, virtual, equity

    def decision(self, t_ms: int, symbol: str, action: str, reason: str, score: float | None, probability: float | None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)", (t_ms, symbol, action, reason, score, probability))

    def decisions(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute("SELECT * FROM decisions ORDER BY rowid").fetchall()

    def add_virtual(self, symbol: str, entry_ms: int, entry_price: float, reason: str, score: float, probability: float | None) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO virtual (symbol, entry_ms, entry_price, reason, score, probability, status) VALUES (?, ?, ?, ?, ?, ?, 'OPEN')",
                       (symbol, entry_ms, entry_price, reason, score, probability))

    def open_virtual(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute("SELECT id, symbol, entry_ms, entry_price FROM virtual WHERE status = 'OPEN' ORDER BY id").fetchall()

    def close_virtual(self, vid: int, reason: str, t_ms: int, price: float, net_return: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE virtual SET status = 'CLOSED', exit_reason = ?, exit_ms = ?, exit_price = ?, net_return = ? WHERE id = ?",
                       (reason, t_ms, price, net_return, vid))

    def virtual_samples(self) -> list[tuple[Any, ...]]:
        """Closed virtual positions: ``(symbol, entry_ms, score, probability, net_return, exit_reason)``."""
        with self._lock:
            return self._db.execute("SELECT symbol, entry_ms, score, probability, net_return, exit_reason FROM virtual "
                                    "WHERE status = 'CLOSED' ORDER BY id").fetchall()

    def snapshot(self, t_ms: int, equity: Decimal, cash: Decimal, state: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO equity VALUES (?, ?, ?, ?)", (t_ms, str(equity), str(cash), state))

    def equity_curve(self) -> list[tuple[int, Decimal]]:
        with self._lock:
            rows = self._db.execute("SELECT t_ms, equity FROM equity ORDER BY t_ms").fetchall()
        return [(int(t), Decimal(e)) for t, e in rows]


def _pos(row: tuple[Any, ...]) -> PositionRow:
    return PositionRow(int(row[0]), row[1], Decimal(row[2]), Decimal(row[3]), Decimal(row[4]), int(row[5]), Decimal(row[6]),
                       row[7], row[8], Decimal(row[9]), Decimal(row[10]), row[11], row[12], row[13])


def virtual_samples_since(directory: Path, since_ms: int) -> int:
    """Closed virtual positions entered after ``since_ms`` in every ledger of ``directory``
    (``ledger-*.sqlite``): the labelled samples ``ml.retrain_interval`` counts besides the store's."""
    n = 0
    for path in sorted(Path(directory).glob("ledger-*.sqlite")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
            try:
                n += int(db.execute("SELECT COUNT(*) FROM virtual WHERE status = 'CLOSED' AND entry_ms > ?", (since_ms,)).fetchone()[0])
            finally:
                db.close()
        except sqlite3.DatabaseError:
            continue
    return n
