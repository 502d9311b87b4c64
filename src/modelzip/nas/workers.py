"""Where trials run: the Optuna storage, the worker loop that runs trials until the study
holds the budget, and the spawned worker processes that share one study.

The budget ``trials`` counts FINISHED trials (complete or pruned) across every process
(``modelzip.distributed.study.run_until_total``), so a killed run resumes where it stopped
(its interrupted trial goes stale via the heartbeat and is retried) and any number of worker
processes or machines opening the same study finish exactly ``trials`` between them: a
surplus trial is marked FAIL (attribute ``surplus``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import tempfile
from typing import Any

import optuna
import torch
from tqdm.auto import tqdm

from ..distributed.storage import open_storage as open_any_storage
from ..distributed.study import run_until_total
from ..errors import ConfigError, ModelzipError
from .builder import build
from .evaluators import arch_stats, job_example, objective, violation
from .options import Job, make_pruner
from .samplers import Guard, make_sampler, mixed_seed
from .space import SearchSpace

HEARTBEAT = {"interval": 2, "grace": 10}  # seconds (RDB storages only)


def open_storage(url: Any) -> Any:
    """An Optuna storage for ``url`` (None: in memory), opened by modelzip.distributed with
    heartbeats so that the trials of killed workers are failed and retried."""
    if url is None or isinstance(url, optuna.storages.BaseStorage):
        return url
    return open_any_storage(url, heartbeat_interval=HEARTBEAT["interval"],
                            grace_period=HEARTBEAT["grace"])


def load_study(job: Job, worker: int, study: optuna.Study | None) -> optuna.Study:
    """The job's study with this worker's sampler (guarded by the params/MACs limits, so
    samples that break them are re-drawn without a trial) and pruner."""
    space = SearchSpace.from_dict(job.space)
    if study is None:
        study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage))
    n = len(study.get_trials(deepcopy=False))
    seed = mixed_seed(job.options.seed, worker, n)
    base = make_sampler(job.strategy, space, seed, job.strategy_options)
    example = job_example(job, space)
    cache: dict[str, bool] = {}
    limits = {k: v for k, v in job.options.constraints.items() if k in ("params", "macs")}

    def ok(params: dict[str, Any]) -> bool:
        if not limits:
            return True
        s = space.normalise(params)
        key = repr(sorted(s.items()))
        if key not in cache:
            cache[key] = violation(arch_stats(build(space, s), example), limits) is None
        return cache[key]

    study.sampler = Guard(base, space, ok)
    study.pruner = make_pruner(job.options.pruner)
    return study


def work(job: Job, worker: int, study: optuna.Study | None = None,
         bar: tqdm | None = None) -> None:
    """Run trials until the study holds ``job.trials`` finished trials (all processes)."""
    study = load_study(job, worker, study)
    space = SearchSpace.from_dict(job.space)
    run_one = functools.partial(objective, job, space)

    def show(n: int) -> None:
        if bar is not None:
            bar.n = n
            bar.refresh()

    run_until_total(study, job.trials, run_one, grace=HEARTBEAT["grace"], on_progress=show)


def child(payload_path: str, worker: int) -> None:
    """Entry point of a spawned worker process. The job comes through a file written by
    the parent (not through ``Process`` arguments): a large dataset sent down the spawn pipe
    would block the parent until the child had started and read it."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with open(payload_path, "rb") as f:
        job = pickle.load(f)  # our own job object, written by run_workers just before
    if job.options.threads:
        torch.set_num_threads(job.options.threads)
    work(job, worker)


def _write_job(job: Job, path: str) -> None:
    try:
        payload = pickle.dumps(job)
    except Exception as exc:
        raise ConfigError(f"workers > 1 needs a picklable evaluate, train_data and "
                          f"teacher (top-level functions, not lambdas): {exc}") from None
    with open(path, "wb") as f:
        f.write(payload)


def run_workers(job: Job, study: optuna.Study) -> None:
    """Run the job here (worker 0, with the progress bar) and in ``workers - 1`` spawned
    processes until the study holds the budget."""
    workers = job.options.workers
    with tempfile.TemporaryDirectory(prefix="modelzip-nas-") as tmp:
        path = os.path.join(tmp, "job.pickle")
        if workers > 1:
            _write_job(job, path)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=child, args=(path, w)) for w in range(1, workers)]
        for p in procs:
            p.start()
        try:
            with tqdm(total=job.trials, desc=f"search ({job.strategy})",
                      disable=not job.options.progress, unit="trial") as bar:
                work(job, 0, study, bar)
        finally:
            for p in procs:
                p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise ModelzipError(f"{len(failed)} worker process(es) failed (exit codes {failed})")
