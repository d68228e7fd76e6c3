"""The risk rules one by one (pure functions, no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.config import RiskConfig
from trader.errors import ConfigError
from trader.models import SymbolRules
from trader.trade import risk
from trader.trade.events import EventBus, KlineClosed, OrderUpdate
from trader.trade.observe import Observer

D = Decimal
RULES = SymbolRules("BTCUSDT", "BTC", "USDT", tick=D("0.01"), min_price=D("0.01"), max_price=D(10**6), step=D("0.00001"),
                    min_qty=D("0.00001"), max_qty=D(9000), market_max_qty=D(100), min_notional=D(5), max_notional=D(10**7))


def cand(symbol: str, score: float, direction: int = 1, p: float | None = 0.7) -> risk.Candidate:
    return risk.Candidate(symbol, 0, score, direction, p, 100.0)


def test_entries_respect_slots_score_direction_confidence_and_state() -> None:
    cfg = RiskConfig(min_confidence=0.6)  # off by default (the score is the model's conviction); here on
    cands = [cand("A", 90), cand("B", 80), cand("C", 85, p=0.5), cand("D", 95, direction=-1), cand("E", 70), cand("F", 76), cand("G", 77)]
    take, skipped = risk.select_entries(cands, {"Z"}, cfg, 75.0, risk.ACTIVE, model_active=True)
    assert [c.symbol for c in take] == ["A", "B"]  # 3 slots, one taken by Z
    assert dict((c.symbol, r) for c, r in skipped) == {"D": "short_on_spot", "C": "below_confidence", "G": "slots_full", "F": "slots_full"}
    take, skipped = risk.select_entries(cands, set(), cfg, 75.0, risk.REDUCING)
    assert take == [] and {r for _, r in skipped} == {"short_on_spot", "state_reducing"}
    take, _ = risk.select_entries([cand("A", 90)], {"A"}, cfg, 75.0, risk.ACTIVE)
    assert take == []


def test_trading_states_follow_the_days_loss_and_the_kill_switch() -> None:
    cfg = RiskConfig()
    assert risk.trading_state(10_000, 10_000, cfg, False)[0] == risk.ACTIVE
    assert risk.trading_state(9_690, 10_000, cfg, False)[0] == risk.REDUCING  # -3.1 %
    assert risk.trading_state(9_490, 10_000, cfg, False)[0] == risk.HALTED  # -5.1 %
    assert risk.trading_state(11_000, 10_000, cfg, True) == (risk.HALTED, "kill_switch")


def test_size_is_capped_by_equity_share_order_limit_and_free_cash() -> None:
    cfg = RiskConfig()
    assert risk.size_entry(D(9_000), D(9_000), cfg, RULES) == D(1000)  # max_order_notional
    assert risk.size_entry(D(1_500), D(1_500), cfg, RULES) == D(500)  # equity / 3
    assert risk.size_entry(D(9_000), D(200), cfg, RULES) == D(198)  # 99 % of the free quote
    assert risk.size_entry(D(9_000), D(9), cfg, RULES) == 0  # below 2 x the minimum notional


def test_the_exit_ladder_sums_to_the_position_on_tick_and_step() -> None:
    legs = risk.exit_ladder(D("60000.00"), D("0.01667"), RiskConfig(), RULES)
    assert [x.name for x in legs] == ["take_profit_1", "take_profit_2"]
    assert sum(x.qty for x in legs) == D("0.01667") and legs[0].qty == D("0.00833")
    assert [x.take_profit for x in legs] == [D("66000.00"), D("72000.00")] and {x.stop for x in legs} == {D("57000.00")}
    tiny = risk.exit_ladder(D("60000"), D("0.00015"), RiskConfig(), RULES)  # half would be under 5 USDT: one rung
    assert [(x.name, x.qty) for x in tiny] == [("take_profit_2", D("0.00015"))]


def test_time_stop_and_config_validation() -> None:
    cfg = RiskConfig()
    assert not risk.time_stop_due(0, 2 * 3_600_000 - 1, cfg) and risk.time_stop_due(0, 2 * 3_600_000, cfg)
    with pytest.raises(Exception, match="sum to 1"):
        RiskConfig(take_profit_sizes=[0.5, 0.6])
    with pytest.raises(Exception, match="increasing"):
        RiskConfig(take_profit=[0.2, 0.1])
    with pytest.raises((ConfigError, ValueError)):
        RiskConfig(time_stop="2 hours")


def test_metrics_parse_with_prometheus_clients_own_parser_and_health_reports_silence() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    bus = EventBus()
    obs = Observer(bus, "paper", max_silence_s=60)
    assert obs.health()[0] == 503  # no decision yet
    bus.publish(KlineClosed(1_000))
    bus.publish(OrderUpdate(1_000, "c1", "BTCUSDT", "BUY", "FILLED", 0.0012))
    status, doc = obs.health()
    assert status == 200 and doc["last_loop_ms"] == 1_000 and doc["trading_state"] == "ACTIVE"
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(obs.registry).decode())}
    assert {"trader_orders", "trader_fills", "trader_order_latency_seconds", "trader_equity_quote", "trader_open_positions",
            "trader_request_weight_used", "trader_stream_reconnects", "trader_signals", "trader_build_info"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("trader_orders_total", (("side", "BUY"), ("status", "FILLED")))] == 1.0
    assert samples[("trader_order_latency_seconds_count", ())] == 1.0
