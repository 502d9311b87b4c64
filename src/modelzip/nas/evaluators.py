"""One trial: measure a sampled architecture, reject it if it breaks a limit, train it
briefly (or distil it from a teacher) under Optuna's pruner, and score it; plus the
picklable ``evaluate`` functions and the hold-out split that trials are scored on."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..batches import forward
from ..distill import Distillation, distill
from ..errors import ConfigError
from ..measure import count_macs, count_params, model_latency
from ..train import accuracy, fit, perplexity, task_loss
from .builder import build
from .options import Job
from .samplers import mixed_seed
from .space import SearchSpace


class Surplus(Exception):
    """Raised inside a trial that started after the budget was already taken."""


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


def job_example(job: Job, space: SearchSpace) -> Any:
    """The input used to measure MACs and latency: the caller's, or one of the space."""
    given = job.options.example_inputs
    return given if given is not None else example_inputs(space)


# ------------------------------------------------------------------ one trial
def live_trials(trials: Iterable[FrozenTrial], before: int | None = None
                ) -> list[FrozenTrial]:
    """The trials that count against the budget (not FAIL), optionally numbered below."""
    return [t for t in trials if t.state != TrialState.FAIL
            and (before is None or t.number < before)]


def train_trial(job: Job, model: nn.Module, trial: optuna.Trial | None, prune: bool) -> None:
    """Train ``model`` for the job's epochs (distil when there is a teacher); with a trial
    and ``prune``, report the metric after each epoch but the last to Optuna's pruner."""
    opts = job.options
    if opts.teacher is not None:
        cfg = opts.distillation or Distillation()
        distill(model, opts.teacher, job.train_data, cfg, epochs=opts.epochs, lr=opts.lr)
        return
    last = math.ceil(opts.epochs) - 1

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

    fit(model, job.train_data, epochs=opts.epochs, lr=opts.lr, step_loss=step_loss,
        progress=False, on_epoch=on_epoch)


def objective(job: Job, space: SearchSpace, trial: optuna.Trial) -> Any:
    """The Optuna objective: the metric (and the cost objectives) of one sampled model."""
    opts = job.options
    params = {k: trial.suggest_categorical(k, v) for k, v in space.params().items()}
    sample = space.normalise(params)
    torch.manual_seed(mixed_seed(opts.seed, trial.number))
    model = build(space, sample)
    need_latency = "latency_ms" in opts.constraints or "latency_ms" in opts.objectives
    stats = arch_stats(model, job_example(job, space), need_latency)
    trial.set_user_attr("sample", sample)
    trial.set_user_attr("worker", os.getpid())
    for k, v in stats.items():
        trial.set_user_attr(k, v)
    bad = violation(stats, opts.constraints)
    if bad:
        trial.set_user_attr("violation", bad)
        raise optuna.TrialPruned(bad)
    t0 = time.perf_counter()
    if job.train_data is not None:
        train_trial(job, model, trial, prune=len(opts.objectives) == 1)
    metric = float(job.evaluate(model))
    trial.set_user_attr("metric", metric)
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    if len(opts.objectives) == 1:
        return metric
    return (metric, *(stats[o] for o in opts.objectives[1:]))


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
