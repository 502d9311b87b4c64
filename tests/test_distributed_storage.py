"""Storages without a server: SQLite and the journal file; bad values; the trial total."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from modelzip.cli import main
from modelzip.distributed import (
    StorageError,
    create_or_load_study,
    load_study,
    open_storage,
    run_until_total,
    storage_url,
)

from .pg_fixture import wait_for

JOB = Path(__file__).with_name("dist_job.py")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("value", [
    "", "foo", 42, "redis://localhost/0", "postgresql://u@127.0.0.1:abc/db",
    "postgresql://u:secret@127.0.0.1:1/db", "mysql://u:secret@127.0.0.1:1/db",
    "postgresql://127.0.0.1:5432", "sqlite:////no/such/folder/x.db",
    "journal:///no/such/folder/x.log", "journal://"])
def test_bad_storage_is_one_clear_error(value):
    with pytest.raises(StorageError) as info:
        open_storage(value)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # import psycopg2 -> ImportError
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StorageError, match=r"modelzip\[distributed\]"):
        open_storage("postgresql://u@127.0.0.1:5432/db")


def test_cli_bad_storage_exits_2_with_one_line(capsys):
    assert main(["worker", "--storage", "postgres://u:pw@127.0.0.1:1/db", "--study", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("modelzip worker: error:") and "pw" not in err[0]


def test_storage_urls(tmp_path):
    assert storage_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert storage_url(None, default=tmp_path / "b.sqlite").startswith("sqlite:///")
    assert storage_url("postgres://u@h/db").startswith("postgresql+psycopg")
    assert storage_url("mysql://u@h/db").startswith("mysql+")
    assert storage_url("journal:///x/y.log") == "journal:///x/y.log"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_total_counts_finished_trials_of_every_run(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else \
        f"journal:///{tmp_path / 's.log'}"
    study = create_or_load_study(open_storage(url), "t", directions=["minimize"])

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if x > 0.7:
            raise optuna.TrialPruned()
        return x

    assert run_until_total(study, 4, objective) == 4
    again = create_or_load_study(open_storage(url), "t", directions=["minimize"])
    assert run_until_total(again, 4, objective) == 4  # re-run: nothing new
    assert run_until_total(again, 6, objective) == 6  # a larger total: two more
    states = [t.state for t in load_study(open_storage(url), "t").get_trials()]
    assert len(states) == 6 and all(s.is_finished() for s in states)
    with pytest.raises(Exception, match="optimises"):
        create_or_load_study(open_storage(url), "t", directions=["maximize"])
    create_or_load_study(open_storage(url), "t", directions=["minimize"],
                         attrs={"mz_kind": "auto"})
    with pytest.raises(Exception, match="another job"):
        create_or_load_study(open_storage(url), "t", directions=["minimize"],
                             attrs={"mz_kind": "search"})


def _workers(url, n, total, *extra):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return [subprocess.Popen([sys.executable, str(JOB), url, "s", str(total), *extra],
                             env=env, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def _finish(procs):
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]


@pytest.mark.slow
def test_concurrent_first_start_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _finish(_workers(url, 3, 6, "--sleep", "0.05", "--start-at", f"{time.time() + 15:.3f}"))
    trials = load_study(open_storage(url), "s").get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 6


@pytest.mark.slow
def test_journal_killed_worker_is_retried_by_our_heartbeat(tmp_path):
    """The journal storage has no Optuna heartbeat: ours stamps running trials instead."""
    url = f"journal:///{tmp_path / 'j.log'}"
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = _workers(url, 2, 5, "--sleep", "2", "--grace", "3", "--marks", str(marks))
    mark = marks / str(procs[0].pid)
    assert wait_for(mark.exists, 120)
    killed = int(mark.read_text())
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    _finish(procs[1:])
    trials = load_study(open_storage(url), "s").get_trials()
    assert [t.state.name for t in trials if t.number == killed] == ["FAIL"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
