"""Optuna study storage for ``trader tune search``: opened and checked before any data loads.

A search shared by several machines keeps its study in one database (PostgreSQL; SQLite for one
machine). :func:`open_storage` turns the URL into a checked Optuna storage or one line naming the
cause — bad URL, driver missing (and which extra installs it), authentication, missing database,
server unreachable — in under ``connect_timeout_s``. The storage has Optuna's RDB **heartbeat**: a
worker that dies mid-trial has that trial marked FAIL after ``grace`` and re-run by another worker
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`). :func:`mask_url` hides the password wherever a
URL is printed. URL forms: ``postgresql://user@host:5432/db`` (psycopg 3, the ``postgres`` extra;
``postgres://`` is read as the same), ``postgresql+psycopg2://...`` (psycopg2, if installed),
``sqlite:///path``. Passwords: in the URL, or ``PGPASSWORD`` / ``~/.pgpass`` (libpq reads them).
"""

from __future__ import annotations

import re
from typing import Any

from trader.errors import ConfigError, NetworkError

__all__ = ["check_fingerprint", "close_storage", "mask_url", "normalise_url", "open_storage"]


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``postgresql://u:***@h/db``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` -> ``postgresql+psycopg://`` (psycopg 3); others unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _driver(url: str) -> None:
    """Refuse at once when the URL's database driver is not installed (which extra installs it)."""
    scheme = url.split("://", 1)[0]
    need = {"postgresql+psycopg": ("psycopg", "pip install 'trader[postgres]'"),
            "postgresql+psycopg2": ("psycopg2", "pip install psycopg2-binary, or use postgresql:// with pip install 'trader[postgres]'")}
    if scheme in need:
        module, how = need[scheme]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"--storage {mask_url(url)}: the PostgreSQL driver {module} is not installed ({how})") from None


def open_storage(url: str, *, heartbeat_s: int = 30, connect_timeout_s: int = 2) -> Any:
    """A checked Optuna storage for ``url`` (see the module docstring).

    Raises:
        ConfigError: a malformed URL, an unknown dialect, a missing driver, failed authentication or a
            missing database (exit 2). NetworkError: the server does not answer (exit 3).
    """
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = mask_url(url.strip())
    url = normalise_url(url.strip())
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"--storage {shown}: not a database URL (postgresql://user@host:5432/db or sqlite:///path)") from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite", "mysql"):
        raise ConfigError(f"--storage {shown}: unsupported database {parsed.get_backend_name()!r} (postgresql or sqlite)")
    _driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    import time
    import warnings

    def create() -> Any:
        with warnings.catch_warnings():  # the heartbeat's retry callback is marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                              grace_period=3 * heartbeat_s, heartbeat_stale_trial_callback=retry)

    try:
        for attempt in range(5):
            try:
                return create()
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # two workers creating the schema of a fresh database at once: the loser finds it made
                if attempt == 4:
                    raise
                time.sleep(0.5)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        text = str(exc.orig if getattr(exc, "orig", None) is not None else exc).lower()
        if "password authentication failed" in text or "no password supplied" in text or "authentication" in text:
            raise ConfigError(f"--storage {shown}: authentication failed (check the user and the password: URL, PGPASSWORD or ~/.pgpass)") from None
        if "does not exist" in text and "database" in text:
            raise ConfigError(f"--storage {shown}: the database {parsed.database!r} does not exist (createdb {parsed.database})") from None
        raise NetworkError(f"--storage {shown}: the database server does not answer ({' '.join(text.split())[:160]})") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"--storage {shown}: {exc}") from None
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
        raise ConfigError(f"--storage {shown}: the study schema could not be created ({' '.join(str(exc).split())[:160]})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def close_storage(storage: Any) -> None:
    """Release a storage's database connections (its session and engine pool)."""
    remove = getattr(storage, "remove_session", None)
    if remove is not None:
        remove()
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def check_fingerprint(study: Any, fingerprint: dict[str, Any]) -> None:
    """Record the dataset a study searches on (first worker) or refuse a worker whose data differs.

    Raises:
        ConfigError: the study was searched on other data (both fingerprints in the message).
    """
    seen = study.user_attrs.get("dataset")
    if seen is None:
        study.set_user_attr("dataset", fingerprint)
        return
    if seen != fingerprint:
        def short(f: dict[str, Any]) -> str:
            return (f"{len(f.get('symbols', []))} symbols, {','.join(f.get('intervals', []))}, {f.get('from_ms')}..{f.get('to_ms')}, "
                    f"klines {str(f.get('klines'))[:12]}")
        raise ConfigError(f"study {study.study_name!r} was searched on other data: the study has [{short(seen)}], this worker's store "
                          f"has [{short(fingerprint)}] (warm the same symbols and window, or use another --study)")
