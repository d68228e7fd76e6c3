"""Configuration hot reload for the long-running commands (``trade``, ``scan --live``, ``warm --follow``).

On SIGHUP, and whenever the ``--config`` file changes (``watchfiles``), the configuration is read
and validated again exactly as at start (:func:`trader.config.load_settings`). Then:

- an invalid file changes nothing and says why (``config reload: invalid: ...``);
- a change to a key that cannot change while running — anything outside :data:`LIVE_KEYS`: the
  store path, the profile and its URLs, the listen address, the replay venue ... — is refused,
  naming the key, and nothing is applied;
- otherwise the new settings are handed to the command (``apply``), which uses them from its next
  decision / scan, and the applied diff is printed (``config reload: applied: risk.stop_loss 0.05 -> 0.08``).

Keys that change live: every ``risk`` key (limits and plan parameters), the scan's weights, factors,
blend and thresholds, ``universe.symbols`` additions (a removal is refused: positions may be open),
``trade.fill_poll_s`` and ``stream.status_every_s``. Each attempt counts in
``trader_config_reloads_total{result}`` (applied, unchanged, refused, invalid) when a counter is given.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trader.config import Settings
from trader.runtime import add_signal_handler, remove_signal_handler

__all__ = ["LIVE_KEYS", "ConfigReloader", "flat_diff"]

#: key prefixes whose value may change while a command runs
LIVE_KEYS = ("risk.", "scan.weights", "scan.factors", "scan.blend", "scan.min_score", "universe.symbols", "trade.fill_poll_s",
             "stream.status_every_s")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def flat_diff(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` of every leaf that differs."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class ConfigReloader:
    """Re-read, validate and apply the configuration (module docstring).

    Args:
        load: builds the settings exactly as the command did at start (file + environment + flags).
        current: the settings in force.
        apply: receives the new settings and the diff; called only for a valid, allowed change.
        counter: a Prometheus counter with a ``result`` label (optional).
        say: where the one-line reports go (stderr by default).
    """

    def __init__(self, load: Callable[[], Settings], current: Settings, apply: Callable[[Settings, dict[str, tuple[Any, Any]]], None],
                 counter: Any = None, say: Callable[[str], None] | None = None) -> None:
        self.load = load
        self.current = current
        self.apply = apply
        self.counter = counter
        self.say = say or (lambda m: print(m, file=sys.stderr, flush=True))
        self.results: list[str] = []

    def _count(self, result: str) -> str:
        self.results.append(result)
        if self.counter is not None:
            self.counter.labels(result=result).inc()
        return result

    def reload(self) -> str:
        """One attempt; returns applied | unchanged | refused | invalid."""
        try:
            new = self.load()
        except Exception as exc:  # noqa: BLE001 - any invalid file: nothing changes, the reason is shown
            self.say(f"trader: warning: config reload: invalid: {' '.join(str(exc).split())[:300]}; nothing changed")
            return self._count("invalid")
        diff = flat_diff(self.current, new)
        if not diff:
            return self._count("unchanged")
        refused = [k for k in diff if not k.startswith(LIVE_KEYS)]
        if "universe.symbols" in diff:
            old_syms, new_syms = diff["universe.symbols"]
            if set(old_syms or []) - set(new_syms or []):
                refused.append("universe.symbols (a symbol removed)")
        if refused:
            self.say(f"trader: warning: config reload: refused: {', '.join(refused[:5])} cannot change while running "
                     "(restart to change it); nothing changed")
            return self._count("refused")
        self.apply(new, diff)
        self.current = new
        shown = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in list(diff.items())[:10])
        self.say(f"trader: config reload: applied: {shown}")
        return self._count("applied")

    async def run(self, config_path: Path | None, stop: asyncio.Event) -> None:
        """Reload on SIGHUP and on changes of ``config_path`` until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        hup = asyncio.Event()
        add_signal_handler(loop, signal.SIGHUP, hup.set)  # where it cannot, the file watcher still reloads
        tasks = []

        async def on_hup() -> None:
            while not stop.is_set():
                await hup.wait()
                hup.clear()
                if not stop.is_set():
                    self.reload()

        tasks.append(asyncio.create_task(on_hup()))
        if config_path is not None:
            from watchfiles import awatch

            async def on_file() -> None:
                target = config_path.resolve()
                async for _ in awatch(target.parent, stop_event=stop, debounce=200, recursive=False,
                                      watch_filter=lambda change, p: Path(p).resolve() == target):
                    self.reload()

            tasks.append(asyncio.create_task(on_file()))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            remove_signal_handler(loop, signal.SIGHUP)
            await asyncio.gather(*tasks, return_exceptions=True)
