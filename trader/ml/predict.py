"""Batch inference with onnxruntime: one session per process, the whole universe in one call.

Only this module imports onnxruntime, and only a scan with a model, ``tune evaluate`` and the
export parity check use it; xgboost is never imported on the scan path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trader.errors import ModelError

__all__ = ["ActiveModel", "OnnxModel"]


class OnnxModel:
    """An ONNX binary classifier (input ``input`` float32 ``(k, F)``; output probabilities ``(k, 2)``).

    Args:
        session: an ``onnxruntime.InferenceSession``.
        meta: the model's ``meta.json`` (``{}`` when built from bytes).

    One intra-op thread: a scan's batch is ~100 rows, where thread hand-offs cost more than they
    save (measured in ``trader compare``).
    """

    def __init__(self, session: Any, meta: dict[str, Any] | None = None) -> None:
        self.session = session
        self.meta = meta or {}
        self._input = session.get_inputs()[0].name
        self.n_features = int(session.get_inputs()[0].shape[1])

    @staticmethod
    def _session(source: bytes | str) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load ONNX model: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes, meta: dict[str, Any] | None = None) -> OnnxModel:
        """A session from serialized ONNX."""
        return cls(cls._session(data), meta)

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> OnnxModel:
        """The ``model.onnx`` of a registry folder.

        Raises:
            ModelError: missing or unreadable file.
        """
        path = folder / "model.onnx"
        if not path.is_file():
            raise ModelError(f"model file {path} is missing")
        return cls(cls._session(str(path)), meta)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probability of class 1 for each row: ``(k, F)`` -> ``(k,)`` float64.

        Raises:
            ModelError: wrong number of features.
        """
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(f"the model expects {self.n_features} features per row, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.empty(0)
        out = self.session.run(None, {self._input: np.ascontiguousarray(X, dtype=np.float32)})
        return np.asarray(out[1], dtype=np.float64)[:, 1]


class ActiveModel:
    """The active model as the scan and the trade engine use it: one ONNX session, the feature
    parameters it was trained with, and its signal table.

    Loaded once per :class:`Scanner` (a long-running ``scan --live`` or ``trade`` keeps it). Its
    features are computed by :func:`trader.features.matrix.last_features` — the dataset's own
    code — with the model's settings, whatever the scan's are, then ranked across the universe
    (:func:`~trader.features.matrix.cross_sectional_rank`) and scored in one onnxruntime call.

    Args:
        folder: the model's registry folder.
        meta: its ``meta.json``.

    Raises:
        ModelError: the model's feature set or names differ from this version's, or it cannot be loaded.
    """

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        from trader.errors import ModelError
        from trader.features.matrix import FEATURE_SET, FeatureParams, feature_names
        from trader.ml.predict import OnnxModel

        if meta.get("feature_set") != FEATURE_SET:
            raise ModelError(f"active model {meta.get('id')} uses feature set {meta.get('feature_set')!r}, not {FEATURE_SET!r}; retrain it")
        self.params = FeatureParams.from_dict(meta["feature_params"])
        if feature_names(self.params.intervals) != meta.get("features"):
            raise ModelError(f"active model {meta.get('id')}: its feature names differ from this version's; retrain it")
        self.id = str(meta.get("id"))
        self.folder = folder
        self.meta = meta
        self.onnx = OnnxModel.load(folder, meta)
        from trader.ml.signal import SignalTable

        #: what its signals were worth in its walk-forward folds (None for a model trained before tables existed)
        self.table = SignalTable.from_dict(meta["signal"]) if meta.get("signal") else None
        tw = meta.get("train_window") or {}
        #: ``{"from", "to", "to_ms"}`` of the training window
        self.window: dict[str, Any] | None = {"from": tw.get("from"), "to": tw.get("to"), "to_ms": tw.get("to_ms")} if tw else None
        self.shipped = bool(meta.get("shipped"))

    @classmethod
    def from_store(cls, store_path: Path) -> ActiveModel | None:
        """The store's active model (the package's shipped model unless the store chose another or
        ``none``), or None (cheap when there is none)."""
        from trader.ml.registry import Registry

        info = Registry(store_path).active()
        return None if info is None else cls(info.path, info.meta)

    def feature_rows(self, rows: Sequence[tuple[str, list[np.ndarray]]]) -> np.ndarray:
        """Raw feature rows ``(len(rows), F)`` float32 of ``(symbol, [kline rows per interval, (7, L)])``."""
        from trader.features.matrix import feature_names, last_features

        X = np.full((len(rows), len(feature_names(self.params.intervals))), np.nan, dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, (_, arrays) in enumerate(rows):
            groups.setdefault(tuple(a.shape[1] for a in arrays), []).append(k)
        for members in groups.values():
            data = [np.stack([rows[k][1][i] for k in members]) for i in range(len(self.params.intervals))]
            X[members] = last_features(data, self.params)
        return X

    def predict(self, symbols: Sequence[str], X: np.ndarray) -> dict[str, tuple[float, float]]:
        """Rank the raw rows across the cross-section (every row of ``X``) and predict in one call.

        Returns:
            ``{symbol: (probability, percentile of it in the cross-section)}`` of the symbols whose
            features are all finite; empty when fewer than
            :data:`~trader.features.matrix.MIN_CROSS_SECTION` are.
        """
        from trader.features.matrix import MIN_CROSS_SECTION, cross_sectional_rank

        finite = np.isfinite(X).all(axis=1) if X.size else np.zeros(len(symbols), dtype=bool)
        if finite.sum() < MIN_CROSS_SECTION:
            return {}
        p = self.onnx.predict(cross_sectional_rank(X, finite)[finite])
        pct = cross_sectional_rank(p[:, None])[:, 0]
        return {symbols[int(k)]: (float(v), float(q)) for k, v, q in zip(np.flatnonzero(finite), p, pct, strict=True)}

    def probabilities(self, rows: Sequence[tuple[str, list[np.ndarray]]]) -> dict[str, tuple[float, float]]:
        """:meth:`feature_rows` then :meth:`predict` for one cross-section held in memory."""
        return self.predict([r[0] for r in rows], self.feature_rows(rows))

    def data_note(self, newest_close_ms: int, max_age_ms: int) -> str | None:
        """A warning when the data being scored is inside the model's training window (in-sample: the
        model knows how it ended) or more than ``max_age_ms`` after it (stale); None otherwise."""
        if not self.window or not self.window.get("to_ms"):
            return None
        who = f"model {self.id}{' (shipped)' if self.shipped else ''}"
        age_ms = newest_close_ms - int(self.window["to_ms"])
        if age_ms < 0:
            return (f"{who} was trained on these klines (its training window runs to {self.window.get('to')}): its scores "
                    "here are in-sample, better than it will do on new data")
        if age_ms > max_age_ms:
            return (f"{who} was trained on klines up to {self.window.get('to')}, {age_ms / 86_400_000:.0f} days before the "
                    "store's newest; 'trader tune train --if-due' retrains it on your store")
        return None

