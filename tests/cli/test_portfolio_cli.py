"""`trader trade --plan portfolio` as real processes: the backtest's JSON document (plan, baselines,
held-out block, plot) and one paper decision against `trader replay`'s /fapi."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = "ADAUSDT,AVAXUSDT,BNBUSDT,BTCUSDT,DOGEUSDT,DOTUSDT,ETHUSDT,LINKUSDT,LTCUSDT,SOLUSDT,TRXUSDT,XRPUSDT"

pytestmark = pytest.mark.slow


def trader(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def replay_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """`trader replay --start end --speed 0` and a store warmed with the whole history of 12 symbols."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "replay", "--port", "0", "--speed", "0", "--start", "end"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    creds = dict(kv.split("=", 1) for kv in proc.stdout.readline().split())
    store = tmp_path_factory.mktemp("pf") / "store"
    try:
        w = trader("warm", "--rest-url", url, "--store", str(store), "-s", SYMBOLS, "--klines", "8000")
        assert w.returncode == 0, w.stderr
        yield url, creds, store
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_backtest_json_has_the_plan_the_baselines_and_the_held_out_block(replay_store: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    _, _, store = replay_store
    plot = tmp_path / "pf.png"
    r = trader("trade", "--backtest", "--plan", "portfolio", "--store", str(store), "--from", "2025-01-01", "--seeds", "2", "--json",
               "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["plan"] == "portfolio" and doc["window"]["out_of_sample_only"] is True and doc["window"]["symbols"] == 12
    res = doc["result"]
    for key in ("net_return", "cagr", "volatility", "sharpe", "max_drawdown", "turnover_per_day", "fees", "funding", "maker_share",
                "gross_exposure", "net_exposure"):
        assert key in res
    assert res["fees"] > 0 and 0 < res["maker_share"] < 1 and abs(res["net_exposure"]) < 0.2  # market neutral, maker first
    rb = doc["baselines"]["random_portfolio"]
    assert rb["seeds"] == 2 and rb["net_return_min"] <= rb["net_return_mean"] <= rb["net_return_max"]
    assert abs(rb["gross_exposure_mean"] - res["gross_exposure"]) < 0.15  # the same exposure ...
    assert set(doc["baselines"]) == {"random_portfolio", "equal_weight_long", "btc_long"}
    assert {"plan", "random", "equal_weight_long", "btc_long", "excess_vs_random"} <= set(doc["held_out_block"])
    assert plot.stat().st_size > 10_000
    bad = trader("trade", "--backtest", "--plan", "portfolio", "--store", str(store), "--no-model")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_one_paper_decision_on_the_replays_usdm_venue(replay_store: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    url, creds, store = replay_store
    env = {**creds, "TRADER_REST_URL": url, "TRADER_WS_URL": url.replace("http", "ws")}
    r = trader("trade", "--plan", "portfolio", "--store", str(store), "--steps", "1", "--ledger", str(tmp_path / "pf"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    [decision] = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert decision["ranked"] == 12 and decision["orders"] and not decision["halted"]
    pos = trader("position", "list", "--json", env=env)
    assert pos.returncode == 0 and orjson.loads(pos.stdout) == []  # maker first: nothing filled on a frozen clock yet
    opened = trader("order", "open", "--market", "usdm", "--json", env=env)
    assert len(orjson.loads(opened.stdout)) == len(decision["orders"])  # the post-only orders rest at the touch
    assert (tmp_path / "pf.state.json").exists() and (tmp_path / "pf.journal.sqlite").exists()


def test_tune_search_covers_the_portfolio_and_never_searches_the_last_block(replay_store: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    _, _, store = replay_store
    out = tmp_path / "pf.yaml"
    r = trader("tune", "search", "--objective", "backtest", "--plan", "portfolio", "--store", str(store), "--trials", "2", "--worker", "1",
               "--study", "t", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["plan"] == "portfolio" and doc["worker"] == 1 and doc["trials"] == 2
    h = doc["held_out"]
    assert len(doc["best"]["fold_returns"]) == 3 and h["decisions"] > 0  # three inner folds; the fourth held out
    assert {"tuned", "default", "random_portfolio", "equal_weight_long", "btc_long", "tuned_beats_random"} <= set(h)
    assert h["random_portfolio"]["seeds"] == 5 and len(h["random_portfolio"]["net_returns"]) == 5
    text = out.read_text()
    assert "plan: portfolio" in text and "held out" in text
    again = trader("trade", "--backtest", "--store", str(store), "--config", str(out), "--from", "2025-02-01", "--seeds", "1", "--json")
    assert again.returncode == 0 and orjson.loads(again.stdout)["plan"] == "portfolio"  # the overlay selects the plan


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl from PATH) with a password; skipped when there is none."""
    import shutil

    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user when there is one
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser")
        as_user = ["runuser", "-u", "postgres", "--"]
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="trader-pg-"))  # under /tmp: pytest's own tmp dirs are private to root
    (base / "pw").write_text("s3cret\n")
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(base / "pw", "postgres")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run("initdb", "-D", str(base / "data"), "-A", "md5", "--pwfile", str(base / "pw"), "-U", "trader")
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-200:]}")
    start = run("pg_ctl", "-D", str(base / "data"), "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "-l", str(base / "log"),
                "-w", "start")
    assert start.returncode == 0, start.stderr
    try:
        env = {**os.environ, "PGPASSWORD": "s3cret"}
        made = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "trader", "-d", "postgres", "-c", "create database studies"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert made.returncode == 0, made.stderr
        yield f"postgresql://trader:s3cret@127.0.0.1:{port}/studies"
    finally:
        run("pg_ctl", "-D", str(base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_postgres_study_and_failures_are_one_line(replay_store: tuple[str, dict[str, str], Path], postgres: str,
                                                                         tmp_path: Path) -> None:
    _, _, store = replay_store
    base = ["tune", "search", "--objective", "backtest", "--plan", "portfolio", "--store", str(store), "--trials", "3", "--study", "pg",
            "--storage", postgres, "--json"]
    procs = [subprocess.Popen([sys.executable, "-m", "cli.main", *base, "--worker", str(w), "--out", str(tmp_path / f"w{w}.yaml")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for w in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "s3cret" not in out and "s3cret" not in err  # the password is masked everywhere
    docs = [orjson.loads(out) for out, _ in outs]
    assert max(d["trials"] for d in docs) == 6  # both workers' trials in one study
    import optuna

    from trader.ml.storage import close_storage, open_storage

    storage = open_storage(postgres)
    try:
        study = optuna.load_study(study_name="pg", storage=storage)
        trials_pg = study.trials
        attrs = study.user_attrs
    finally:
        close_storage(storage)  # no connection left for the garbage collector
    numbers = [t.number for t in trials_pg]
    assert sorted(numbers) == list(range(6)) and attrs["dataset"]["symbols"]  # no duplicate numbers; fingerprint kept
    params = [tuple(sorted(t.params.items())) for t in trials_pg]
    assert len(set(params)) == len(params)  # the workers' seeds differ: no trial repeated
    export = tmp_path / "best.yaml"
    ex = trader("tune", "search", "--storage", postgres, "--study", "pg", "--store", str(store), "--export-best", str(export))
    assert ex.returncode == 0 and "plan: portfolio" in export.read_text()
    other = trader(*base[:-1], "--from", "2025-02-01")  # another window: another dataset fingerprint
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "other data" in other.stderr
    bad = trader("tune", "search", "--store", str(store), "--storage", postgres.replace("s3cret", "wrong"), "--study", "pg")
    assert bad.returncode == 2 and "authentication failed" in bad.stderr and bad.stderr.count("\n") == 1 and "wrong" not in bad.stderr
    down = trader("tune", "search", "--store", str(store), "--storage", "postgresql://trader@127.0.0.1:1/studies", "--study", "pg")
    assert down.returncode == 3 and "does not answer" in down.stderr


def test_a_running_trade_applies_a_config_change_and_counts_it(replay_store: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    """`trader trade` (keyless paper) with --config: the file edited while it runs is applied (log line
    and trader_config_reloads_total), a change of the listen address is refused by name."""
    import queue
    import re
    import signal
    import threading
    import urllib.request

    url, _, store = replay_store
    cfg = tmp_path / "live.yaml"
    cfg.write_text("risk:\n  stop_loss: 0.05\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_API")}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "trade", "--config", str(cfg), "--store", str(store), "--rest-url", url,
                             "--ws-url", url.replace("http", "ws"), "--ledger", str(tmp_path / "l.sqlite"), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()

    seen: list[str] = []

    def wait_for(pattern: str, deadline_s: float = 60) -> str:
        import time

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {seen[-10:]}")

    try:
        port = int(re.search(r"/metrics on http://127\.0\.0\.1:(\d+)", wait_for(r"/metrics on"))[1])  # type: ignore[index]
        wait_for(r"reconciled with the venue")
        cfg.write_text("risk:\n  stop_loss: 0.08\n")
        assert "risk.stop_loss 0.05 -> 0.08" in wait_for(r"config reload: (applied|refused|invalid)")
        cfg.write_text("risk:\n  stop_loss: 0.08\ntrade:\n  listen: 127.0.0.1:9999\n")
        assert "trade.listen" in wait_for(r"config reload: (applied|refused|invalid)")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'trader_config_reloads_total{result="applied"} 1.0' in metrics
        assert 'trader_config_reloads_total{result="refused"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stderr.close()


def test_a_worker_killed_mid_trial_has_its_trial_failed_and_rerun(replay_store: tuple[str, dict[str, str], Path], postgres: str) -> None:
    """With a 1 s heartbeat, a SIGKILLed worker's RUNNING trial is marked FAIL once it is 3 s stale and
    re-run by the next worker (Optuna's RetryHeartbeatStaleTrialCallback)."""
    import signal
    import time

    import optuna

    from trader.ml.storage import close_storage, open_storage

    _, _, store = replay_store
    env = {**os.environ, "TRADER_TUNE__HEARTBEAT_S": "1"}
    base = [sys.executable, "-m", "cli.main", "tune", "search", "--objective", "backtest", "--plan", "portfolio", "--store", str(store),
            "--study", "hb", "--storage", postgres, "--json"]
    storage = open_storage(postgres)
    victim: subprocess.Popen[bytes] | None = None
    running = None
    try:
        for attempt in range(5):  # a kill can land just after a trial ended: then try again
            victim = subprocess.Popen([*base, "--trials", "50", "--worker", str(7 + 10 * attempt)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
            deadline = time.monotonic() + 120
            seen = None
            while seen is None and time.monotonic() < deadline:  # until a trial runs its objective (its heartbeat is recorded)
                if any(s.study_name == "hb" for s in optuna.get_all_study_summaries(storage)):
                    trials = optuna.load_study(study_name="hb", storage=storage).trials
                    seen = next((t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.params
                                 and t.datetime_start is not None and time.time() - t.datetime_start.timestamp() > 0.3), None)
                if seen is None:
                    time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            trials = optuna.load_study(study_name="hb", storage=storage).trials
            running = next((t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING), None)
            if running is not None:  # the dead worker's trial, left RUNNING
                break
        assert running is not None
        killed = time.monotonic()
        # staleness is the heartbeat's own clock: 3 x 1 s without one (wait for that time to pass, and more)
        while time.monotonic() - killed < 4.5:
            time.sleep(0.1)
        nxt = subprocess.run([*base, "--trials", "2", "--worker", "8"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert nxt.returncode == 0, nxt.stderr[-2000:]
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
            victim.wait()
    try:
        trials = optuna.load_study(study_name="hb", storage=storage).trials
    finally:
        close_storage(storage)  # no connection left for the garbage collector
    assert trials[running].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == running]  # the copy the retry callback enqueued
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE
