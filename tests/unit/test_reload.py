"""Config hot reload (trader/reload.py): invalid files change nothing, keys that cannot change live are
refused by name, allowed changes are applied with their diff; the file watcher and SIGHUP trigger it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from trader.config import Settings, load_settings
from trader.reload import ConfigReloader, flat_diff


def _reloader(path: Path, said: list[str], applied: list[dict[str, Any]]) -> ConfigReloader:
    return ConfigReloader(lambda: load_settings(path), load_settings(path), lambda new, diff: applied.append(diff), say=said.append)


def test_invalid_refused_applied_unchanged(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("risk:\n  stop_loss: 0.05\n")
    said: list[str] = []
    applied: list[dict[str, Any]] = []
    r = _reloader(cfg, said, applied)
    assert r.reload() == "unchanged"
    cfg.write_text("risk:\n  stop_loss: [oops\n")
    assert r.reload() == "invalid" and "nothing changed" in said[-1] and not applied
    cfg.write_text("risk:\n  stop_loss: 0.08\nstore:\n  path: /elsewhere\n")
    assert r.reload() == "refused" and "store.path" in said[-1] and not applied
    cfg.write_text("risk:\n  stop_loss: 0.08\n  portfolio:\n    k: 3\nscan:\n  min_score: 80\n")
    assert r.reload() == "applied"
    assert applied[-1] == {"risk.portfolio.k": (5, 3), "risk.stop_loss": (0.05, 0.08), "scan.min_score": (75.0, 80.0)}
    assert "risk.stop_loss 0.05 -> 0.08" in said[-1] and r.current.risk.stop_loss == 0.08
    cfg.write_text("risk:\n  stop_loss: 0.08\n  portfolio:\n    k: 3\nscan:\n  min_score: 80\nuniverse:\n  symbols: [BTCUSDT]\n")
    assert r.reload() == "applied"  # a symbol added
    cfg.write_text("risk:\n  stop_loss: 0.08\n  portfolio:\n    k: 3\nscan:\n  min_score: 80\nuniverse:\n  symbols: []\n")
    assert r.reload() == "refused" and "removed" in said[-1]
    assert r.results == ["unchanged", "invalid", "refused", "applied", "applied", "refused"]
    assert flat_diff(Settings(), Settings()) == {}


async def test_the_file_watcher_and_sighup_trigger_a_reload(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("risk:\n  stop_loss: 0.05\n")
    said: list[str] = []
    applied: list[dict[str, Any]] = []
    r = _reloader(cfg, said, applied)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(cfg, stop))
    await asyncio.sleep(0.3)  # let the watcher start (not a timing assertion)
    cfg.write_text("risk:\n  stop_loss: 0.07\n")
    for _ in range(200):  # wait for the change to be seen (deadline 10 s)
        if applied:
            break
        await asyncio.sleep(0.05)
    assert applied and applied[0]["risk.stop_loss"] == (0.05, 0.07)
    os.kill(os.getpid(), signal.SIGHUP)  # nothing new in the file: a SIGHUP reload finds no change
    for _ in range(200):
        if r.results.count("unchanged"):
            break
        await asyncio.sleep(0.05)
    assert "unchanged" in r.results
    stop.set()
    await task
