"""Virtual positions: the signals the engine did not trade, followed with the same exits.

A candidate that passes the signal filters but is not traded — the slots were full, the model's
confidence was too low, the state was REDUCING — is entered *virtually* at the decision's close
and followed kline by kline (base interval) with the plan's exits: the stop (checked first when a
kline reaches both), the take-profit ladder (partial exits at each rung's price), and the time
stop at the close of the kline that reaches it. Its net return (fees both sides) goes to the
ledger's ``virtual`` table: labelled samples of what the filters left out, for ``tune``.

Bar-level and pure apart from the ledger: :meth:`VirtualBook.update` reads klines through a
callback, so the paper / live loop runs it in its own task on the store while the trading loop
goes on (it never waits for it), and the backtest calls it at each step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trader.config import RiskConfig
from trader.models import CLOSE, HIGH, LOW, OPEN_TIME, duration_ms, interval_ms
from trader.trade.ledger import Ledger
from trader.trade.risk import Candidate

__all__ = ["VIRTUAL_REASONS", "VirtualBook", "virtual_outcome"]

#: skip reasons that make a virtual position (the signal itself passed)
VIRTUAL_REASONS = frozenset({"slots_full", "below_confidence", "state_reducing"})


def virtual_outcome(block: np.ndarray, entry_ms: int, entry_price: float, cfg: RiskConfig, fee: float, interval: str,
                    until_ms: int) -> tuple[str, int, float, float] | None:
    """``(exit reason, exit time ms, last exit price, net return fraction)`` of a virtual long entered
    at ``entry_price`` at ``entry_ms``, from the klines of ``block`` closed before ``until_ms``;
    None while it is still open. Pure."""
    iv = interval_ms(interval)
    stop = entry_price * (1 - cfg.stop_loss)
    rungs = [(entry_price * (1 + tp), share) for tp, share in zip(cfg.take_profit, cfg.take_profit_sizes, strict=True)]
    deadline = entry_ms + duration_ms(cfg.time_stop)
    ot = block[OPEN_TIME]
    i = int(np.searchsorted(ot, entry_ms, side="left"))
    left = 1.0
    gross = 0.0
    reason = ""
    while i < ot.size and ot[i] + iv <= until_ms:
        lo, hi, close = float(block[LOW, i]), float(block[HIGH, i]), float(block[CLOSE, i])
        end = int(ot[i]) + iv
        if lo <= stop:
            gross += left * (stop / entry_price - 1)
            return "stop_loss", end, stop, gross - 2 * fee
        while rungs and hi >= rungs[0][0]:
            price, share = rungs.pop(0)
            part = min(share, left)
            gross += part * (price / entry_price - 1)
            left -= part
            reason = f"take_profit_{len(cfg.take_profit) - len(rungs)}"
            if left <= 1e-12:
                return reason, end, price, gross - 2 * fee
        if end >= deadline:
            gross += left * (close / entry_price - 1)
            return "time_stop", end, close, gross - 2 * fee
        i += 1
    return None


class VirtualBook:
    """Open and settle virtual positions in the ledger.

    Args:
        ledger: where they are kept.
        cfg: the risk plan (same exits as real positions).
        fee: per side, fraction (the venue's taker fee).
        interval: the base interval of the klines ``update`` reads.
    """

    def __init__(self, ledger: Ledger, cfg: RiskConfig, fee: float, interval: str) -> None:
        self.ledger = ledger
        self.cfg = cfg
        self.fee = fee
        self.interval = interval
        self.closed = 0

    def add(self, c: Candidate, reason: str) -> None:
        """Enter ``c`` virtually (once per symbol and decision time)."""
        if reason in VIRTUAL_REASONS and c.direction > 0:
            self.ledger.add_virtual(c.symbol, c.t_ms, c.price, reason, c.score, c.probability)

    def update(self, until_ms: int, klines: Callable[[str], np.ndarray]) -> int:
        """Settle every virtual position whose exit is known from klines closed before ``until_ms``."""
        n = 0
        for vid, symbol, entry_ms, entry_price in self.ledger.open_virtual():
            out = virtual_outcome(klines(symbol), int(entry_ms), float(entry_price), self.cfg, self.fee, self.interval, until_ms)
            if out is not None:
                reason, t, price, net = out
                self.ledger.close_virtual(int(vid), reason, t, price, net)
                n += 1
        self.closed += n
        return n
