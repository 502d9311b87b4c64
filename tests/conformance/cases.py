"""The conformance cases: one per method config. Each area adds its own ``cases_*.py``
module exposing ``CASES: list[Case]``; :func:`all_cases` collects them."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import modelzip as mz


def mlp() -> nn.Module:
    """LeNet-300-100 shaped for 8x8 inputs (layers '1', '3', '5')."""
    torch.manual_seed(0)
    return mz.zoo.lenet300(in_features=64)


def mlp_inputs() -> torch.Tensor:
    return torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def mlp_calib() -> list[Any]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))
            for _ in range(4)]


@dataclass
class Case:
    """One method under the conformance suite.

    ``make_cfg(**overrides)`` builds the config; ``verb`` is the mz verb applied;
    ``invalid`` lists kwargs that must raise ConfigError. The model has named layers
    ``first`` (left alone by targets=[middle]) and ``middle``.
    """

    name: str
    make_cfg: Callable[..., mz.Config]
    verb: Callable[..., nn.Module]
    invalid: list[dict[str, Any]] = field(default_factory=list)
    model: Callable[[], nn.Module] = mlp
    inputs: Callable[[], Any] = mlp_inputs
    calib: Callable[[], Any] | None = None
    first: str = "1"
    middle: str = "3"
    atol: float = 0.0  # save/load must be exact unless a method documents otherwise

    def apply(self, model: nn.Module, cfg: mz.Config) -> nn.Module:
        kwargs = {"calib_data": self.calib()} if self.calib else {}
        return self.verb(model, cfg, **kwargs)


def all_cases() -> list[Case]:
    from . import __path__ as pkg_path

    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(pkg_path), key=lambda i: i.name):
        if info.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"{__package__}.{info.name}").CASES)
    return cases
