"""The knobs of an architecture search (:class:`SearchOptions`), their validation, and the
:class:`Job` a worker process receives (everything one worker needs, picklable)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

from ..errors import ConfigError
from ..train import check_schedule
from .samplers import strategy_options
from .space import SearchSpace

LIMITS = ("params", "macs", "latency_ms")


@dataclass
class SearchOptions:
    """How to search, besides the space, ``evaluate``, ``trials``, ``strategy`` and
    ``storage`` (see :func:`modelzip.search_architecture` and docs/nas.md).

    ``epochs``/``lr``: training of each trial (distilled from ``teacher`` with
    ``distillation`` when a teacher is given). ``constraints``: limits on params, macs,
    latency_ms. ``objectives``: "metric" first, then costs for a Pareto search. ``study``:
    the study name in the storage. ``workers``: processes sharing the study.
    ``strategy_options``: the strategy's own settings. ``pruner``: "median", "hyperband",
    "none" or an Optuna pruner. ``retrain_epochs``: training of the winner (default
    ``epochs``); ``save``: write it as .mzip. ``example_inputs``: the input used for MACs and
    latency. ``threads``: torch threads per worker.
    """

    epochs: float = 1.0
    lr: float = 3e-3
    constraints: dict[str, float] | None = None
    objectives: Iterable[str] | str = ("metric",)
    study: str | None = None
    workers: int = 1
    teacher: nn.Module | None = None
    distillation: Any = None
    strategy_options: dict[str, Any] | None = None
    pruner: Any = "median"
    retrain_epochs: float | None = None
    save: str | os.PathLike | None = None
    seed: int = 0
    example_inputs: Any = None
    threads: int | None = None
    progress: bool = True

    def replace(self, **changes: Any) -> SearchOptions:
        """A copy with ``changes``; an unknown name is a ConfigError naming the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"search_architecture: unknown option(s) {unknown}; valid: "
                              f"{sorted(names)}")
        return dataclasses.replace(self, **changes)


@dataclass
class Job:
    """Everything a worker process needs (pickled for spawned workers). ``options`` is the
    validated copy: constraints a dict of floats, objectives a list."""

    space: dict[str, Any]
    evaluate: Callable[[nn.Module], float]
    train_data: Any
    trials: int
    strategy: str
    strategy_options: dict[str, Any]  # the strategy's settings with defaults filled in
    storage: Any
    study: str
    options: SearchOptions

    def retrain(self, epochs: float) -> Job:
        """This job with ``epochs`` of training (the winner's retraining)."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options,
                                                                     epochs=epochs))


def check_limits(constraints: Any) -> dict[str, float]:
    """``constraints`` as {limit: float}; ConfigError on unknown limits or bad values."""
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


def check_objectives(objectives: Any) -> list[str]:
    """``objectives`` as a list starting with "metric", then known costs."""
    objs = [objectives] if isinstance(objectives, str) else list(objectives or ["metric"])
    if not objs or objs[0] != "metric" or len(set(objs)) != len(objs):
        raise ConfigError(f"objectives must start with 'metric' and not repeat, got {objs}")
    for o in objs[1:]:
        if o not in LIMITS:
            raise ConfigError(f"objectives: unknown objective {o!r}; valid: metric, {LIMITS}")
    return objs


def check_count(name: str, value: Any) -> int:
    """``value`` if it is a positive int (not a bool), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def make_pruner(spec: Any) -> optuna.pruners.BasePruner:
    """An Optuna pruner from a name ("median", "hyperband", "none") or a pruner."""
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    table = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
             "hyperband": optuna.pruners.HyperbandPruner,
             "none": optuna.pruners.NopPruner}
    if spec not in table:
        raise ConfigError(f"pruner={spec!r}; choose one of {sorted(table)} or pass an "
                          "optuna pruner")
    return table[spec]()


def make_job(space: SearchSpace, *, evaluate: Any, train_data: Any, trials: Any,
             strategy: str, storage: Any, options: SearchOptions) -> Job:
    """Validate the settings of a search and bundle them for the workers."""
    if not callable(evaluate):
        raise ConfigError("evaluate must be a callable model -> float")
    check_count("trials", trials)
    workers = check_count("workers", options.workers)
    settings = strategy_options(strategy, options.strategy_options)
    if train_data is None and (options.teacher is not None or strategy == "darts"):
        raise ConfigError("teacher= and strategy 'darts' need train_data")
    if workers > 1 and storage is None:
        raise ConfigError("workers > 1 needs a shared storage, e.g. sqlite:///search.db")
    if train_data is not None:
        check_schedule(options.epochs, options.lr)
    make_pruner(options.pruner)
    checked = dataclasses.replace(options, constraints=check_limits(options.constraints),
                                  objectives=check_objectives(options.objectives))
    return Job(space=space.to_dict(), evaluate=evaluate, train_data=train_data,
               trials=trials, strategy=strategy, strategy_options=settings, storage=storage,
               study=options.study or f"nas-{space.family}-{strategy}", options=checked)
