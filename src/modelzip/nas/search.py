"""``mz.search_architecture``: the search loop, trial evaluation, storage and workers.

Each trial: the strategy's sampler proposes a sample (re-drawn until it meets the
parameter/MAC limits and is new), the model is built, measured (params, MACs, latency if
limited) and rejected before training if it breaks a limit (recorded as a PRUNED trial
with a ``violation`` attribute), trained briefly (or distilled from a teacher) with
Optuna's pruner watching the per-epoch metric, and evaluated.

Trials live in an Optuna storage (modelzip.distributed). The budget ``trials`` counts
FINISHED trials (complete or pruned) across every process (``run_until_total``), so a
killed run resumes where it stopped (its interrupted trial goes stale via the heartbeat and
is retried) and any number of worker processes or machines opening the same study finish
exactly ``trials`` between them: a surplus trial is marked FAIL (attribute ``surplus``).
"""

from __future__ import annotations

import functools
import math
import multiprocessing as mp
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn
from tqdm.auto import tqdm

from ..batches import forward
from ..distributed.storage import open_storage as open_any_storage
from ..distributed.study import create_or_load_study, run_until_total
from ..errors import BudgetError, ConfigError, ModelzipError
from ..measure import count_macs, count_params, model_latency
from ..measure import threads as torch_threads
from ..train import _check as _check_train
from ..train import accuracy, fit, perplexity, task_loss
from .builder import build
from .samplers import Guard, dominates, make_sampler, mixed_seed
from .samplers import strategy_options as _strategy_options
from .space import SearchSpace
from .space import space as make_space
from .supernet import train_supernet

LIMITS = ("params", "macs", "latency_ms")
HEARTBEAT = {"interval": 2, "grace": 10}  # seconds


@dataclass
class SearchResult:
    """The outcome of a search: the winning model (retrained) and every trial."""

    model: nn.Module
    metrics: dict[str, Any]
    sample: dict[str, Any]
    space: SearchSpace
    history: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    study: str
    storage: str | None
    path: str | None = None
    seconds: float = 0.0


@dataclass
class _Job:
    """Everything a worker process needs (pickled for spawned workers)."""

    space: dict[str, Any]
    evaluate: Callable[[nn.Module], float]
    train_data: Any
    trials: int
    strategy: str
    options: dict[str, Any]
    epochs: float
    lr: float
    constraints: dict[str, float]
    objectives: list[str]
    storage: Any
    study: str
    seed: int
    pruner: Any
    teacher: Any = None
    distillation: Any = None
    example_inputs: Any = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ validation
def _check_limits(constraints: Any) -> dict[str, float]:
    if constraints is None:
        return {}
    if not isinstance(constraints, dict):
        raise ConfigError("constraints must be a mapping like {'params': 20000}")
    for k, v in constraints.items():
        if k not in LIMITS:
            raise ConfigError(f"constraints: unknown limit {k!r}; valid: {LIMITS}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"constraints.{k} must be a positive number, got {v!r}")
    return {k: float(v) for k, v in constraints.items()}


def _check_objectives(objectives: Any) -> list[str]:
    objs = [objectives] if isinstance(objectives, str) else list(objectives or ["metric"])
    if not objs or objs[0] != "metric" or len(set(objs)) != len(objs):
        raise ConfigError(f"objectives must start with 'metric' and not repeat, got {objs}")
    for o in objs[1:]:
        if o not in LIMITS:
            raise ConfigError(f"objectives: unknown objective {o!r}; valid: metric, {LIMITS}")
    return objs


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _pruner(spec: Any) -> optuna.pruners.BasePruner:
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    table = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
             "hyperband": optuna.pruners.HyperbandPruner,
             "none": optuna.pruners.NopPruner}
    if spec not in table:
        raise ConfigError(f"pruner={spec!r}; choose one of {sorted(table)} or pass an "
                          "optuna pruner")
    return table[spec]()


