"""The accuracy requirement: one object computes the threshold everywhere.

``max_drop`` is absolute (0.01 = one point of a 0-1 metric) unless ``relative``, where
it is a fraction of ``|baseline|`` (so a negative metric such as -perplexity gets a
threshold below its baseline, not above). Extra checks (e.g. trust constraints) can be
attached; an attempt passes when the metric meets the threshold and every check passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import BudgetError, ConfigError

Evaluate = Callable[[nn.Module], float]
Check = Callable[[nn.Module], list[str]]  # model -> descriptions of what failed


def measure(evaluate: Evaluate, model: nn.Module, what: str = "evaluate(model)") -> float:
    """Call ``evaluate`` and insist on one finite number (higher is better)."""
    value = evaluate(model)
    if hasattr(value, "numel") and hasattr(value, "item"):
        if value.numel() != 1:
            raise BudgetError(f"{what} returned a tensor of {value.numel()} values; "
                              "it must return one number (higher is better)")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BudgetError(f"{what} returned {value!r} ({type(value).__name__}); "
                          "it must return one number (higher is better)")
    if not math.isfinite(value):
        raise BudgetError(f"{what} returned {value}; it must return a finite number")
    return float(value)


def check_max_drop(max_drop: Any) -> float:
    if (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
            or not math.isfinite(max_drop) or max_drop < 0):
        raise ConfigError(f"max_drop must be a finite non-negative number, got {max_drop!r}")
    return float(max_drop)


@dataclass
class Requirement:
    """Metric at least ``threshold`` (from ``baseline`` and ``max_drop``), plus ``checks``."""

    baseline: float
    max_drop: float
    relative: bool = False
    checks: list[Check] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.max_drop = check_max_drop(self.max_drop)
        if not math.isfinite(self.baseline):
            raise BudgetError(f"the baseline metric is {self.baseline}; it must be finite")

    @classmethod
    def of(cls, evaluate: Evaluate, model: nn.Module, max_drop: Any, relative: bool = False,
           checks: list[Check] | None = None) -> Requirement:
        """Measure the baseline of ``model`` and build the requirement around it."""
        check_max_drop(max_drop)
        if not callable(evaluate):
            raise ConfigError("evaluate must be a callable model -> float (higher is better)")
        return cls(measure(evaluate, model, "evaluate(baseline model)"), max_drop, relative,
                   list(checks or []))

    @property
    def threshold(self) -> float:
        scale = abs(self.baseline) if self.relative else 1.0
        return self.baseline - self.max_drop * scale

    def met_by(self, metric: float) -> bool:
        return metric >= self.threshold

    def failures(self, model: nn.Module, metric: float) -> list[str]:
        """Why ``model`` (with ``metric``) fails the requirement; empty when it passes."""
        out = [] if self.met_by(metric) else [
            f"metric {metric:.6g} < threshold {self.threshold:.6g}"]
        for check in self.checks:
            out.extend(check(model))
        return out


class NoRequirement(Requirement):
    """Accept everything (pipelines run as written, e.g. ``deep_compression``)."""

    def __init__(self) -> None:
        super().__init__(0.0, 0.0)

    @property
    def threshold(self) -> float:
        return -math.inf

    def failures(self, model: nn.Module, metric: float) -> list[str]:
        return []
