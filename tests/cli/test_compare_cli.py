"""`trader compare --quick --json` in CI: tiny latency, documented shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_compare_quick_json(tmp_path: Path) -> None:
    png = tmp_path / "c.png"
    result = runner.invoke(app, ["compare", "--quick", "--json", "--latency-ms", "2", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "trader.compare/2" and doc["mode"] == "quick" and doc["latency_ms"] == 2.0 and doc["runs"] == 3
    names = [c["name"] for c in doc["comparisons"]]
    assert names == ["rest_vs_ws", "rest_vs_ws_0ms", "serial_vs_concurrent", "scoring", "incremental", "process_pool", "ml_batch", "ml_row", "ml_pool"]
    keys = {"label", "wall_s", "wall_min_s", "wall_max_s", "runs", "api_calls", "weight", "symbols_per_s"}
    for c in doc["comparisons"]:
        assert set(c) == {"name", "title", "baseline", "contenders", "reference", "note", "ratios", "verdicts"}
        for side in [c["baseline"], *c["contenders"]]:
            assert set(side) == keys and side["runs"] >= 3 and 0 < side["wall_min_s"] <= side["wall_s"] <= side["wall_max_s"]
        assert set(c["ratios"]) == set(c["verdicts"]) == {s["label"] for s in c["contenders"]}
        assert set(c["verdicts"].values()) <= {"faster", "slower", "no difference"}
    ws = doc["comparisons"][0]
    # 20 symbols x 2 intervals of klines + 1 server-time call per REST scan; none per WebSocket-cache scan
    assert ws["contenders"][0]["api_calls"] == 0 and ws["baseline"]["api_calls"] == 41
    scoring = next(c for c in doc["comparisons"] if c["name"] == "scoring")
    assert scoring["baseline"]["label"] == "serial TA-Lib loop" and "same scores" in scoring["note"]
    ml = next(c for c in doc["comparisons"] if c["name"] == "ml_batch")
    assert ml["baseline"]["label"] == "xgboost inplace_predict" and ml["contenders"][0]["label"] == "onnxruntime"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_unknown_name() -> None:
    result = runner.invoke(app, ["compare", "--only", "warp_drive", "--json"])
    assert result.exit_code == 2