def open_storage(url: Any) -> Any:
    """An Optuna storage for ``url`` (None: in memory; sqlite, postgresql, mysql, journal:
    see modelzip.distributed.storage), with heartbeats so killed workers' trials are retried."""
    if url is None:
        return None
    return open_any_storage(url, heartbeat_interval=HEARTBEAT["interval"],
                            grace_period=HEARTBEAT["grace"])


# ------------------------------------------------------------------ measuring a sample
def example_inputs(space: SearchSpace) -> torch.Tensor:
    """One input of the space's data (batch of 1) for MACs and latency."""
    if space.family == "tiny_gpt":
        return torch.zeros(1, space.fixed["seq_len"], dtype=torch.long)
    return torch.zeros(1, *space.fixed["input_shape"])


def arch_stats(model: nn.Module, example: Any, latency: bool = False) -> dict[str, float]:
    """Parameters and MACs of an architecture (and its latency in ms, 1 thread)."""
    out: dict[str, float] = {"params": count_params(model)[0],
                             "macs": count_macs(model, example)}
    if latency:
        out["latency_ms"] = 1000 * model_latency(model, example, repeats=10, warmup=2,
                                                 num_threads=1)
    return out


def violation(stats: dict[str, float], constraints: dict[str, float]) -> str | None:
    """A sentence naming the first broken limit, or None."""
    for k, limit in constraints.items():
        if stats.get(k) is not None and stats[k] > limit:
            return f"{k} {stats[k]:g} > {limit:g}"
    return None


# ------------------------------------------------------------------ one trial
def _train(job: _Job, model: nn.Module, trial: optuna.Trial | None, prune: bool) -> None:
    if job.teacher is not None:
        import modelzip as mz

        cfg = job.distillation or mz.Distillation()
        mz.distill(model, job.teacher, job.train_data, cfg, epochs=job.epochs, lr=job.lr)
        return
    last = math.ceil(job.epochs) - 1

    def step_loss(m: nn.Module, batch: Any) -> torch.Tensor:
        out, target = forward(m, batch)
        return task_loss(out, target)

    def on_epoch(i: int) -> None:
        if trial is None or not prune or i >= last:
            return
        value = float(job.evaluate(model))
        model.train()
        trial.report(value, i)
        if trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", i + 1)
            raise optuna.TrialPruned(f"pruned after epoch {i + 1}")

    fit(model, job.train_data, epochs=job.epochs, lr=job.lr, step_loss=step_loss,
        progress=False, on_epoch=on_epoch)


def _objective(job: _Job, space: SearchSpace, trial: optuna.Trial) -> Any:
    params = {k: trial.suggest_categorical(k, v) for k, v in space.params().items()}
    sample = space.normalise(params)
    torch.manual_seed(mixed_seed(job.seed, trial.number))
    model = build(space, sample)
    example = job.example_inputs if job.example_inputs is not None else example_inputs(space)
    need_latency = "latency_ms" in job.constraints or "latency_ms" in job.objectives
    stats = arch_stats(model, example, need_latency)
    trial.set_user_attr("sample", sample)
    trial.set_user_attr("worker", os.getpid())
    for k, v in stats.items():
        trial.set_user_attr(k, v)
    bad = violation(stats, job.constraints)
    if bad:
        trial.set_user_attr("violation", bad)
        raise optuna.TrialPruned(bad)
    t0 = time.perf_counter()
    if job.train_data is not None:
        _train(job, model, trial, prune=len(job.objectives) == 1)
    metric = float(job.evaluate(model))
    trial.set_user_attr("metric", metric)
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    if len(job.objectives) == 1:
        return metric
    return (metric, *(stats[o] for o in job.objectives[1:]))


# ------------------------------------------------------------------ the worker loop
def _load(job: _Job, worker: int, study: optuna.Study | None) -> optuna.Study:
    space = SearchSpace.from_dict(job.space)
    if study is None:
        study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage))
    n = len(study.get_trials(deepcopy=False))
    base = make_sampler(job.strategy, space, mixed_seed(job.seed, worker, n), job.options)
    example = job.example_inputs if job.example_inputs is not None else example_inputs(space)
    cache: dict[str, bool] = {}
    limits = {k: v for k, v in job.constraints.items() if k in ("params", "macs")}

    def ok(params: dict[str, Any]) -> bool:
        if not limits:
            return True
        s = space.normalise(params)
        key = repr(sorted(s.items()))
        if key not in cache:
            cache[key] = violation(arch_stats(build(space, s), example), limits) is None
        return cache[key]

    study.sampler = Guard(base, space, ok)
    study.pruner = _pruner(job.pruner)
    return study


