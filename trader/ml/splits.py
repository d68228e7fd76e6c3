"""Walk-forward splits with a purge and an embargo: training never sees a label that overlaps the test.

Moments are sorted in time. The first ``min_train_fraction`` of them only ever train; the rest is
cut into ``folds`` consecutive test folds. For the fold testing ``[τ_a, τ_b)`` the training
moments are those with ``τ <= τ_a - purge - embargo``: the *purge* (the label horizon) drops every
training label ``(τ, τ + H]`` that would reach into the test period, the *embargo* adds a further
gap against serial correlation of features (de Prado, *Advances in Financial Machine Learning*,
2018, ch. 7). Inside a training fold the last ``valid_fraction`` is kept for early stopping only,
with the same purge between the part fitted and the part validated. The window expands: fold k
trains on everything before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trader.errors import ModelError

__all__ = ["Fold", "walk_forward"]


@dataclass(frozen=True)
class Fold:
    """Moment indices of one walk-forward fold (into the dataset's ``moments_ms``).

    Attributes:
        index: 0-based fold number.
        fit: moments the model is fitted on.
        valid: moments used only for early stopping (after ``fit`` + purge).
        test: moments tested out of sample.
    """

    index: int
    fit: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def walk_forward(
    moments_ms: np.ndarray,
    folds: int,
    *,
    min_train_fraction: float,
    purge_ms: int,
    embargo_ms: int,
    valid_fraction: float,
) -> list[Fold]:
    """Expanding-window walk-forward folds. Pure.

    Args:
        moments_ms: ``(M,)`` ascending moments, epoch ms.
        folds: number of test folds.
        min_train_fraction: share of moments before the first test fold.
        purge_ms: the label horizon, ms.
        embargo_ms: extra gap before each test fold, ms.
        valid_fraction: share of each training fold kept for early stopping.

    Returns:
        ``folds`` :class:`Fold` objects, oldest first.

    Raises:
        ModelError: too few moments for the folds asked (a fold would be empty).
    """
    M = moments_ms.size
    first = int(np.ceil(M * min_train_fraction))
    if M - first < folds or first < 4:
        raise ModelError(f"{M} moments are too few for {folds} walk-forward folds; warm a longer history or use fewer --folds")
    bounds = np.linspace(first, M, folds + 1).round().astype(int)
    out = []
    for k in range(folds):
        a, b = int(bounds[k]), int(bounds[k + 1])
        train_end = int(np.searchsorted(moments_ms, moments_ms[a] - purge_ms - embargo_ms, side="right"))
        if train_end < 4:
            raise ModelError(f"fold {k + 1}: nothing left to train on after the purge and embargo; use a longer history")
        n_valid = max(1, round(train_end * valid_fraction))
        v0 = train_end - n_valid
        fit_end = int(np.searchsorted(moments_ms, moments_ms[v0] - purge_ms, side="right"))
        if fit_end < 2:
            raise ModelError(f"fold {k + 1}: the training fold is too short to keep a validation slice")
        out.append(Fold(k, np.arange(fit_end), np.arange(v0, train_end), np.arange(a, b)))
    return out
