"""Batch inference with onnxruntime: one session per process, the whole universe in one call.

Only this module imports onnxruntime, and only the scan's ``ml`` factor, ``tune evaluate --scorer
ml`` and the export parity check use it; xgboost is never imported on the scan path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trader.errors import ModelError

__all__ = ["OnnxModel"]


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
