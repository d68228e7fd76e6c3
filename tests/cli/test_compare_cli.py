"""`trader compare --quick --json` in CI: tiny latency, documented shape."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_compare_quick_json(tmp_path: Path) -> None:
    png = tmp_path / "c.png"
    result = runner.invoke(app, ["compare", "--quick", "--json", "--latency-ms", "2", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "trader.compare/1" and doc["mode"] == "quick" and doc["latency_ms"] == 2.0
    names = [c["name"] for c in doc["comparisons"]]
    assert names == ["rest_vs_ws", "serial_vs_concurrent", "scoring", "incremental", "process_pool"]
    for c in doc["comparisons"]:
        assert set(c) == {"name", "title", "baseline", "contenders", "reference", "note", "ratios"}
        for side in [c["baseline"], *c["contenders"]]:
            assert set(side) == {"label", "wall_s", "api_calls", "weight", "symbols_per_s"} and side["wall_s"] > 0
        assert set(c["ratios"]) == {s["label"] for s in c["contenders"]}
    ws = doc["comparisons"][0]
    assert ws["contenders"][0]["api_calls"] == 0 and ws["baseline"]["api_calls"] == 40  # 20 symbols x 2 intervals
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_unknown_name() -> None:
    result = runner.invoke(app, ["compare", "--only", "warp_drive", "--json"])
    assert result.exit_code == 2
