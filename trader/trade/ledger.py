"""The trading ledger: one SQLite file per account (WAL), intent written before anything leaves.

The ledger is **intent and history**; what the account holds is what the venue says. Every order is
recorded (role, rung, reason, position) *before* its request leaves; every venue trade is booked
once, by ``(epoch, symbol, trade id)``, from the venue's own trades; positions are what those fills
add up to, corrected to the venue's balances when the two disagree (``reconcile`` decisions).

Tables (schema version in ``PRAGMA user_version``; :data:`MIGRATIONS` upgrade older files in place):

- ``positions``: symbol, qty (base bought net of a base-asset commission), left_qty (still held;
  after the close, the unsellable dust), entry price (average fill), entry time, cost (quote spent),
  status OPEN / CLOSED, exit reason, proceeds (quote received net of commission), fees (quote
  equivalent), closed time, the entry's client order id, mode, ``closing`` (an exit asked for and
  not complete: retried at every step);
- ``orders``: every order we sent or are about to send, by client order id: position, role
  (:class:`~trader.trade.types.Role`), rung, reason, side, type, status
  (:class:`~trader.models.OrderStatus`, ``PENDING`` before the venue's answer), venue order id,
  executed quantity, quote, signal time, update time;
- ``fills``: every venue trade booked (ours, and others' on the symbols we trade, with no order);
- ``cursors``: per symbol, the last venue trade id booked (``myTrades?fromId=`` resumes there);
- ``decisions``: every decision with its action (:class:`~trader.trade.types.Action`) and reason;
- ``virtual``: virtual positions (signals not traded) and their outcome — labelled samples for ``tune``;
- ``snapshots``: every valuation a step decided on (a restarted step adds its own): venue-valued
  equity, free quote, the state and the day's starting equity in force (a HALT is explained by its row);
- ``meta``: key/value (``day_start`` {date, equity, t_ms}, ``reserved`` holdings, ``epoch``, ...);
- ``sim_*``: the simulated account of keyless paper trading (:class:`~trader.trade.broker.LocalBroker`).

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

import orjson

from trader.errors import StoreError
from trader.models import Fill, Order, OrderStatus
from trader.trade.types import Role

__all__ = ["MIGRATIONS", "Ledger", "OrderRow", "PositionRow", "virtual_samples_since"]

D0 = Decimal(0)
#: ledger order statuses that may still change (the venue has not said its last word)
UNSETTLED = (OrderStatus.PENDING, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, "UNKNOWN")

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
    # 2: entries sent but not booked as a position yet
    """
    CREATE INDEX IF NOT EXISTS orders_unbooked ON orders(role, status) WHERE position_id IS NULL;
    """,
    # 3: the venue is the truth: fills booked by venue trade id, typed roles (no role parsed out of a
    #    string), exits being retried, day-start equity in every snapshot, the keyless paper account
    """
    ALTER TABLE orders ADD COLUMN rung INTEGER;
    ALTER TABLE orders ADD COLUMN reason TEXT;
    ALTER TABLE orders ADD COLUMN signal_ms INTEGER;
    ALTER TABLE orders ADD COLUMN epoch INTEGER;
    UPDATE orders SET rung = CAST(substr(role, 13) AS INTEGER), role = 'take_profit' WHERE role LIKE 'take_profit\\_%' ESCAPE '\\';
    UPDATE orders SET rung = CAST(substr(role, 11) AS INTEGER), role = 'stop_loss' WHERE role LIKE 'stop\\_loss\\_%' ESCAPE '\\';
    UPDATE orders SET reason = substr(role, 6, instr(substr(role, 6) || '-', '-') - 1), role = 'exit' WHERE role LIKE 'exit-%';
    ALTER TABLE positions ADD COLUMN closing TEXT;
    CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY, t_ms INTEGER NOT NULL, equity TEXT NOT NULL, cash TEXT NOT NULL,
        state TEXT NOT NULL, day_start TEXT);
    INSERT INTO snapshots (t_ms, equity, cash, state) SELECT t_ms, equity, cash, state FROM equity ORDER BY t_ms;
    DROP TABLE equity;
    CREATE INDEX IF NOT EXISTS snapshots_t ON snapshots(t_ms);
    CREATE TABLE IF NOT EXISTS fills (epoch INTEGER NOT NULL, symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, order_id INTEGER NOT NULL,
        cid TEXT, position_id INTEGER, side TEXT NOT NULL, price TEXT NOT NULL, qty TEXT NOT NULL, quote TEXT NOT NULL,
        commission TEXT NOT NULL, commission_asset TEXT NOT NULL, time_ms INTEGER NOT NULL, booked_ms INTEGER NOT NULL,
        PRIMARY KEY (epoch, symbol, trade_id));
    CREATE INDEX IF NOT EXISTS fills_order ON fills(symbol, order_id);
    CREATE TABLE IF NOT EXISTS cursors (epoch INTEGER NOT NULL, symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, PRIMARY KEY (epoch, symbol));
    CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
    CREATE INDEX IF NOT EXISTS positions_symbol ON positions(symbol);
    CREATE INDEX IF NOT EXISTS orders_venue_id ON orders(symbol, order_id);
    CREATE TABLE IF NOT EXISTS sim_balances (asset TEXT PRIMARY KEY, free TEXT NOT NULL, locked TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS sim_orders (symbol TEXT NOT NULL, order_id INTEGER NOT NULL, client_order_id TEXT NOT NULL, side TEXT NOT NULL,
        type TEXT NOT NULL, time_in_force TEXT, price TEXT NOT NULL, orig_qty TEXT NOT NULL, stop_price TEXT NOT NULL,
        orig_quote_qty TEXT NOT NULL, time_ms INTEGER NOT NULL, order_list_id INTEGER NOT NULL, status TEXT NOT NULL,
        executed_qty TEXT NOT NULL, cum_quote TEXT NOT NULL, update_ms INTEGER NOT NULL, working_ms INTEGER NOT NULL,
        triggered INTEGER NOT NULL, lock_asset TEXT NOT NULL, locked TEXT NOT NULL, kline_id INTEGER NOT NULL, kline_filled TEXT NOT NULL,
        PRIMARY KEY (symbol, order_id));
    CREATE TABLE IF NOT EXISTS sim_lists (order_list_id INTEGER PRIMARY KEY, list_client_order_id TEXT NOT NULL, symbol TEXT NOT NULL,
        time_ms INTEGER NOT NULL, status TEXT NOT NULL, status_type TEXT NOT NULL, legs TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS sim_trades (symbol TEXT NOT NULL, id INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (symbol, id));
    CREATE TABLE IF NOT EXISTS sim_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT OR IGNORE INTO meta (key, value) VALUES ('legacy_fills', '1');
    """,
]


@dataclass(frozen=True)
class PositionRow:
    """A ``positions`` row (amounts as Decimal; see the module docstring)."""

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
    closing: str | None = None

    @property
    def pnl(self) -> Decimal:
        """Realised quote P&L (proceeds - cost; fees are already inside both)."""
        return self.proceeds - self.cost


@dataclass(frozen=True)
class OrderRow:
    """An ``orders`` row: one order of ours (amounts as Decimal)."""

    cid: str
    position_id: int | None
    role: str
    rung: int | None
    reason: str | None
    symbol: str
    side: str
    type: str
    status: str
    order_id: int | None
    executed: Decimal
    quote: Decimal
    signal_ms: int | None
    updated_ms: int
    epoch: int | None = None

    @property
    def settled(self) -> bool:
        """The venue has said its last word about it (no fill can follow)."""
        return self.status not in UNSETTLED


_POS_COLS = "id, symbol, qty, left_qty, entry_price, entry_ms, cost, status, exit_reason, proceeds, fees, closed_ms, entry_cid, mode, closing"
_ORD_COLS = "cid, position_id, role, rung, reason, symbol, side, type, status, order_id, executed, quote, signal_ms, updated_ms, epoch"


def _pos(row: tuple[Any, ...]) -> PositionRow:
    return PositionRow(int(row[0]), row[1], Decimal(row[2]), Decimal(row[3]), Decimal(row[4]), int(row[5]), Decimal(row[6]),
                       row[7], row[8], Decimal(row[9]), Decimal(row[10]), row[11], row[12], row[13], row[14])


def _ord(row: tuple[Any, ...]) -> OrderRow:
    return OrderRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], Decimal(row[10]),
                    Decimal(row[11]), row[12], int(row[13]), row[14])


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(f"ledger {self.path} has schema {version}, newer than this trader ({len(MIGRATIONS)})")
            for v in range(version, len(MIGRATIONS)):
                if v == 2 and version == 0:  # a new file: no legacy rows to protect
                    script = MIGRATIONS[v].replace("INSERT OR IGNORE INTO meta (key, value) VALUES ('legacy_fills', '1');", "")
                else:
                    script = MIGRATIONS[v]
                self._db.executescript("BEGIN;" + script + f"; PRAGMA user_version={v + 1}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"ledger {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"ledger {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.RLock()
        self._epoch: int | None = None
        self._batch = False
        self._open: list[PositionRow] | None = None  # the open positions, until one changes

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (committed on exit, rolled back on error); inside :meth:`batch`, part of the batch's."""
        with self._lock:
            if self._batch:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write inside into one transaction — for a backtest's step, whose ledger need
        not survive a crash. Never around an order that leaves for a real venue: its intent must be
        committed before it is sent."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._batch = True
            try:
                yield
            except BaseException:
                self._batch = False
                self._db.execute("ROLLBACK")
                raise
            self._batch = False
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def del_meta(self, key: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def get_json(self, key: str) -> Any:
        raw = self.get_meta(key)
        return None if raw is None else orjson.loads(raw)

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, orjson.dumps(value).decode())

    @property
    def epoch(self) -> int:
        """The venue history the fills belong to (bumped when the venue forgot trades we booked)."""
        if self._epoch is None:
            self._epoch = int(self.get_meta("epoch") or 0)
        return self._epoch

    def new_epoch(self) -> int:
        with self.tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            e = int(row[0]) + 1 if row else 1
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(e),))
        self._epoch = e
        return e

    # ------------------------------------------------------------------ orders

    def record_intent(self, cid: str, *, role: Role, symbol: str, side: str, kind: str, t_ms: int, signal_ms: int,
                      position_id: int | None = None, rung: int | None = None, reason: str | None = None) -> None:
        """Write an order we are about to send (status PENDING); a repeat of the same intent changes nothing."""
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO orders (cid, position_id, role, rung, reason, symbol, side, type, status, signal_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?)",
                (cid, position_id, str(role), rung, reason, symbol, side, kind, signal_ms, t_ms),
            )

    def update_order(self, o: Order, t_ms: int) -> None:
        """The venue's view of one of our orders (status, id, executed quantity, quote)."""
        epoch = self.epoch
        with self.tx() as db:
            db.execute("UPDATE orders SET status = ?, order_id = ?, executed = ?, quote = ?, updated_ms = ?, epoch = ? WHERE cid = ?",
                       (str(o.status), o.order_id if o.order_id >= 0 else None, str(o.executed_qty), str(o.cum_quote), t_ms, epoch,
                        o.client_order_id))

    def set_order_status(self, cid: str, status: str, t_ms: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE orders SET status = ?, updated_ms = ? WHERE cid = ?", (status, t_ms, cid))

    def order(self, cid: str) -> OrderRow | None:
        row = self._one(f"SELECT {_ORD_COLS} FROM orders WHERE cid = ?", (cid,))
        return None if row is None else _ord(row)

    def order_by_venue_id(self, symbol: str, order_id: int) -> OrderRow | None:
        """Our order with this venue id in the current venue history (epoch), or None."""
        row = self._one(f"SELECT {_ORD_COLS} FROM orders WHERE symbol = ? AND order_id = ? AND COALESCE(epoch, 0) = ?",
                        (symbol, order_id, self.epoch))
        return None if row is None else _ord(row)

    def orders(self, position_id: int | None = None, unsettled: bool = False, symbol: str | None = None) -> list[OrderRow]:
        """Our orders (oldest first), optionally of one position / symbol, or only the unsettled ones."""
        q = f"SELECT {_ORD_COLS} FROM orders"
        cond: list[str] = []
        args: list[Any] = []
        if position_id is not None:
            cond.append("position_id = ?")
            args.append(position_id)
        if symbol is not None:
            cond.append("symbol = ?")
            args.append(symbol)
        if unsettled:
            cond.append(f"status IN ({', '.join('?' * len(UNSETTLED))})")
            args += [str(s) for s in UNSETTLED]
        if cond:
            q += " WHERE " + " AND ".join(cond)
        return [_ord(r) for r in self._all(q + " ORDER BY rowid", args)]

    # ------------------------------------------------------------------ fills and positions

    def cursor(self, symbol: str, epoch: int | None = None) -> int | None:
        """The last venue trade id booked on ``symbol`` (in this epoch), or None."""
        row = self._one("SELECT trade_id FROM cursors WHERE epoch = ? AND symbol = ?", (self.epoch if epoch is None else epoch, symbol))
        return None if row is None else int(row[0])

    def set_cursor(self, symbol: str, trade_id: int, epoch: int | None = None) -> None:
        """Record ``trade_id`` as the next venue trade id to fetch on ``symbol`` (never moves back)."""
        e = self.epoch if epoch is None else epoch
        with self.tx() as db:
            db.execute("INSERT INTO cursors (epoch, symbol, trade_id) VALUES (?, ?, ?) ON CONFLICT(epoch, symbol) DO UPDATE SET "
                       "trade_id = MAX(trade_id, excluded.trade_id)", (e, symbol, trade_id))

    def booked(self, symbol: str, trade_id: int, epoch: int | None = None) -> dict[str, Any] | None:
        row = self._one("SELECT order_id, qty, side FROM fills WHERE epoch = ? AND symbol = ? AND trade_id = ?",
                        (self.epoch if epoch is None else epoch, symbol, trade_id))
        return None if row is None else {"order_id": int(row[0]), "qty": Decimal(row[1]), "side": row[2]}

    def book_fill(self, f: Fill, row: OrderRow | None, base: str, quote: str, t_ms: int, mode: str) -> int | None:
        """Book one venue trade exactly once (by epoch, symbol, trade id) and apply it to its position.

        A BUY of an entry order opens or grows the entry's position (quantity net of a commission
        paid in the base asset, cost in quote, average entry price); a SELL of one of our exits
        reduces its position (proceeds = quote received - a quote commission). A trade of an order
        we do not know is booked with no position (the balance check deals with it). A commission in
        a third asset (BNB) is recorded but not valued.

        Returns:
            The position id it applied to, or None (already booked, or not ours).
        """
        epoch = self.epoch
        side = "BUY" if f.is_buyer else "SELL"
        fee_quote = f.commission if f.commission_asset == quote else (f.commission * f.price if f.commission_asset == base else D0)
        base_fee = f.commission if f.commission_asset == base else D0
        self._open = None
        with self.tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO fills (epoch, symbol, trade_id, order_id, cid, position_id, side, price, qty, quote, commission, "
                "commission_asset, time_ms, booked_ms) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (epoch, f.symbol, f.trade_id, f.order_id, row.cid if row else None, side, str(f.price), str(f.qty), str(f.quote),
                 str(f.commission), f.commission_asset, f.time_ms, t_ms),
            )
            if cur.rowcount == 0 or row is None:
                return None
            pid = row.position_id
            if row.role == Role.ENTRY and side == "BUY":
                if pid is None:
                    found = db.execute("SELECT id FROM positions WHERE entry_cid = ?", (row.cid,)).fetchone()
                    if found is None:
                        c = db.execute(
                            "INSERT INTO positions (symbol, qty, left_qty, entry_price, entry_ms, cost, status, fees, entry_cid, mode) "
                            "VALUES (?, '0', '0', '0', ?, '0', 'OPEN', '0', ?, ?)",
                            (f.symbol, row.signal_ms if row.signal_ms is not None else f.time_ms, row.cid, mode))
                        pid = int(c.lastrowid or 0)
                    else:
                        pid = int(found[0])
                    db.execute("UPDATE orders SET position_id = ? WHERE cid = ?", (pid, row.cid))
                p = _pos(db.execute(f"SELECT {_POS_COLS} FROM positions WHERE id = ?", (pid,)).fetchone())
                gross = p.cost / p.entry_price + f.qty if p.entry_price else f.qty
                cost = p.cost + f.quote
                db.execute("UPDATE positions SET qty = ?, left_qty = ?, cost = ?, entry_price = ?, fees = ? WHERE id = ?",
                           (str(p.qty + f.qty - base_fee), str(p.left_qty + f.qty - base_fee), str(cost), str(cost / gross),
                            str(p.fees + fee_quote), pid))
            elif pid is not None and side == "SELL":
                p = _pos(db.execute(f"SELECT {_POS_COLS} FROM positions WHERE id = ?", (pid,)).fetchone())
                db.execute("UPDATE positions SET left_qty = ?, proceeds = ?, fees = ? WHERE id = ?",
                           (str(max(p.left_qty - f.qty, D0)), str(p.proceeds + f.quote - (f.commission if f.commission_asset == quote else D0)),
                            str(p.fees + fee_quote), pid))
            else:
                return None
            db.execute("UPDATE fills SET position_id = ? WHERE epoch = ? AND symbol = ? AND trade_id = ?", (pid, epoch, f.symbol, f.trade_id))
            return pid

    def fills_after(self, rowid: int) -> list[tuple[Any, ...]]:
        """Fills booked after ``rowid``: ``(rowid, symbol, position_id, side, qty, quote, commission, commission_asset)`` (Decimals)."""
        rows = self._all("SELECT rowid, symbol, position_id, side, qty, quote, commission, commission_asset FROM fills WHERE rowid > ? "
                         "ORDER BY rowid", (rowid,))
        return [(r[0], r[1], r[2], r[3], Decimal(r[4]), Decimal(r[5]), Decimal(r[6]), r[7]) for r in rows]

    def last_fill(self, epoch: int | None = None) -> dict[str, Any] | None:
        """The most recently booked venue trade of this epoch: ``{symbol, trade_id, order_id, qty}``, or None."""
        row = self._one("SELECT symbol, trade_id, order_id, qty FROM fills WHERE epoch = ? ORDER BY rowid DESC LIMIT 1",
                        (self.epoch if epoch is None else epoch,))
        return None if row is None else {"symbol": row[0], "trade_id": int(row[1]), "order_id": int(row[2]), "qty": Decimal(row[3])}

    def last_sell_cid(self, position_id: int) -> str | None:
        """The client order id of the position's latest sale (by trade time), or None."""
        row = self._one("SELECT cid FROM fills WHERE position_id = ? AND side = 'SELL' ORDER BY time_ms DESC, trade_id DESC LIMIT 1",
                        (position_id,))
        return None if row is None else row[0]

    def fills(self, symbol: str | None = None, epoch: int | None = None) -> list[dict[str, Any]]:
        """Booked fills (oldest first): ``{symbol, trade_id, order_id, cid, position_id, side, price, qty, quote, commission, commission_asset}``."""
        q = "SELECT symbol, trade_id, order_id, cid, position_id, side, price, qty, quote, commission, commission_asset, time_ms FROM fills WHERE epoch = ?"
        args: list[Any] = [self.epoch if epoch is None else epoch]
        if symbol is not None:
            q += " AND symbol = ?"
            args.append(symbol)
        keys = ("symbol", "trade_id", "order_id", "cid", "position_id", "side", "price", "qty", "quote", "commission", "commission_asset", "time_ms")
        out = []
        for r in self._all(q + " ORDER BY symbol, trade_id", args):
            d = dict(zip(keys, r, strict=True))
            for k in ("price", "qty", "quote", "commission"):
                d[k] = Decimal(d[k])
            out.append(d)
        return out

    def positions(self, status: str | None = None, symbol: str | None = None) -> list[PositionRow]:
        """Positions (oldest first), optionally by status and symbol. The open ones are cached until a position changes."""
        if status == "OPEN" and symbol is None:
            if self._open is None:
                self._open = [_pos(r) for r in self._all(f"SELECT {_POS_COLS} FROM positions WHERE status = 'OPEN' ORDER BY id")]
            return list(self._open)
        q = f"SELECT {_POS_COLS} FROM positions"
        cond, args = [], []
        if status:
            cond.append("status = ?")
            args.append(status)
        if symbol:
            cond.append("symbol = ?")
            args.append(symbol)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        return [_pos(r) for r in self._all(q + " ORDER BY id", args)]

    def position(self, position_id: int) -> PositionRow | None:
        row = self._one(f"SELECT {_POS_COLS} FROM positions WHERE id = ?", (position_id,))
        return None if row is None else _pos(row)

    def traded_symbols(self) -> list[str]:
        """Every symbol the ledger holds a position in or sent an order on."""
        rows = self._all("SELECT symbol FROM positions UNION SELECT symbol FROM orders ORDER BY 1")
        return [r[0] for r in rows]

    def set_closing(self, position_id: int, reason: str | None) -> None:
        """Mark an exit as asked for (retried at every step until the position is closed)."""
        self._open = None
        with self.tx() as db:
            db.execute("UPDATE positions SET closing = ? WHERE id = ? AND status = 'OPEN'", (reason, position_id))

    def close_position(self, position_id: int, t_ms: int, reason: str) -> None:
        """Close a position (what is left in ``left_qty`` is dust: unsellable)."""
        self._open = None
        with self.tx() as db:
            db.execute("UPDATE positions SET status = 'CLOSED', closed_ms = ?, exit_reason = ?, closing = NULL WHERE id = ? AND status = 'OPEN'",
                       (t_ms, reason, position_id))

    def correct_position(self, position_id: int, left_qty: Decimal) -> None:
        """Set a position's held quantity to what the venue holds (a ``reconcile`` decision records why)."""
        self._open = None
        with self.tx() as db:
            db.execute("UPDATE positions SET left_qty = ? WHERE id = ?", (str(left_qty), position_id))

    def adopt_position(self, symbol: str, qty: Decimal, price: Decimal, t_ms: int, mode: str) -> int:
        """Record a holding found on the venue as a position (``trade.orphans: adopt``), valued at ``price``."""
        self._open = None
        with self.tx() as db:
            c = db.execute(
                "INSERT INTO positions (symbol, qty, left_qty, entry_price, entry_ms, cost, status, fees, entry_cid, mode) "
                "VALUES (?, ?, ?, ?, ?, ?, 'OPEN', '0', ?, ?)",
                (symbol, str(qty), str(qty), str(price), t_ms, str(qty * price), f"adopted-{symbol}-{t_ms}", f"{mode}-adopted"))
            return int(c.lastrowid or 0)

    # ------------------------------------------------------------------ decisions, virtual, equity

    def decision(self, t_ms: int, symbol: str, action: str, reason: str, score: float | None = None, probability: float | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)", (t_ms, symbol, str(action), reason, score, probability))

    def decisions(self, action: str | None = None) -> list[tuple[Any, ...]]:
        if action is None:
            return self._all("SELECT * FROM decisions ORDER BY rowid")
        return self._all("SELECT * FROM decisions WHERE action = ? ORDER BY rowid", (str(action),))

    def add_virtual(self, symbol: str, entry_ms: int, entry_price: float, reason: str, score: float, probability: float | None) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO virtual (symbol, entry_ms, entry_price, reason, score, probability, status) VALUES (?, ?, ?, ?, ?, ?, 'OPEN')",
                       (symbol, entry_ms, entry_price, reason, score, probability))

    def open_virtual(self) -> list[tuple[Any, ...]]:
        return self._all("SELECT id, symbol, entry_ms, entry_price FROM virtual WHERE status = 'OPEN' ORDER BY id")

    def close_virtual(self, vid: int, reason: str, t_ms: int, price: float, net_return: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE virtual SET status = 'CLOSED', exit_reason = ?, exit_ms = ?, exit_price = ?, net_return = ? WHERE id = ?",
                       (reason, t_ms, price, net_return, vid))

    def virtual_samples(self) -> list[tuple[Any, ...]]:
        """Closed virtual positions: ``(symbol, entry_ms, score, probability, net_return, exit_reason)``."""
        return self._all("SELECT symbol, entry_ms, score, probability, net_return, exit_reason FROM virtual WHERE status = 'CLOSED' ORDER BY id")

    def snapshot(self, t_ms: int, equity: Decimal, cash: Decimal, state: str, day_start: Decimal | None,
                 day: dict[str, Any] | None = None) -> None:
        """One equity snapshot: venue-valued equity and free quote at ``t_ms``, the state decided on it,
        and the day's starting equity in force (what a HALT is judged against); with ``day``, the new
        UTC day's start (``meta.day_start``) in the same transaction."""
        with self.tx() as db:
            db.execute("INSERT INTO snapshots (t_ms, equity, cash, state, day_start) VALUES (?, ?, ?, ?, ?)",
                       (t_ms, str(equity), str(cash), str(state), None if day_start is None else str(day_start)))
            if day is not None:
                db.execute("INSERT INTO meta (key, value) VALUES ('day_start', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           (orjson.dumps(day).decode(),))

    def last_state(self) -> str | None:
        """The trading state of the last snapshot, or None."""
        row = self._one("SELECT state FROM snapshots ORDER BY id DESC LIMIT 1")
        return None if row is None else str(row[0])

    def equity_curve(self) -> list[tuple[int, Decimal]]:
        """``(t_ms, equity)`` per decision time (the last valuation of a restarted step)."""
        rows = self._all("SELECT t_ms, equity FROM snapshots WHERE id IN (SELECT MAX(id) FROM snapshots GROUP BY t_ms) ORDER BY t_ms")
        return [(int(t), Decimal(e)) for t, e in rows]

    def snapshots(self) -> list[dict[str, Any]]:
        """Every valuation, in the order taken: ``{t_ms, equity, cash, state, day_start}`` (Decimals; day_start None before schema 3)."""
        rows = self._all("SELECT t_ms, equity, cash, state, day_start FROM snapshots ORDER BY id")
        return [{"t_ms": int(t), "equity": Decimal(e), "cash": Decimal(c), "state": s, "day_start": None if d is None else Decimal(d)}
                for t, e, c, s, d in rows]

    # ------------------------------------------------------------------ the keyless paper account (LocalBroker)

    def save_sim(self, state: dict[str, Any]) -> None:
        """Replace the simulated account (:meth:`trader.replay.matching.MatchingEngine.export_account`) in one transaction;
        trades are appended (a trade never changes)."""
        with self.tx() as db:
            db.execute("DELETE FROM sim_balances")
            db.executemany("INSERT INTO sim_balances VALUES (?, ?, ?)", state["balances"])
            db.execute("DELETE FROM sim_orders")
            db.executemany(f"INSERT INTO sim_orders VALUES ({', '.join('?' * 22)})", state["orders"])
            db.execute("DELETE FROM sim_lists")
            db.executemany("INSERT INTO sim_lists VALUES (?, ?, ?, ?, ?, ?, ?)", state["lists"])
            db.executemany("INSERT OR IGNORE INTO sim_trades VALUES (?, ?, ?)", state["trades"])
            db.execute("DELETE FROM sim_meta")
            db.executemany("INSERT INTO sim_meta VALUES (?, ?)", list(state["meta"].items()))

    def load_sim(self) -> dict[str, Any] | None:
        """The saved simulated account, or None (never saved)."""
        meta = dict(self._all("SELECT key, value FROM sim_meta"))
        if not meta:
            return None
        return {
            "balances": self._all("SELECT asset, free, locked FROM sim_balances ORDER BY asset"),
            "orders": self._all("SELECT * FROM sim_orders ORDER BY symbol, order_id"),
            "lists": self._all("SELECT * FROM sim_lists ORDER BY order_list_id"),
            "trades": self._all("SELECT symbol, id, doc FROM sim_trades ORDER BY rowid"),
            "meta": meta,
        }


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

