"""Distributed search (issue 17, benchmark 1): a NAS search with 1, 2 and 3 worker processes
on a throwaway PostgreSQL server and on SQLite, same number of trials: wall time per finished
trial. Then a worker killed mid-trial: finished trials lost (goal 0) and the killed trial
retried.

Digits (bundled), one-architecture MLP space (equal trial costs), random strategy, no pruner,
1 torch thread per worker. Wall time is the search call (spawning the extra workers included,
no retraining). The kill run uses the CLI: `modelzip search` on PostgreSQL plus two
`modelzip worker` processes; one worker is SIGKILLed while it runs a trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import optuna
import torch
from common import REPO, fmt, write_result

import modelzip as mz
from modelzip.distributed import load_study, open_storage

sys.path.insert(0, str(REPO))
from tests.pg_fixture import new_database, postgres, unavailable, wait_for  # noqa: E402

TRIALS = 9
EPOCHS = 4
GRACE = 10  # seconds: modelzip.nas.search.HEARTBEAT["grace"]


def search(url: str, workers: int, tag: str, train, val, space) -> float:
    t0 = time.perf_counter()
    r = mz.search_architecture(space, evaluate=mz.nas.accuracy_on(val), train_data=train,
                               trials=TRIALS, strategy="random", epochs=EPOCHS, lr=3e-3,
                               storage=url, study=tag, workers=workers, threads=1,
                               pruner="none", retrain_epochs=0, progress=False)
    wall = time.perf_counter() - t0
    assert r.metrics["trials"] == TRIALS
    return wall


def kill_run(admin: str, tmp: str) -> dict:
    """search + 2 workers on PostgreSQL; kill one mid-trial; count what was lost."""
    url = new_database(admin, "killed")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "modelzip"]
    search_p = subprocess.Popen([*cmd, "search", "--data", "digits", "--space", "mlp",
                                 "--epochs", str(EPOCHS), "--trials", str(TRIALS),
                                 "--storage", url, "--study", "k", "--strategy", "random",
                                 "--no-progress", "--json"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    study = lambda: load_study(open_storage(url), "k")  # noqa: E731
    wait_for(lambda: _exists(url), 180)
    workers = [subprocess.Popen([*cmd, "worker", "--storage", url, "--study", "k",
                                 "--no-progress"], env=env, cwd=tmp,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    victim = workers[0]

    def victim_trial() -> list:
        return [t for t in study().get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker") == victim.pid]

    assert wait_for(lambda: bool(victim_trial()), 300, 0.2), "the worker never ran a trial"
    killed = victim_trial()[0].number
    before = {t.number for t in study().get_trials() if t.state.name in ("COMPLETE", "PRUNED")}
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    for p in (search_p, workers[1]):
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-2000:]
    trials = study().get_trials()
    after = {t.number for t in trials if t.state.name in ("COMPLETE", "PRUNED")}
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    return {"killed_trial": killed, "finished_before_kill": len(before),
            "finished_lost": len(before - after), "finished_total": len(after),
            "killed_state": next(t.state.name for t in trials if t.number == killed),
            "retried_as": [t.number for t in retry],
            "retry_state": [t.state.name for t in retry]}


def _exists(url: str) -> bool:
    try:
        return "mz_job" in load_study(open_storage(url), "k").user_attrs
    except Exception:
        return False


def main() -> None:
    torch.set_num_threads(1)
    why = unavailable()
    if why:
        raise SystemExit(f"needs a PostgreSQL server: {why}")
    split = mz.data.digits(batch_size=64)
    train, val = mz.nas.holdout(split.train, 0.2)
    space = mz.nas.space("mlp", split, depth=[2], width=[64], activation=["relu"])
    rows = []
    with postgres() as admin, tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2, 3):
            for kind in ("postgresql", "sqlite"):
                url = new_database(admin, f"w{workers}") if kind == "postgresql" \
                    else f"sqlite:///{tmp}/w{workers}.db"
                wall = search(url, workers, f"w{workers}", train, val, space)
                rows.append([kind, workers, TRIALS, fmt(wall, 1), fmt(wall / TRIALS, 2)])
                print(rows[-1], flush=True)
        kill = kill_run(admin, tmp)
        print(kill)
    base = {r[0]: r[3] for r in rows if r[1] == 1}
    for r in rows:
        r.append(fmt(r[3] / base[r[0]], 2))
    write_result(
        "dist_search_workers", "Distributed search: workers on PostgreSQL and SQLite",
        [{"title": f"{TRIALS} trials, random strategy, {EPOCHS} epochs per trial, one run each",
          "columns": ["storage", "workers", "finished trials", "wall time s",
                      "s per finished trial", "time / 1 worker"], "rows": rows},
         {"title": "a worker SIGKILLed mid-trial (search + 2 workers, PostgreSQL)",
          "columns": ["finished before the kill", "finished lost (goal 0)", "killed trial",
                      "its state", "retried as trial", "retry state", "finished in all"],
          "rows": [[kill["finished_before_kill"], kill["finished_lost"], kill["killed_trial"],
                    kill["killed_state"], kill["retried_as"], kill["retry_state"],
                    kill["finished_total"]]]}],
        anchors=["Issue 17 benchmark 1: 1, 2, 3 workers on PostgreSQL and SQLite, same "
                 "trials: wall time per finished trial; a killed worker: finished trials "
                 "lost (goal 0), the killed one retried."],
        notes=[f"Machine: {os.cpu_count()} cores shared with other jobs while this ran, so "
               "more workers than free cores cannot speed up; read the ratios as the "
               "machinery's overhead on this machine, not as scaling.",
               "PostgreSQL 15 started by tests/pg_fixture.py (fsync off, local TCP). "
               f"Heartbeat every 2 s, a dead worker's trial failed after {GRACE} s without "
               "one and re-queued with the same parameters (Optuna's "
               "RetryHeartbeatStaleTrialCallback)."],
        extra={"kill": kill})


if __name__ == "__main__":
    main()
