"""A worker process for the distributed tests and benchmarks.

``python tests/dist_job.py URL STUDY TOTAL [--sleep S] [--grace G] [--marks DIR]`` joins
study STUDY in storage URL (creating it if it is the first) and runs trials until the study
holds TOTAL finished trials across all processes. Each trial records its worker's pid and
sleeps S seconds (a stand-in for training); with --marks it writes DIR/<pid> holding the
number of the trial it is running, so a test can kill it mid-trial. --start-at T makes
every process open the storage at the same instant T.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import optuna  # noqa: E402

from modelzip.distributed import create_or_load_study, open_storage, run_until_total  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("study")
    p.add_argument("total", type=int)
    p.add_argument("--sleep", type=float, default=0.2)
    p.add_argument("--grace", type=int, default=3)
    p.add_argument("--marks", default=None)
    p.add_argument("--start-at", type=float, default=None,
                   help="wait until this time.time() before opening the storage, so that "
                        "processes started together hit a fresh database at one instant")
    a = p.parse_args()
    if a.start_at is not None:
        time.sleep(max(0.0, a.start_at - time.time()))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(a.url, heartbeat_interval=1, grace_period=a.grace)
    study = create_or_load_study(storage, a.study, directions=["minimize"],
                                 sampler=optuna.samplers.RandomSampler(seed=os.getpid()))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        trial.set_user_attr("pid", os.getpid())
        if a.marks:
            Path(a.marks, str(os.getpid())).write_text(str(trial.number))
        time.sleep(a.sleep)
        return (x - 0.3) ** 2

    run_until_total(study, a.total, objective, grace=a.grace, poll=0.2)


if __name__ == "__main__":
    main()
