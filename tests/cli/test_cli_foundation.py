"""The `trader` entry point: help, exit codes, and `trader replay` as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_help_lists_every_command_and_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("replay", "warm", "scan", "compare", "store", "tune", "account", "order", "position", "trade"):
        assert f" {command} " in result.output, command
    proc = subprocess.run([sys.executable, "-m", "cli.main", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("trader 0.1.0")


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("replay:\n  port: [1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "replay", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("trader: error:") and "bad.yaml:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_replay_subprocess_prints_url_first_and_serves() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        with urllib.request.urlopen(f"{url}/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000", timeout=30) as r:
            rows = json.loads(r.read())
            assert len(rows) == 1000 and r.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_trade_subcommands_take_their_own_options_after_the_subcommand(tmp_path: Path) -> None:
    from trader.trade.ledger import Ledger

    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    after = runner.invoke(app, ["trade", "history", "--ledger", str(path), "--json"])
    before = runner.invoke(app, ["trade", "--ledger", str(path), "--json", "history"])
    assert after.exit_code == 0 and before.exit_code == 0 and after.output.strip() == before.output.strip() == "[]"
    missing = runner.invoke(app, ["trade", "status", "--ledger", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 4


def test_flags_of_another_trade_mode_are_an_error() -> None:
    for args, flag in ((["trade", "--backtest", "--steps", "3"], "--steps"), (["trade", "--from", "2025-01-01"], "--from"),
                       (["trade", "--live", "--seeds", "5"], "--seeds"), (["trade", "--backtest", "--paper"], "choose one")):
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and flag in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
