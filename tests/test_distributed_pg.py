"""Integration tests against a real PostgreSQL server (started here, stopped after).

Skipped with a reason where the server binaries are absent; under CI (CI=true) they must
run, so a server that cannot start fails the run instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from modelzip.distributed import load_study, open_storage

from .pg_fixture import new_database, postgres, unavailable, wait_for

JOB = Path(__file__).with_name("dist_job.py")
SRC = Path(__file__).resolve().parents[1] / "src"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_server():
    why = unavailable()
    if why and not CI:
        pytest.skip(f"no PostgreSQL server here: {why}")
    with postgres() as url:  # under CI a failure to start is an error, not a skip
        yield url


def _workers(url: str, n: int, total: int, *extra: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return [subprocess.Popen([sys.executable, str(JOB), url, "s", str(total), *extra],
                             env=env, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def _finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return load_study(open_storage(url), "s").get_trials()


def _states(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.slow
def test_three_workers_reach_the_exact_total(pg_server):
    url = new_database(pg_server, "three")
    _finish(_workers(url, 3, 15, "--sleep", "0.3"))
    trials = _trials(url)
    finished = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 15
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "FAIL")
    assert len({t.user_attrs["pid"] for t in finished}) == 3  # every worker ran trials
    # running the job again adds nothing: the total counts trials of every run
    _finish(_workers(url, 1, 15))
    assert _states(_trials(url)).get("COMPLETE") == 15


@pytest.mark.slow
def test_concurrent_first_start_on_a_fresh_database(pg_server):
    url = new_database(pg_server, "fresh")  # no tables yet: all race to create them
    start = f"{time.time() + 20:.3f}"  # after every process has imported modelzip
    _finish(_workers(url, 4, 8, "--sleep", "0.05", "--start-at", start))
    assert _states(_trials(url)).get("COMPLETE") == 8


@pytest.mark.slow
def test_killed_workers_trial_is_failed_and_retried(pg_server, tmp_path):
    url = new_database(pg_server, "killed")
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = _workers(url, 3, 9, "--sleep", "2", "--grace", "3", "--marks", str(marks))
    victim = procs[0]
    mark = marks / str(victim.pid)
    assert wait_for(mark.exists, 90), "the first worker never started a trial"
    killed_trial = int(mark.read_text())
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    _finish(procs[1:])
    trials = _trials(url)
    by_number = {t.number: t for t in trials}
    assert by_number[killed_trial].state.name == "FAIL"
    assert not by_number[killed_trial].user_attrs.get("surplus")
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == by_number[killed_trial].params  # the same trial, re-run
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(finished) == 9  # nothing lost, nothing extra


@pytest.mark.slow
def test_search_cli_with_two_joining_workers(pg_server, tmp_path):
    """`modelzip search` on PostgreSQL plus two `modelzip worker` processes: 3 processes,
    exactly --trials finished trials, and a worker writes the final model."""
    url = new_database(pg_server, "cli")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "modelzip"]
    search = subprocess.Popen(
        [*cmd, "search", "--data", "digits", "--train-limit", "300", "--epochs", "1",
         "--trials", "6", "--storage", url, "--study", "cli", "--no-progress", "--json"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: _has_study(url, "cli"), 120)
    workers = [subprocess.Popen([*cmd, "worker", "--storage", url, "--study", "cli",
                                 "--no-progress", *(["--out", "w.mzip"] if i == 0 else [])],
                                env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    _finish([search, *workers])
    trials = load_study(open_storage(url), "cli").get_trials()
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 6
    assert {t.user_attrs["worker"] for t in done} <= {search.pid, *(w.pid for w in workers)}
    assert (tmp_path / "w.mzip").stat().st_size > 0


def _has_study(url: str, name: str) -> bool:
    try:
        study = load_study(open_storage(url), name)
    except Exception:
        return False
    return "mz_job" in study.user_attrs
