"""``mz.search_architecture``: the public entry of architecture search, and its results.

Each trial (see :mod:`.evaluators`): the strategy's sampler proposes a sample (re-drawn
until it meets the parameter/MAC limits and is new), the model is built, measured (params,
MACs, latency if limited) and rejected before training if it breaks a limit (recorded as a
PRUNED trial with a ``violation`` attribute), trained briefly (or distilled from a teacher)
with Optuna's pruner watching the per-epoch metric, and evaluated. Trials live in an Optuna
storage shared by worker processes (see :mod:`.workers`); the knobs are a
:class:`SearchOptions`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from ..distributed.study import create_or_load_study
from ..errors import BudgetError, ConfigError
from ..io.mzip import save as save_mzip
from ..measure import threads as torch_threads
from .builder import build
from .evaluators import train_trial, violation
from .options import LIMITS, Job, SearchOptions, make_job
from .samplers import dominates
from .space import SearchSpace
from .space import space as make_space
from .supernet import train_supernet
from .workers import open_storage, run_workers


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


# ------------------------------------------------------------------ the public entry point
def search_architecture(space: Any, *, evaluate: Callable[[nn.Module], float], trials: int,
                        strategy: str = "tpe", storage: Any = None,
                        train_data: Iterable[Any] | None = None,
                        options: SearchOptions | None = None, **knobs: Any) -> SearchResult:
    """Search ``space`` for the architecture that maximises ``evaluate(model)``.

    ``space``: a SearchSpace, a dict/YAML path, or a family name ("mlp", "cnn",
    "tiny_gpt"; facts such as input shape come from ``train_data``). Each trial trains the
    candidate on ``train_data`` (or distils it from a teacher), unless ``train_data`` is
    None (then ``evaluate`` must train). Trials go to ``storage`` (an Optuna URL; None keeps
    them in memory). The winner is rebuilt, trained from scratch, evaluated and optionally
    saved. Every other knob is a field of :class:`SearchOptions`, given as ``options=`` or
    as keywords (``epochs=2, constraints={"params": 20_000}``; keywords override
    ``options``). See docs/nas.md for every knob.
    """
    t0 = time.perf_counter()
    opts = (options or SearchOptions()).replace(**knobs)
    with _quiet_optuna(), torch_threads(opts.threads):
        sp = make_space(space, train_data) if train_data is not None else make_space(space)
        sp.require_fixed()
        job = make_job(sp, evaluate=evaluate, train_data=train_data, trials=trials,
                       strategy=strategy, storage=storage, options=opts)
        st = _open_study(job, sp)
        if strategy == "darts" and "darts" not in st.user_attrs:
            _train_darts(job, sp, st)
        run_workers(job, st)
        rows = [_row(t) for t in sorted(st.get_trials(deepcopy=False), key=lambda t: t.number)
                if not t.user_attrs.get("surplus")]
        model, metrics, sample, path = _finish(job, sp, rows)
    metrics["trials"] = sum(r["state"] != "fail" for r in rows)
    objectives = job.options.objectives
    cost = objectives[1] if len(objectives) > 1 else "params"
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


def _train_darts(job: Job, sp: SearchSpace, st: optuna.Study) -> None:
    """Train the DARTS supernet once per study; its summary goes to the study's attrs."""
    t1 = time.perf_counter()
    torch.manual_seed(job.options.seed)
    info = train_supernet(sp, job.train_data, epochs=job.strategy_options["epochs"],
                          lr=job.options.lr, arch_lr=job.strategy_options["arch_lr"],
                          progress=job.options.progress)
    st.set_user_attr("darts", {**info, "seconds": time.perf_counter() - t1})


def _open_study(job: Job, sp: SearchSpace) -> optuna.Study:
    objectives = job.options.objectives
    dirs = ["maximize"] + ["minimize"] * (len(objectives) - 1)
    st = create_or_load_study(open_storage(job.storage), job.study, directions=dirs)
    recorded = st.user_attrs.get("mz_space")
    if recorded is None:
        st.set_user_attr("mz_space", sp.to_dict())
        st.set_user_attr("mz_objectives", objectives)
    elif recorded != sp.to_dict() or st.user_attrs.get("mz_objectives") != objectives:
        raise ConfigError(f"study {job.study!r} was created with another search space or "
                          "objectives: use a new study name")
    return st


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
    """A canonical text key of a sample (to tell equal architectures apart)."""
    return json.dumps(sample, sort_keys=True)


def _best(rows: list[dict[str, Any]], constraints: dict[str, float]) -> dict[str, Any]:
    ok = [r for r in rows if r["state"] == "complete" and r["metric"] is not None
          and violation(r, constraints) is None]
    if not ok:
        raise BudgetError("no trial produced an architecture within the constraints; "
                          "raise trials or loosen the limits")
    return max(ok, key=lambda r: (r["metric"], -r["number"]))


def _finish(job: Job, space: SearchSpace, rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Rebuild the best trial's architecture, retrain it from scratch, evaluate, save."""
    opts = job.options
    best = _best(rows, opts.constraints)
    torch.manual_seed(opts.seed)
    model = build(space, best["sample"])
    epochs = opts.epochs if opts.retrain_epochs is None else opts.retrain_epochs
    if job.train_data is not None and epochs > 0:
        train_trial(job.retrain(epochs), model, None, prune=False)
    metric = float(job.evaluate(model))
    metrics = {"metric": metric, "search_metric": best["metric"], "trial": best["number"],
               **{k: best[k] for k in LIMITS if best.get(k) is not None}}
    path = None
    if opts.save is not None:
        metrics["file_bytes"] = save_mzip(model, opts.save, info={"nas": best["sample"]})
        path = str(opts.save)
    return model, metrics, best["sample"], path


__all__ = ["search_architecture", "SearchResult", "SearchOptions", "pareto_front"]
