"""Config: defaults, precedence, and error messages that name key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trader.config import _DERIVED_COSTS, Settings, load_settings
from trader.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_equals_model_defaults() -> None:
    assert load_settings(ROOT / "config" / "default.yaml", environ={}) == Settings()


def test_every_default_yaml_key_is_commented() -> None:
    lines = (ROOT / "config" / "default.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if ":" in stripped:
            has_inline = "#" in stripped
            has_above = i > 0 and lines[i - 1].strip().startswith("#")
            is_section = stripped.endswith(":")
            assert has_inline or has_above or is_section or stripped.split(":")[0] in {"rest_url", "ws_url", "market", "ws_api_url"}, line


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("replay:\n  port: 9001\n  speed: 2\nstore:\n  path: /from/file\n")
    assert load_settings(cfg, environ={}).replay.port == 9001
    env = {"TRADER_REPLAY__PORT": "9002", "TRADER_STORE": "/from/env"}
    s = load_settings(cfg, environ=env)
    assert (s.replay.port, s.replay.speed, str(s.store.path)) == (9002, 2.0, "/from/env")
    s = load_settings(cfg, environ=env, overrides={"replay": {"port": 9003}, "store": {"path": "/from/flag"}})
    assert (s.replay.port, str(s.store.path)) == (9003, "/from/flag")


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: binance-spot\n")
    s = load_settings(environ={"TRADER_CONFIG": str(cfg)})
    assert s.exchange.rest_url == "https://api.binance.com"


def test_profiles_and_url_overrides() -> None:
    s = load_settings(environ={"TRADER_PROFILE": "binance-usdm"})
    assert (s.exchange.rest_url, s.exchange.market) == ("https://fapi.binance.com", "usdm")
    s = load_settings(environ={"TRADER_REST_URL": "http://127.0.0.1:1/"}, ws_url="ws://127.0.0.1:2")
    assert (s.exchange.rest_url, s.exchange.ws_url) == ("http://127.0.0.1:1", "ws://127.0.0.1:2")
    assert set(Settings().profiles) == {"replay", "binance-spot", "binance-testnet", "binance-usdm", "binance-usdm-testnet"}


def test_file_can_add_a_profile_and_keep_builtins(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: mine\nprofiles:\n  mine:\n    rest_url: http://127.0.0.1:9\n    ws_url: ws://127.0.0.1:9\n")
    s = load_settings(cfg, environ={})
    assert s.exchange.rest_url == "http://127.0.0.1:9" and "binance-spot" in s.profiles


def test_unknown_key_names_path_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("universe:\n  intervals: [1h]\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: universe\.colour: unknown key"):
        load_settings(cfg, environ={})


def test_wrong_type_names_path_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("replay:\n  faults:\n    error_rate: lots\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: replay\.faults\.error_rate"):
        load_settings(cfg, environ={})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("replay: [1, 2\n", r"malformed YAML"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("universe:\n  intervals: [7h]\n", r"universe\.intervals.*invalid interval '7h'"),
        ("universe:\n  symbols: [btc/usdt]\n", r"universe\.symbols.*invalid symbol"),
        ("profile: nowhere\n", r"unknown profile 'nowhere'"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, pattern: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_settings(cfg, environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings("/nonexistent/trader.yaml", environ={})


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match=r"replay\.port"):
        load_settings(environ={"TRADER_REPLAY__PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"unknown key"):
        load_settings(environ={"TRADER_NOPE": "1"})


def test_env_list_values() -> None:
    s = load_settings(environ={"TRADER_UNIVERSE__SYMBOLS": "btcusdt, ETHUSDT", "TRADER_UNIVERSE__INTERVALS": "4h"})
    assert s.universe.symbols == ("BTCUSDT", "ETHUSDT") and s.universe.intervals == ("4h",)


def test_store_path_default_is_user_cache_dir() -> None:
    assert Settings().store_path().name == "store"
    assert load_settings(environ={"TRADER_STORE": "/tmp/x"}).store_path() == Path("/tmp/x")


def test_default_yaml_spells_out_every_key() -> None:
    """Every config key is in config/default.yaml (with its comment): nothing only in code."""
    import yaml

    def keys(tree: object, prefix: str = "") -> set[str]:
        if not isinstance(tree, dict):
            return set()
        out = set()
        for k, v in tree.items():
            out.add(prefix + str(k))
            if k != "profiles":
                out |= keys(v, prefix + str(k) + ".")
        return out

    written = keys(yaml.safe_load((ROOT / "config" / "default.yaml").read_text()))
    derived = {".".join(p) for p in _DERIVED_COSTS}  # written once, under costs
    assert keys(Settings().model_dump(mode="json")) - derived == written


def test_one_cost_model_every_fee_spread_and_impact_comes_from_costs(tmp_path: Path) -> None:
    """Labels and evaluation (ml.fee), the backtest and keyless paper (replay.matching through
    SimBroker), and the replay venue (replay.matching, replay.spread_bps) read the same numbers, and
    cannot be given others."""
    from decimal import Decimal

    from trader.trade.broker import SimBroker

    cfg = tmp_path / "c.yaml"
    cfg.write_text("costs:\n  spot: {maker_fee: 0.0008, taker_fee: 0.00075}\n  spread_bps: 3.5\n  impact_bps: 1.0\n")
    s = load_settings(cfg, environ={})
    assert s.ml.fee == 0.00075 and s.replay.matching.taker_fee == 0.00075 and s.replay.matching.maker_fee == 0.0008
    assert s.replay.spread_bps == 3.5 and s.replay.matching.impact_bps == 1.0
    broker = SimBroker({}, "1h", {"USDT": Decimal(1)}, s.replay.spread_bps, s.replay.matching)
    assert broker.engine.cfg.taker_fee == Decimal("0.00075") and broker.engine.cfg.impact_bps == 1.0
    usdm = load_settings(environ={"TRADER_COSTS__MARKET": "usdm"})
    assert usdm.ml.fee == 0.0005 and usdm.replay.matching.taker_fee == 0.001  # labels charge futures fees; the spot venue stays spot
    for bad, where in ((("ml:\n  fee: 0.002\n"), "costs.spot.taker_fee"), ("replay:\n  spread_bps: 9\n", "costs.spread_bps"),
                       ("replay:\n  matching:\n    maker_fee: 0.0\n", "costs.spot.maker_fee")):
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            load_settings(cfg, environ={})
