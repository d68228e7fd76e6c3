"""The model registry: one folder per model in the store directory, one active model, rollback.

Layout (``<store>/models/``)::

    <id>/model.onnx     the ONNX model the scan runs (onnxruntime)
    <id>/model.ubj      the native XGBoost model (UBJSON), for retraining and compare
    <id>/meta.json      feature names and order, feature parameters, training window, fold
                        metrics, data fingerprint, hyper-parameters, library versions, git commit
    active.json         {"active": id | "none" | null, "previous": ..., "switched_at_ms": ...}

**The shipped model.** The package carries a model trained on its bundled Binance history
(``trader/data/model/``, built by ``make model``; :func:`shipped_model`). A store that never chose
a model (no ``active.json``, or ``"active": null``) uses it; ``trader tune use none`` turns models
off (``"active": "none"``); ``trader tune use default`` returns to the shipped one.

A model folder is written under a temporary name and renamed into place, and ``active.json`` is
replaced with ``os.replace``: a reader sees the old or the new model, never half of one, and a
process killed mid-write leaves at most a ``.tmp-*`` folder (ignored, removed by the next register).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trader.errors import ModelError

__all__ = ["DEFAULT", "NONE", "ModelInfo", "Registry", "ship_model", "shipped_dir", "shipped_model"]

#: ``tune use`` names: the package's shipped model, and no model at all
DEFAULT, NONE = "default", "none"


def shipped_dir() -> Path:
    """Where the package keeps its shipped model."""
    return Path(__file__).resolve().parents[1] / "data" / "model"


#: the files of a model folder the package ships (the scan needs the first two; ``tune evaluate`` the third)
SHIPPED_FILES = ("model.onnx", "meta.json", "oos.npz")


def ship_model(folder: Path, dest: Path | None = None) -> Path:
    """Copy a registered model into the package as its shipped model (``make model``): its ONNX file,
    out-of-sample predictions and ``meta.json`` marked ``"shipped": true``. Returns the folder written.

    Raises:
        ModelError: a file is missing or the destination cannot be written.
    """
    dest = dest or shipped_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        meta = json.loads((folder / "meta.json").read_text())
        meta["shipped"] = True
        for name in SHIPPED_FILES[:1] + SHIPPED_FILES[2:]:
            shutil.copyfile(folder / name, dest / name)
        (dest / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot ship model {folder.name} to {dest}: {exc}") from exc
    return dest


def shipped_model() -> ModelInfo | None:
    """The model the package ships (trained on the bundled history by ``make model``), or None if absent."""
    folder = shipped_dir()
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "model.onnx").is_file():
        return None
    return ModelInfo(str(meta.get("id", "shipped")), folder, meta)


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        id: folder name, ``YYYYMMDDTHHMMSSZ-<hash>``.
        path: its folder.
        meta: the parsed ``meta.json``.
    """

    id: str
    path: Path
    meta: dict[str, Any]


class Registry:
    """Models of one store.

    Args:
        store_path: the kline store directory (models live in ``<store_path>/models``).
    """

    def __init__(self, store_path: Path) -> None:
        self.root = Path(store_path) / "models"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def register(self, model_id: str, files: dict[str, bytes], meta: dict[str, Any]) -> ModelInfo:
        """Write a model folder atomically and return it (not active yet).

        Raises:
            ModelError: the id exists already or the directory cannot be written.
        """
        with self._lock():
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            final = self.root / model_id
            if final.exists():
                raise ModelError(f"model {model_id} is registered already")
            tmp = self.root / f".tmp-{model_id}-{os.getpid()}"
            try:
                tmp.mkdir(parents=True)
                for name, data in files.items():
                    (tmp / name).write_bytes(data)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
                for p in tmp.iterdir():
                    with open(p, "rb") as fh:
                        os.fsync(fh.fileno())
                os.replace(tmp, final)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ModelError(f"cannot write model {model_id} under {self.root}: {exc}") from exc
        return ModelInfo(model_id, final, meta)

    def models(self) -> list[ModelInfo]:
        """Every registered model, oldest first (unreadable folders are skipped)."""
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                try:
                    out.append(ModelInfo(p.name, p, json.loads((p / "meta.json").read_text())))
                except (OSError, ValueError):
                    continue
        return out

    def get(self, model_id: str) -> ModelInfo:
        """A model by id (a unique prefix is enough; the shipped model by its id too).

        Raises:
            ModelError: unknown or ambiguous id, or an unreadable ``meta.json``.
        """
        shipped = shipped_model()
        if shipped is not None and model_id == shipped.id:
            return shipped
        matches = [m for m in self.models() if m.id == model_id] or [m for m in self.models() if m.id.startswith(model_id)]
        if not matches:
            raise ModelError(f"no model {model_id!r} in {self.root} (see 'trader tune list')")
        if len(matches) > 1:
            raise ModelError(f"model id {model_id!r} is ambiguous: {', '.join(m.id for m in matches)}")
        return matches[0]

    def _state(self) -> dict[str, Any]:
        path = self.root / "active.json"
        if not path.is_file():
            return {"active": None, "previous": None}
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is unreadable ({exc}); 'trader tune use ID' rewrites it") from exc
        return state

    def active_id(self) -> str | None:
        """Id of the active model, or None for no model (cheap: reads one small file); the shipped
        model's id when the store never chose one."""
        active: str | None = self._state().get("active")
        if active == NONE:
            return None
        if active in (None, DEFAULT):
            shipped = shipped_model()
            return shipped.id if shipped is not None else None
        return active

    def active(self) -> ModelInfo | None:
        """The active model (the shipped one unless the store chose another, or none), or None.

        Raises:
            ModelError: ``active.json`` names a model that is missing.
        """
        active = self._state().get("active")
        if active == NONE:
            return None
        if active in (None, DEFAULT):
            return shipped_model()
        return self.get(active)

    def previous_id(self) -> str | None:
        """The model that was active before the last switch (the rollback target)."""
        prev: str | None = self._state().get("previous")
        return prev

    def use(self, model_id: str) -> ModelInfo | None:
        """Make ``model_id`` active (atomic), or ``"none"`` (no model), or ``"default"`` (the shipped
        one); the choice it replaces becomes ``previous``. Returns the model now active (None: none).

        Raises:
            ModelError: unknown id, or ``default`` when the package ships no model.
        """
        with self._lock():
            if model_id == NONE:
                target, info = NONE, None
            elif model_id == DEFAULT:
                info = shipped_model()
                if info is None:
                    raise ModelError("this installation ships no model (run 'make model')")
                target = DEFAULT
            else:
                info = self.get(model_id)
                target = info.id
            state = self._state()
            if state.get("active") == target:
                return info
            new = {"active": target, "previous": state.get("active") or DEFAULT, "switched_at_ms": int(time.time() * 1000)}
            tmp = self.root / f"active.json.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(new))
            os.replace(tmp, self.root / "active.json")
        return info

    def rollback(self) -> ModelInfo | None:
        """Switch back to the previous model.

        Raises:
            ModelError: there is no previous model.
        """
        prev = self.previous_id()
        if not prev:
            raise ModelError("no previous model to roll back to")
        return self.use(prev)
