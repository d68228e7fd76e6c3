"""`trader scan` end to end: CliRunner and real subprocesses over a replay-warmed store."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
FACTORS = {"trend", "momentum", "volume", "volatility", "structure", "mtf"}


def check_document(doc: dict) -> None:  # type: ignore[type-arg]
    """The documented JSON shape (cli/render.py, README "scan JSON")."""
    assert doc["schema"] == "trader.scan/1"
    types = {"exchange_time_ms": int, "min_score": float, "intervals": list, "strategy": str, "universe": int,
             "scored": int, "signals": list, "stale": list, "insufficient_history": list, "errors": list, "timings_ms": dict}
    for key, typ in types.items():
        assert isinstance(doc[key], typ), key
    model = doc["model"] is not None  # the shipped model, unless the store turned models off
    assert (doc["model_window"] is not None) == model
    for s in doc["signals"]:
        assert set(s) == {"symbol", "direction", "score", "factors", "last_close", "change_24h_pct", "close_time_ms", "data_age_s", "ml_probability",
                          "percentile", "expected_excess_pct", "hit_rate"}
        assert (s["ml_probability"] is not None) == model and (s["percentile"] is not None) == model
        assert s["direction"] in ("long", "short") and 0 <= s["score"] <= 100
        assert set(s["factors"]) == (FACTORS | {"factor_score"} if model else FACTORS)
        assert s["score"] >= doc["min_score"] and (s["score"] >= 50 or not model)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_scan_json_via_clirunner(warmed_store: tuple[Path, int]) -> None:
    path, _ = warmed_store
    result = runner.invoke(app, ["scan", "--store", str(path), "--min-score", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_document(doc)
    assert doc["universe"] == doc["scored"] == len(doc["signals"]) == 10


def test_scan_subprocess_formats_and_exit_codes(warmed_store: tuple[Path, int]) -> None:
    path = str(warmed_store[0])
    p = run("scan", "--store", path, "-m", "0", "-f", "json", "--top", "3")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    check_document(doc)
    assert len(doc["signals"]) == 3
    p = run("scan", "--store", path, "-m", "0", "-f", "ndjson")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(lines) == 10 and {"symbol", "score"} <= set(lines[0])
    p = run("scan", "--store", path, "-m", "0", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(rows) == 10 and FACTORS <= set(rows[0])
    p = run("scan", "--store", path, "-m", "100", "-f", "json", "--no-model")  # nothing passes: exit 1, still a document
    assert p.returncode == 1 and json.loads(p.stdout)["signals"] == []
    p = run("scan", "--store", path, "-m", "0")  # plain table when stdout is not a TTY: no colour codes
    assert p.returncode == 0 and "BTCUSDT" in p.stdout and "\x1b[" not in p.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--format", "xml"], 2, "invalid --format"),
        (["--intervals", "7h"], 2, "invalid interval"),
        (["--symbols", "BTC/USDT"], 2, "invalid symbol"),
        (["--strategy", "gpu"], 2, "strategy"),
    ],
)
def test_scan_bad_input(warmed_store: tuple[Path, int], args: list[str], code: int, needle: str) -> None:
    p = run("scan", "--store", str(warmed_store[0]), *args)
    assert p.returncode == code and needle in p.stderr and p.stderr.count("\n") == 1


def test_scan_without_store_exits_4(tmp_path: Path) -> None:
    p = run("scan", "--store", str(tmp_path / "none"))
    assert p.returncode == 4 and "trader warm" in p.stderr


def test_scan_path_imports_no_heavy_modules(warmed_store: tuple[Path, int]) -> None:
    def imports(*extra: str) -> set[str]:
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "cli.main", "scan", "--store", str(warmed_store[0]), "-m", "0", "-f", "json", *extra],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        return {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines() if line.startswith("import time:")}

    heavy = {"pandas", "xgboost", "sklearn", "talib", "scipy", "httpx", "aiohttp", "onnx", "optuna", "onnxmltools"}
    with_model = imports()  # the shipped model: onnxruntime, and nothing else heavy
    assert not with_model & heavy, with_model & heavy
    without = imports("--no-model")
    assert not without & (heavy | {"onnxruntime"}), without & (heavy | {"onnxruntime"})


def test_scan_refresh_warms_first(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from trader.replay.server import ReplayExchange

    async def go() -> subprocess.CompletedProcess[str]:
        async with ReplayExchange(dataset, port=0, speed=0) as ex:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "scan", "--refresh", "--symbols", "BTCUSDT,ETHUSDT", "--rest-url", ex.rest_url,
                "--store", str(tmp_path / "s"), "-m", "0", "-f", "json", cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())

    p = asyncio.run(go())
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {s["symbol"] for s in doc["signals"]} == {"BTCUSDT", "ETHUSDT"}
