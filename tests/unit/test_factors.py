from __future__ import annotations

import numpy as np

from trader.features.factors import FACTORS, score_universe


def biases(v: float, n: int = 3) -> dict[str, np.ndarray]:
    return {k: np.full(n, v) for k in ("trend", "momentum", "volume", "structure")} | {"volatility": np.full(n, 50.0)}


W = {"trend": 0.25, "momentum": 0.2, "volume": 0.1, "volatility": 0.1, "structure": 0.15, "mtf": 0.2}


def test_bounds_direction_and_symmetry() -> None:
    up = score_universe([biases(0.8), biases(0.6)], W)
    down = score_universe([biases(-0.8), biases(-0.6)], W)
    assert (up.direction == 1).all() and (down.direction == -1).all()
    assert np.allclose(up.score, down.score)  # a mirrored market scores the same, the other way
    assert ((up.score >= 0) & (up.score <= 100)).all() and set(up.factors) == set(FACTORS)
    flat = score_universe([biases(0.0), biases(0.0)], W)
    assert np.allclose(flat.score, 50.0)


def test_stronger_agreement_scores_higher_and_weights_matter() -> None:
    weak = score_universe([biases(0.3), biases(0.3)], W).score
    strong = score_universe([biases(0.9), biases(0.9)], W).score
    assert (strong > weak).all()
    only_trend = score_universe([biases(0.5), biases(0.5)], {"trend": 1.0})
    assert np.allclose(only_trend.score, only_trend.factors["trend"])


def test_disagreeing_timeframes_lower_mtf() -> None:
    agree = score_universe([biases(0.7), biases(0.7)], W).factors["mtf"]
    disagree = score_universe([biases(0.7), biases(-0.7)], W).factors["mtf"]
    assert (agree > disagree).all()


def test_non_finite_inputs_are_flagged() -> None:
    b = biases(0.5)
    b["trend"][1] = np.nan
    res = score_universe([b, biases(0.5)], W)
    assert res.valid.tolist() == [True, False, True] and np.isnan(res.score[1])
