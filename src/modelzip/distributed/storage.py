"""Optuna storages from one string: SQLite (the default), PostgreSQL, MySQL or a journal file.

``--storage`` / ``storage=`` accepts
- a SQLite file path (``run.db``) or URL (``sqlite:///run.db``), the embedded default;
- ``postgresql://user:password@host:5432/db`` (driver psycopg2, extra ``modelzip[distributed]``);
- ``mysql://user:password@host/db`` (driver pymysql or mysqlclient);
- ``journal:///shared/path.log``: Optuna's JournalStorage on a shared file system, no server.

Every failure (malformed value, missing driver, unreachable server) is one
:class:`StorageError` naming the storage with its password masked. Opening is race-free:
when several processes create the schema of a fresh database at the same moment, the
losers of the race ("table studies already exists", duplicate keys) retry with backoff.
Relational storages get Optuna's heartbeat, so the RUNNING trial of a killed worker is
marked FAILED after ``grace_period`` seconds and re-queued (RetryFailedTrialCallback).
"""

from __future__ import annotations

import importlib
import inspect
import random
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelzipError

HEARTBEAT_INTERVAL = 2  # seconds between a running trial's heartbeats
GRACE_PERIOD = 10  # seconds without a heartbeat before a RUNNING trial counts as dead
MAX_RETRY = 3  # times a dead worker's trial is re-queued
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# scheme -> (module to import, pip package); mysql:// is rewritten to pymysql if needed
DRIVERS = {"postgresql": ("psycopg2", "psycopg2-binary"),
           "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
           "postgresql+psycopg": ("psycopg", "psycopg"),
           "mysql+pymysql": ("pymysql", "pymysql"), "mysql+mysqldb": ("MySQLdb", "mysqlclient")}
RACE_MARKERS = ("already exists", "duplicate key", "database is locked", "unique constraint",
                "deadlock", "could not serialize")
FORMS = ("a SQLite file (run.db) or sqlite:///run.db, postgresql://user:pass@host/db, "
         "mysql://user:pass@host/db, or journal:///shared/path.log")


class StorageError(ConfigError):
    """A storage value is malformed, its driver is missing or its server cannot be reached."""


def masked(url: str) -> str:
    """``url`` with its password replaced by ***, for messages."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    cred, _, rest = tail.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{head}://{user}{':***' if ':' in cred else ''}@{rest}"


def storage_url(value: Any, default: str | Path | None = None) -> str:
    """The normalised URL for ``value`` (None: ``default``, a SQLite file path).

    Plain paths ending in .db/.sqlite/.sqlite3 become ``sqlite:///<absolute path>``;
    ``postgres://`` becomes ``postgresql://``; ``mysql://`` uses pymysql when mysqlclient
    is absent. Raises StorageError for anything else.
    """
    if value is None:
        if default is None:
            raise StorageError(f"no storage given: use {FORMS}")
        value = str(default)
    if not isinstance(value, str) or not value.strip():
        raise StorageError(f"storage must be a string: {FORMS}; got {value!r}")
    value = value.strip()
    if "://" not in value:
        if not value.lower().endswith(SQLITE_SUFFIXES):
            raise StorageError(f"storage {value!r} is not a storage URL; use {FORMS}")
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    scheme, rest = value.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql"):  # sqlalchemy's default driver varies by version
        driver = "psycopg" if _importable("psycopg") and not _importable("psycopg2") \
            else "psycopg2"
        return f"postgresql+{driver}://{rest}"
    if scheme == "mysql":
        driver = "mysqldb" if _importable("MySQLdb") else "pymysql"
        return f"mysql+{driver}" + value[len("mysql"):]
    if scheme in ("journal", "sqlite") or scheme in DRIVERS:
        return value
    raise StorageError(f"unsupported storage scheme {scheme!r} in {masked(value)}; use {FORMS}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _check_driver(url: str) -> None:
    scheme = url.split("://", 1)[0].lower()
    if scheme in DRIVERS and not _importable(DRIVERS[scheme][0]):
        module, package = DRIVERS[scheme]
        raise StorageError(f"storage {masked(url)} needs the {module} driver: "
                           f"pip install 'modelzip[distributed]' (or {package})")


def _check_url(url: str) -> None:
    if url.startswith("journal"):
        return
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        _ = parsed.port  # a non-numeric port raises here
    except Exception as exc:  # sqlalchemy raises ArgumentError / ValueError
        raise StorageError(f"malformed storage URL {masked(url)}: {_first(exc)}") from None
    if parsed.get_backend_name() != "sqlite" and not parsed.database:
        raise StorageError(f"storage URL {masked(url)} names no database (…/dbname)")
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(f"storage {masked(url)}: folder {folder} does not exist")


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def is_race(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost creation race (worth retrying), not a real failure."""
    text = str(exc).lower()
    return any(m in text for m in RACE_MARKERS)


def retrying(fn: Any, what: str, url: str, attempts: int = 8) -> Any:
    """``fn()``, retried with jittered exponential backoff while it loses creation races."""
    for i in range(attempts):
        try:
            return fn()
        except ModelzipError:
            raise
        except Exception as exc:  # sqlalchemy / driver errors of many kinds
            if i + 1 < attempts and is_race(exc):
                time.sleep(0.05 * 2 ** i * (1 + random.random()))
                continue
            raise StorageError(f"cannot {what} {masked(url)}: {_first(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def open_storage(value: Any, *, default: str | Path | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD, max_retry: int = MAX_RETRY) -> Any:
    """An Optuna storage for ``value`` (see the module doc); storages pass through.

    Relational storages carry a heartbeat (``heartbeat_interval``, ``grace_period``) whose
    stale trials are re-queued up to ``max_retry`` times. Journal storages get the same
    behaviour from :mod:`modelzip.distributed.study`'s own heartbeat.
    """
    import optuna

    if isinstance(value, optuna.storages.BaseStorage):
        return value
    url = storage_url(value, default)
    _check_url(url)
    _check_driver(url)
    if url.startswith("journal"):
        return _journal(url)
    kw: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} \
        if url.startswith("sqlite") else {"engine_kwargs": {"pool_pre_ping": True}}
    if url.startswith("postgresql"):
        kw["engine_kwargs"]["connect_args"] = {"connect_timeout": 10}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental / renamed across Optuna versions
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                        optuna.storages.RetryFailedTrialCallback)
        kw["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
           inspect.signature(optuna.storages.RDBStorage).parameters
           else "failed_trial_callback"] = retry(max_retry=max_retry)

    def make() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat is "experimental" in Optuna
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **kw)

    return retrying(make, "open storage", url)


def journal_path(url: str) -> Path:
    """The log file of a ``journal://`` URL (``journal:///abs/path`` or ``journal://rel``)."""
    raw = url.split("://", 1)[1]
    if not raw or raw.endswith("/"):
        raise StorageError(f"journal storage {url!r} names no file: use journal:///path.log")
    return Path(raw).expanduser().resolve()


def _journal(url: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(url)
    if not path.parent.is_dir():
        raise StorageError(f"journal storage {url}: folder {path.parent} does not exist")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        raise StorageError(f"cannot open journal storage {url}: {_first(exc)}") from None


__all__ = ["StorageError", "open_storage", "storage_url", "masked", "journal_path",
           "retrying", "is_race", "HEARTBEAT_INTERVAL", "GRACE_PERIOD"]