def _work(job: _Job, worker: int, study: optuna.Study | None = None,
          bar: tqdm | None = None) -> None:
    """Run trials until the study holds ``job.trials`` finished trials (all processes)."""
    study = _load(job, worker, study)
    space = SearchSpace.from_dict(job.space)
    objective = functools.partial(_objective, job, space)

    def show(n: int) -> None:
        if bar is not None:
            bar.n = n
            bar.refresh()

    run_until_total(study, job.trials, objective, grace=HEARTBEAT["grace"], on_progress=show)


def _child(payload_path: str, worker: int) -> None:
    """Entry point of a spawned worker process. The job comes through a file written by
    the parent (not through ``Process`` arguments): a large dataset sent down the spawn pipe
    would block the parent until the child had started and read it."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with open(payload_path, "rb") as f:
        job = pickle.load(f)  # our own job object, written by _run_workers just before
    if job.threads:
        torch.set_num_threads(job.threads)
    _work(job, worker)


def _run_workers(job: _Job, workers: int, study: optuna.Study, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="modelzip-nas-") as tmp:
        path = os.path.join(tmp, "job.pickle")
        if workers > 1:
            try:
                payload = pickle.dumps(job)
            except Exception as exc:
                raise ConfigError(f"workers > 1 needs a picklable evaluate, train_data and "
                                  f"teacher (top-level functions, not lambdas): {exc}") from None
            with open(path, "wb") as f:
                f.write(payload)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_child, args=(path, w)) for w in range(1, workers)]
        for p in procs:
            p.start()
        try:
            with tqdm(total=job.trials, desc=f"search ({job.strategy})", disable=not progress,
                      unit="trial") as bar:
                _work(job, 0, study, bar)
        finally:
            for p in procs:
                p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise ModelzipError(f"{len(failed)} worker process(es) failed (exit codes {failed})")


# ------------------------------------------------------------------ results
def _row(t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {"number": t.number, "state": t.state.name.lower(), "sample": a.get("sample"),
            "metric": a.get("metric"), "params": a.get("params"), "macs": a.get("macs"),
            "latency_ms": a.get("latency_ms"), "seconds": a.get("seconds"),
            "violation": a.get("violation"), "pruned_at_epoch": a.get("pruned_at_epoch"),
            "worker": a.get("worker")}


def pareto_front(rows: list[dict[str, Any]], cost: str = "params") -> list[dict[str, Any]]:
    """The completed rows not dominated in (metric up, ``cost`` down), by cost."""
    done = [r for r in rows if r["state"] == "complete" and r.get(cost) is not None]
    dirs = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    front = [r for r in done if not any(
        dominates([o["metric"], o[cost]], [r["metric"], r[cost]], dirs) for o in done)]
    unique = {json_key(r["sample"]): r for r in sorted(front, key=lambda r: r["number"])}
    return sorted(unique.values(), key=lambda r: r[cost])


def json_key(sample: Any) -> str:
    import json

    return json.dumps(sample, sort_keys=True)


def _best(rows: list[dict[str, Any]], constraints: dict[str, float]) -> dict[str, Any]:
    ok = [r for r in rows if r["state"] == "complete" and r["metric"] is not None
          and violation(r, constraints) is None]
    if not ok:
        raise BudgetError("no trial produced an architecture within the constraints; "
                          "raise trials or loosen the limits")
    return max(ok, key=lambda r: (r["metric"], -r["number"]))


def _finish(job: _Job, space: SearchSpace, rows: list[dict[str, Any]],
            retrain_epochs: float, save: str | os.PathLike | None) -> tuple[Any, ...]:
    best = _best(rows, job.constraints)
    torch.manual_seed(job.seed)
    model = build(space, best["sample"])
    if job.train_data is not None and retrain_epochs > 0:
        _train(_replace(job, epochs=retrain_epochs), model, None, prune=False)
    metric = float(job.evaluate(model))
    metrics = {"metric": metric, "search_metric": best["metric"], "trial": best["number"],
               **{k: best[k] for k in LIMITS if best.get(k) is not None}}
    path = None
    if save is not None:
        from ..io.mzip import save as mz_save

        metrics["file_bytes"] = mz_save(model, save, info={"nas": best["sample"]})
        path = str(save)
    return model, metrics, best["sample"], path


def _replace(job: _Job, **changes: Any) -> _Job:
    import dataclasses

    return dataclasses.replace(job, **changes)


# ------------------------------------------------------------------ the public entry point
def search_architecture(space: Any, *, evaluate: Callable[[nn.Module], float], trials: int,
                         strategy: str = "tpe", storage: Any = None,
                         train_data: Iterable[Any] | None = None, epochs: float = 1.0,
                         lr: float = 3e-3, constraints: dict[str, float] | None = None,
                         objectives: Iterable[str] | str = ("metric",), study: str | None = None,
                         workers: int = 1, teacher: nn.Module | None = None,
                         distillation: Any = None, strategy_options: dict[str, Any] | None = None,
                         pruner: Any = "median", retrain_epochs: float | None = None,
                         save: str | os.PathLike | None = None, seed: int = 0,
                         example_inputs: Any = None, threads: int | None = None,
                         progress: bool = True) -> SearchResult:
    """Search ``space`` for the architecture that maximises ``evaluate(model)``.

    ``space``: a SearchSpace, a dict/YAML path, or a family name ("mlp", "cnn",
    "tiny_gpt"; facts such as input shape come from ``train_data``). Each trial trains the
    candidate for ``epochs`` on ``train_data`` (or distils from ``teacher``), unless
    ``train_data`` is None (then ``evaluate`` must train). ``constraints`` limits
    params / macs / latency_ms; ``objectives=("metric", "params")`` searches the Pareto
    front. Trials go to ``storage`` (an Optuna URL; None keeps them in memory) under
    ``study``, shared by ``workers`` processes. The winner is rebuilt, trained from scratch
    for ``retrain_epochs`` (default ``epochs``), evaluated and, with ``save``, written as .mzip.
    See docs/nas.md for every keyword.
    """
    t0 = time.perf_counter()
    with _quiet_optuna(), torch_threads(threads):
        sp, job = _make_job(space, dict(locals()))
        st = _open_study(job, sp)
        if strategy == "darts" and "darts" not in st.user_attrs:
            t1 = time.perf_counter()
            torch.manual_seed(seed)
            info = train_supernet(sp, train_data, epochs=job.options["epochs"], lr=lr,
                                  arch_lr=job.options["arch_lr"], progress=progress)
            st.set_user_attr("darts", {**info, "seconds": time.perf_counter() - t1})
        _run_workers(job, workers, st, progress)
        rows = [_row(t) for t in sorted(st.get_trials(deepcopy=False), key=lambda t: t.number)
                if not t.user_attrs.get("surplus")]
        rt = epochs if retrain_epochs is None else retrain_epochs
        model, metrics, sample, path = _finish(job, sp, rows, rt, save)
    metrics["trials"] = sum(r["state"] != "fail" for r in rows)
    cost = job.objectives[1] if len(job.objectives) > 1 else "params"
    return SearchResult(model=model, metrics=metrics, sample=sample, space=sp, history=rows,
                        pareto=pareto_front(rows, cost), study=job.study,
                        storage=storage if isinstance(storage, str) else None, path=path,
                        seconds=time.perf_counter() - t0)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _make_job(space: Any, kw: dict[str, Any]) -> tuple[SearchSpace, _Job]:
    """Validate the keywords of search_architecture; the space and the worker job."""
    data = kw["train_data"]
    sp = make_space(space, data) if data is not None else make_space(space)
    sp.require_fixed()
    if not callable(kw["evaluate"]):
        raise ConfigError("evaluate must be a callable model -> float")
    _check_int("trials", kw["trials"])
    workers = _check_int("workers", kw["workers"])
    opts = _strategy_options(kw["strategy"], kw["strategy_options"])
    if kw["teacher"] is not None:
        import modelzip as mz

        if not hasattr(mz, "distill"):
            raise ConfigError("teacher= needs mz.distill (distillation), which this build of "
                              "modelzip does not include")
    if data is None and (kw["teacher"] is not None or kw["strategy"] == "darts"):
        raise ConfigError("teacher= and strategy 'darts' need train_data")
    if workers > 1 and kw["storage"] is None:
        raise ConfigError("workers > 1 needs a shared storage, e.g. sqlite:///search.db")
    if data is not None:
        _check_train(kw["epochs"], kw["lr"])
    _pruner(kw["pruner"])
    job = _Job(space=sp.to_dict(), evaluate=kw["evaluate"], train_data=data,
               trials=kw["trials"], strategy=kw["strategy"], options=opts,
               epochs=kw["epochs"], lr=kw["lr"], constraints=_check_limits(kw["constraints"]),
               objectives=_check_objectives(kw["objectives"]), storage=kw["storage"],
               study=kw["study"] or f"nas-{sp.family}-{kw['strategy']}", seed=kw["seed"],
               pruner=kw["pruner"], teacher=kw["teacher"], distillation=kw["distillation"],
               example_inputs=kw["example_inputs"], threads=kw["threads"])
    return sp, job


def _open_study(job: _Job, sp: SearchSpace) -> optuna.Study:
    dirs = ["maximize"] + ["minimize"] * (len(job.objectives) - 1)
    st = create_or_load_study(open_storage(job.storage), job.study, directions=dirs)
    recorded = st.user_attrs.get("mz_space")
    if recorded is None:
        st.set_user_attr("mz_space", sp.to_dict())
        st.set_user_attr("mz_objectives", job.objectives)
    elif recorded != sp.to_dict() or st.user_attrs.get("mz_objectives") != job.objectives:
        raise ConfigError(f"study {job.study!r} was created with another search space or "
                          "objectives: use a new study name")
    return st


# ------------------------------------------------------------------ picklable evaluators
def _accuracy(data: Any, model: nn.Module) -> float:
    return accuracy(model, data)


def _neg_ppl(data: Any, max_batches: int | None, model: nn.Module) -> float:
    return -perplexity(model, data, max_batches=max_batches)


def accuracy_on(data: Any) -> Callable[[nn.Module], float]:
    """``evaluate`` = top-1 accuracy on ``data`` (picklable, for worker processes)."""
    return functools.partial(_accuracy, data)


def neg_perplexity_on(data: Any, max_batches: int | None = None
                      ) -> Callable[[nn.Module], float]:
    """``evaluate`` = minus the perplexity on ``data`` (higher is better; picklable)."""
    return functools.partial(_neg_ppl, data, max_batches)


def holdout(loader: Any, fraction: float = 0.1, seed: int = 0) -> tuple[Any, Any]:
    """Split a TensorDataset loader into (train, validation) loaders, keeping dataset facts,
    so the search never looks at the test set."""
    from torch.utils.data import DataLoader, TensorDataset

    ds = getattr(loader, "dataset", None)
    if not isinstance(ds, TensorDataset) or not 0 < fraction < 1:
        raise ConfigError("holdout() needs a DataLoader over a TensorDataset and 0<fraction<1")
    n = len(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(round(n * fraction)))
    parts = []
    for idx in (perm[cut:], perm[:cut]):
        part = TensorDataset(*(t[idx] for t in ds.tensors))
        part.meta = dict(getattr(ds, "meta", {}))
        parts.append(part)
    bs = loader.batch_size or 64
    return (DataLoader(parts[0], batch_size=bs, shuffle=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(parts[1], batch_size=max(bs, 256)))


__all__ = ["search_architecture", "SearchResult", "accuracy_on", "neg_perplexity_on",
           "holdout", "arch_stats", "example_inputs", "pareto_front", "open_storage"]
