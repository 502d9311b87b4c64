"""Gradual pruning: Zhu & Gupta's cubic sparsity ramp and the prune / fine-tune loop.

s_t = s_f + (s_i - s_f) * (1 - t / n)^3 for steps t = 1..n: prunes fast while many
redundant weights remain and slowly near the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError


def cubic_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Sparsity after each of ``steps`` pruning steps (the last equals ``final``)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def iterative_prune(model: nn.Module, cfg: Config, train_data: Iterable[Any], *,
                    steps: int = 4, epochs_per_step: float = 1.0, lr: float = 1e-3,
                    initial: float = 0.0, evaluate: Callable[[nn.Module], float] | None = None,
                    progress: bool = True, field: str = "sparsity",
                    recover: Callable[..., nn.Module] | None = None) -> list[dict[str, float]]:
    """Prune to ``cfg.<field>`` in ``steps`` cubic steps, fine-tuning after each.

    ``recover(model, data, epochs=, lr=, progress=)`` defaults to ``mz.finetune``
    (``mz.distill`` with a bound teacher works too). Returns one record per step.
    """
    from ..train import finetune
    from ..verbs import apply

    recover = recover or finetune
    history = []
    for target in cubic_schedule(getattr(cfg, field), steps, initial):
        apply(model, cfg.replace(**{field: target}))
        recover(model, train_data, epochs=epochs_per_step, lr=lr, progress=progress)
        rec = {field: target}
        if evaluate is not None:
            rec["metric"] = float(evaluate(model))
        history.append(rec)
    return history


def prune_until(model: nn.Module, cfg: Config, train_data: Iterable[Any], *,
                evaluate: Callable[[nn.Module], float], levels: Iterable[float],
                max_drop: float = 0.01, relative: bool = False, epochs_per_step: float = 1.0,
                lr: float = 1e-3, field: str = "sparsity", progress: bool = True,
                recover: Callable[..., nn.Module] | None = None) -> list[dict[str, Any]]:
    """The seeds' loop: evaluate, prune a little more, fine-tune, evaluate, repeat.

    ``cfg.<field>`` goes through the increasing ``levels``; the loop stops at the first
    level whose metric falls more than ``max_drop`` (absolute, or a fraction of the
    baseline when ``relative``) below the unpruned model's and restores the last level
    that met the requirement. Returns one record per level tried (``accepted`` flag).
    """
    import copy

    from ..train import finetune
    from ..verbs import apply

    recover = recover or finetune
    base = float(evaluate(model))
    floor = base * (1 - max_drop) if relative else base - max_drop
    history: list[dict[str, Any]] = [{field: 0.0, "metric": base, "accepted": True}]
    good = copy.deepcopy(model)
    for level in levels:
        apply(model, cfg.replace(**{field: level}))
        recover(model, train_data, epochs=epochs_per_step, lr=lr, progress=progress)
        metric = float(evaluate(model))
        ok = metric >= floor
        history.append({field: level, "metric": metric, "accepted": ok})
        if not ok:
            model.__dict__.update(good.__dict__)  # back to the last level that passed
            break
        good = copy.deepcopy(model)
    return history
