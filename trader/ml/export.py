"""ONNX export of a trained XGBoost model, with a parity check or a refusal.

The converter is onnxmltools' XGBoost converter (``onnxmltools.convert_xgboost``); inputs are
named ``input``, float32 ``(None, n_features)``, so features are positional ``f0 … fn`` in the
order the model's ``meta.json`` lists. Parity: the ONNX model run by onnxruntime must reproduce the
native booster's probability to ``1e-5`` on held-out rows, or the model is not registered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trader.errors import ModelError

__all__ = ["PARITY_TOLERANCE", "check_parity", "to_onnx"]

#: Largest |native - ONNX| probability accepted at export.
PARITY_TOLERANCE = 1e-5
#: ONNX opset written (onnxruntime >= 1.18 runs it).
TARGET_OPSET = 15


def to_onnx(booster: Any, n_features: int) -> bytes:
    """Serialise ``booster`` (an ``xgboost.Booster`` with ``binary:logistic``) as ONNX bytes.

    Raises:
        ModelError: the converter refused the model.
    """
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, n_features]))], target_opset=TARGET_OPSET)
    except Exception as exc:
        raise ModelError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    data: bytes = model.SerializeToString()
    return data


def check_parity(booster: Any, onnx_bytes: bytes, rows: np.ndarray) -> float:
    """Max |native - ONNX| probability on ``rows`` ``(k, n_features)`` float32.

    Raises:
        ModelError: above :data:`PARITY_TOLERANCE`.
    """
    from trader.ml.predict import OnnxModel

    native = booster.inplace_predict(rows)
    onnx = OnnxModel.from_bytes(onnx_bytes).predict(rows)
    diff = float(np.max(np.abs(native - onnx))) if rows.shape[0] else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(f"ONNX parity check failed: max |native - onnx| = {diff:.2e} > {PARITY_TOLERANCE:g}; the model is not registered")
    return diff
