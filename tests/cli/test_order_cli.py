"""`trader account` / `trader order` against `trader replay` as real subprocesses: the credentials
the replay prints on its second line, idempotent placement, one-line errors with exit codes, and
a full session's every output line and file grepped for the key and the secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest


@pytest.fixture(scope="module")
def replay() -> tuple[str, dict[str, str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    url = proc.stdout.readline().strip()
    creds_line = proc.stdout.readline().strip()
    creds = dict(item.split("=", 1) for item in creds_line.split())
    seen: list[str] = []
    yield url, creds, seen
    proc.terminate()
    proc.wait(timeout=30)
    assert creds["TRADER_API_SECRET"] not in proc.stderr.read()  # the venue's own log does not show it either
    proc.stdout.close()
    proc.stderr.close()


def trader(args: list[str], env: dict[str, str], seen: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    seen += [proc.stdout, proc.stderr]
    return proc


def test_a_full_order_session_never_shows_the_secret(replay: tuple[str, dict[str, str], list[str]], tmp_path: Path) -> None:
    url, creds, seen = replay
    assert set(creds) == {"TRADER_API_KEY", "TRADER_API_SECRET"} and len(creds["TRADER_API_SECRET"]) == 64
    journal = tmp_path / "journal.sqlite"
    env = {**creds, "TRADER_REST_URL": url, "TRADER_WS_URL": url.replace("http", "ws")}
    j = ["--journal", str(journal)]

    acct = trader(["account", "--json"], env, seen)
    assert acct.returncode == 0 and orjson.loads(acct.stdout) == {"USDT": {"free": "10000.00000000", "locked": "0.00000000"}}
    first = trader(["order", "place", "-s", "BTCUSDT", "--side", "BUY", "--qty", "0.002", "--signal-ms", "7", "--json", *j], env, seen)
    assert first.returncode == 0, first.stderr
    again = trader(["order", "place", "-s", "BTCUSDT", "--side", "BUY", "--qty", "0.002", "--signal-ms", "7", "--json", *j], env, seen)
    a, b = orjson.loads(first.stdout)[0], orjson.loads(again.stdout)[0]
    assert a["orderId"] == b["orderId"] and a["status"] == "FILLED"  # the same command placed nothing new

    lim = trader(["order", "place", "-s", "BTCUSDT", "--side", "SELL", "--type", "LIMIT", "--qty", "0.001", "--price", "90000", "--json", *j], env, seen)
    assert lim.returncode == 0, lim.stderr
    cid = orjson.loads(lim.stdout)[0]["clientOrderId"]
    opened = trader(["order", "open", "--json"], env, seen)
    assert [o["clientOrderId"] for o in orjson.loads(opened.stdout)] == [cid]
    assert trader(["order", "query", "-s", "BTCUSDT", "--client-id", cid], env, seen).returncode == 0
    assert trader(["order", "cancel", "-s", "BTCUSDT", "--client-id", cid], env, seen).returncode == 0
    nothing = trader(["order", "cancel", "-s", "BTCUSDT", "--all"], env, seen)
    assert nothing.returncode == 1

    # errors: one line each, with the exit code of its class
    cases = [
        (["order", "place", "-s", "BTC/USDT", "--side", "BUY", "--qty", "1", *j], 2),  # invalid symbol (client side)
        (["order", "place", "-s", "BTCUSDT", "--side", "BUY", "--qty", "5", *j], 3),  # -2010 insufficient balance
        (["order", "place", "-s", "BTCUSDT", "--side", "BUY", "--qty", "0.00001", "--type", "LIMIT", "--price", "50000", *j], 3),  # local NOTIONAL
        (["order", "query", "-s", "BTCUSDT", "--client-id", "nope"], 1),
    ]
    for args, code in cases:
        proc = trader(args, env, seen)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("trader:") and "Traceback" not in proc.stderr
    wrong = trader(["account"], {**env, "TRADER_API_SECRET": "x" * 64}, seen)
    assert wrong.returncode == 3 and "-1022" in wrong.stderr
    key_file = tmp_path / "ed25519.pem"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\n")
    key_file.chmod(0o644)
    loose = trader(["account"], {"TRADER_API_KEY": creds["TRADER_API_KEY"], "TRADER_ED25519_KEY_FILE": str(key_file),
                                 "TRADER_REST_URL": url}, seen)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr

    secret, key = creds["TRADER_API_SECRET"], creds["TRADER_API_KEY"]
    for text in seen:
        assert secret not in text and key not in text
    assert secret.encode() not in journal.read_bytes() and key.encode() not in journal.read_bytes()
    for wal in tmp_path.glob("journal.sqlite*"):
        assert secret.encode() not in wal.read_bytes()


def test_usdm_account_orders_and_positions_from_the_cli(replay: tuple[str, dict[str, str], list[str]], tmp_path: Path) -> None:
    """`--market usdm` on the same replay URL: a leveraged isolated short placed exactly once,
    `trader position list`, a refused reduce-only that would flip, `trader position close`."""
    url, creds, seen = replay
    env = {**creds, "TRADER_REST_URL": url, "TRADER_WS_URL": url.replace("http", "ws")}
    j = ["--journal", str(tmp_path / "usdm.sqlite")]
    acct = trader(["account", "--market", "usdm", "--json"], env, seen)
    assert acct.returncode == 0, acct.stderr
    assert orjson.loads(acct.stdout)["walletBalance"] == "10000.00000000" and orjson.loads(acct.stdout)["positions"] == []
    short = ["order", "place", "--market", "usdm", "-s", "ETHUSDT", "--side", "SELL", "--qty", "0.5", "--leverage", "3",
             "--margin-type", "isolated", "--signal-ms", "11", "--json", *j]
    first, again = trader(short, env, seen), trader(short, env, seen)
    assert first.returncode == 0, first.stderr
    assert orjson.loads(first.stdout)[0]["orderId"] == orjson.loads(again.stdout)[0]["orderId"]  # exactly once
    pos = trader(["position", "list", "--json"], env, seen)
    [p] = orjson.loads(pos.stdout)
    assert (p["symbol"], p["positionAmt"], p["leverage"], p["marginType"]) == ("ETHUSDT", "-0.500", 3, "isolated")
    flip = trader(["order", "place", "--market", "usdm", "-s", "ETHUSDT", "--side", "BUY", "--qty", "1", "--reduce-only", *j], env, seen)
    assert flip.returncode == 3 and flip.stderr.count("\n") == 1 and "-2022" in flip.stderr
    spot_flag = trader(["order", "place", "-s", "ETHUSDT", "--side", "BUY", "--qty", "1", "--reduce-only"], env, seen)
    assert spot_flag.returncode == 2 and "--market usdm" in spot_flag.stderr
    closed = trader(["position", "close", "-s", "ETHUSDT", "--yes", "--json", *j], env, seen)
    assert closed.returncode == 0, closed.stderr
    assert orjson.loads(closed.stdout)[0]["status"] == "FILLED"
    flat = trader(["position", "close", "-s", "ETHUSDT", "--yes", *j], env, seen)
    assert flat.returncode == 1 and "no open position" in flat.stderr
    assert trader(["position", "list", "--json"], env, seen).stdout.strip() == "[]"
