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
                    progress: bool = True, field: str | None = None,
                    recover: Callable[..., nn.Module] | None = None) -> list[dict[str, float]]:
    """Prune to ``cfg``'s strength (its knob's field, or ``field``) in ``steps`` cubic
    steps, fine-tuning after each.

    ``recover(model, data, epochs=, lr=, progress=)`` defaults to ``mz.finetune``
    (``mz.distill`` with a bound teacher works too). Returns one record per step.
    """
    from ..train import finetune
    from ..verbs import apply

    recover = recover or finetune
    knob = cfg.knob()
    field = field or (knob.field if knob is not None else None)
    if field is None:
        raise ConfigError(f"{type(cfg).__name__} has no strength to ramp up")
    history = []
    for target in cubic_schedule(getattr(cfg, field), steps, initial):
        apply(model, cfg.replace(**{field: target}))
        recover(model, train_data, epochs=epochs_per_step, lr=lr, progress=progress)
        rec = {field: target}
        if evaluate is not None:
            rec["metric"] = float(evaluate(model))
        history.append(rec)
    return history
