"""``trader tune`` through the CLI, on a store warmed through the replay exchange (real components)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = """
ml:
  folds: 3
  nthread: 2
  activate_min_t: {min_t}
  xgboost: {{n_estimators: 60, early_stopping_rounds: 15, learning_rate: 0.1}}
tune:
  bootstrap: 200
"""


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


@pytest.fixture
def store(history_store: Path, tmp_path: Path) -> Path:
    """A private copy of the whole-history store (tests here register and activate models)."""
    dst = tmp_path / "store"
    shutil.copytree(history_store, dst, ignore=shutil.ignore_patterns("models", "tune"))
    return dst


def config(tmp_path: Path, min_t: float = 0.0, extra: str = "") -> str:
    p = tmp_path / "fast.yaml"
    p.write_text(FAST.format(min_t=min_t) + extra)
    return str(p)


def test_evaluate_json_schema_and_plot(store: Path, tmp_path: Path) -> None:
    png = tmp_path / "ic.png"
    p = run("tune", "evaluate", "--store", str(store), "--config", config(tmp_path), "--horizon", "4h,24h",
            "--scorer", "score", "--scorer", "trend,reversal_24h,random", "--json", "--plot", str(png))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == "trader.evaluate/1" and set(doc["scorers"]) == {"score", "trend", "reversal_24h", "random"}
    for by in doc["scorers"].values():
        assert set(by) == {"4h", "24h"}
        for r in by.values():
            assert set(r["rank_ic"]) >= {"mean", "t", "n_moments"} and r["rank_ic"]["n_moments"] > 1000
            for th in r["thresholds"].values():
                assert set(th) >= {"n", "excess_mean", "excess_ci", "hit_rate"}
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # the window flags select moments
    q = run("tune", "evaluate", "--store", str(store), "--config", config(tmp_path), "--from", "2024-12-01", "--to", "2025-01-01",
            "--scorer", "random", "--horizon", "24h", "--json")
    w = json.loads(q.stdout)["window"]
    assert q.returncode == 0 and w["from"].startswith("2024-12-01") and w["to"] < "2025-01-01" and w["moments"] == 31 * 6


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--scorer", "nonsense"], 2, "unknown scorer"),
        (["--scorer", "ml", "--no-model"], 5, "no active model"),
        (["--horizon", "24x"], 2, "invalid duration"),
        (["--from", "2025-01-01", "--to", "2024-01-01"], 2, "--to must be after --from"),
        (["--from", "yesterday"], 2, "is not a date"),
        (["--plot", "/nonexistent/x.png"], 2, "does not exist"),
    ],
)
def test_evaluate_bad_input_is_one_line(store: Path, args: list[str], code: int, needle: str) -> None:
    p = run("tune", "evaluate", "--store", str(store), *args)
    assert p.returncode == code and needle in p.stderr and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.slow
def test_train_register_activate_list_use_and_scan(store: Path, tmp_path: Path) -> None:
    # checks impossible to pass: registered, not active, exit 1
    p = run("tune", "train", "--store", str(store), "--config", config(tmp_path, min_t=50), "--no-permutation")
    assert p.returncode == 1 and "not activated" in p.stderr, p.stderr
    first = json.loads(run("tune", "list", "--store", str(store), "--json").stdout)
    shipped = [m for m in first["models"] if m["shipped"]]
    registered = [m for m in first["models"] if not m["shipped"]]
    assert len(registered) == 1 and first["active"] == (shipped[0]["id"] if shipped else None)  # the shipped model until one is chosen
    # checks that pass: active
    p = run("tune", "train", "--store", str(store), "--config", config(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["activated"] and summary["checks"]["parity_max_abs"] <= 1e-5
    assert summary["permutation"] is not None and abs(summary["permutation"]["t"]) < 2
    assert {"signal", "ml", "blend", "score", "reversal_24h", "momentum_24h", "random"} == set(summary["oos"]["scorers"])
    folder = store / "models" / summary["id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert {"model.onnx", "model.ubj", "meta.json", "oos.npz", "report.json"} <= {f.name for f in folder.iterdir()}
    assert meta["features"][:2] == ["1h_rsi", "1h_adx"] and len(meta["folds"]) == 3 and meta["fingerprint"]
    assert {"xgboost", "onnxruntime", "numpy", "python"} <= set(meta["versions"]) or {"xgboost-cpu"} <= set(meta["versions"])
    listed = json.loads(run("tune", "list", "--store", str(store), "--json").stdout)
    assert listed["active"] == summary["id"] and len([m for m in listed["models"] if not m["shipped"]]) == 2
    assert meta["signal"]["horizon"] == "24h" and len(meta["signal"]["buckets"]) == 6
    # the scan prints its signal: score >= 50, probability, percentile, expected excess and hit rate in JSON and CSV
    j = run("scan", "--store", str(store), "-m", "0", "-f", "json")
    doc = json.loads(j.stdout)
    assert doc["model"] == summary["id"] and doc["model_window"]["to"]
    assert all(0 < s["ml_probability"] < 1 and s["score"] >= 50 and "factor_score" in s["factors"] and s["hit_rate"] is not None
               and s["expected_excess_pct"] is not None for s in doc["signals"])
    c = run("scan", "--store", str(store), "-m", "0", "-f", "csv")
    header = c.stdout.splitlines()[0].split(",")
    row = c.stdout.splitlines()[1].split(",")
    assert {"ml_probability", "percentile", "expected_excess_pct", "hit_rate"} <= set(header) and row[header.index("expected_excess_pct")] != ""
    t = run("scan", "--store", str(store), "-m", "0")
    assert f"model {summary['id']}" in t.stdout and "exp. %" in t.stdout
    # ... and evaluate scores it out of sample only (its walk-forward predictions)
    e = run("tune", "evaluate", "--store", str(store), "--config", config(tmp_path), "--horizon", "24h", "--json")
    assert e.returncode == 0, e.stderr
    ev = json.loads(e.stdout)
    assert ev["notes"] and ev["window"]["from_ms"] >= meta["folds"][0]["test_from_ms"]
    assert ev["printed"] == "signal" and list(ev["scorers"])[:2] == ["signal", "score"]  # what scan prints first
    assert "75" in ev["scorers"]["signal"]["24h"]["thresholds"]
    nm = run("tune", "evaluate", "--store", str(store), "--config", config(tmp_path), "--horizon", "24h", "--json", "--no-model")
    assert nm.returncode == 0 and json.loads(nm.stdout)["printed"] == "score", nm.stderr
    # switch back and forth
    other = first["models"][0]["id"]
    assert run("tune", "use", other, "--store", str(store)).returncode == 0
    assert json.loads(run("tune", "list", "--store", str(store), "--json").stdout)["active"] == other
    assert run("tune", "use", "--previous", "--store", str(store)).returncode == 0
    assert json.loads(run("tune", "list", "--store", str(store), "--json").stdout)["active"] == summary["id"]
    bad = run("tune", "use", "nope", "--store", str(store))
    assert bad.returncode == 5 and "no model" in bad.stderr
    # no model at all, then back to the shipped one (when the package ships one)
    assert run("tune", "use", "none", "--store", str(store)).returncode == 0
    assert json.loads(run("tune", "list", "--store", str(store), "--json").stdout)["active"] is None
    assert all(s["ml_probability"] is None for s in json.loads(run("scan", "--store", str(store), "-m", "0", "-f", "json").stdout)["signals"])
    d = run("tune", "use", "default", "--store", str(store))
    assert (d.returncode == 0) == bool(shipped), d.stderr
    assert run("tune", "use", summary["id"], "--store", str(store)).returncode == 0
    # --no-model scans as before, without onnxruntime
    n = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", "scan", "--store", str(store), "-m", "0", "-f", "json", "--no-model"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert n.returncode == 0 and all(s["ml_probability"] is None for s in json.loads(n.stdout)["signals"])
    assert "onnxruntime" not in {ln.split("|")[-1].strip().split(".")[0] for ln in n.stderr.splitlines() if ln.startswith("import time:")}
    # retraining for cron: just trained, no new labelled signal -> not due (exit 0)
    d = run("tune", "train", "--if-due", "--store", str(store), "--config", config(tmp_path))
    assert d.returncode == 0 and "not due" in d.stderr, d.stderr


def test_if_due_refuses_under_min_training_samples(store: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "few.yaml"
    cfg.write_text("ml:\n  min_training_samples: 1000000000\n  max_age: 1m\n")
    p = run("tune", "train", "--if-due", "--store", str(store), "--config", str(cfg))
    assert p.returncode == 5 and "ml.min_training_samples" in p.stderr and p.stderr.count("trader: error") == 1, p.stderr


@pytest.mark.slow
def test_search_two_processes_share_one_study_and_write_an_overlay(store: Path, tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    cfg = config(tmp_path)
    # create the study once, then two workers add trials to it concurrently
    first = run("tune", "search", "--store", str(store), "--config", cfg, "--space", "score", "--trials", "1", "--study", "s", "--storage", url,
                "--out", str(tmp_path / "o0.yaml"))
    assert first.returncode == 0, first.stderr
    procs = [
        subprocess.Popen([sys.executable, "-m", "cli.main", "tune", "search", "--store", str(store), "--config", cfg, "--space", "score",
                          "--trials", "3", "--study", "s", "--storage", url, "--worker", str(w), "--out", str(tmp_path / f"o{w + 1}.yaml")],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(2)
    ]
    for pr in procs:
        _, err = pr.communicate(timeout=300)
        assert pr.returncode == 0, err
    import optuna

    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 7
    overlay = tmp_path / "o2.yaml"
    text = overlay.read_text()
    assert "held-out last fold" in text and "fitted_until" in text
    e = run("tune", "evaluate", "--store", str(store), "--config", str(overlay), "--scorer", "score,random", "--horizon", "24h", "--json")
    assert e.returncode == 0, e.stderr
    doc = json.loads(e.stdout)
    assert doc["notes"] and "fitted up to" in doc["notes"][0]
    import yaml

    fitted = yaml.safe_load(text)["scan"]["fitted_until"]
    assert doc["window"]["from"] >= fitted[:16]
