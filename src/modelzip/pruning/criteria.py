"""Importance of prunable channels (attention-head channels, MLP neurons): one small
function per criterion, looked up by name.

A criterion gets, for ``C`` channels: ``producers`` (each ``[C, in]``: the weight rows
that produce the channel), ``consumer`` (``[C, out]``: the columns of the layer that
reads it, or None) and ``act`` (``[C]``: the L2 norm of the channel's activation over
the calibration tokens, or None), and returns a score per channel (higher = keep).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError

Criterion = Callable[[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None],
                     torch.Tensor]
_CRITERIA: dict[str, Criterion] = {}
CALIBRATED: set[str] = set()  # criteria that need calibration activations


def register_criterion(name: str, calibrated: bool = False) -> Callable[[Criterion],
                                                                        Criterion]:
    def deco(fn: Criterion) -> Criterion:
        _CRITERIA[name] = fn
        if calibrated:
            CALIBRATED.add(name)
        return fn

    return deco


def criterion(name: str) -> Criterion:
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ConfigError(f"unknown criterion {name!r}; choose one of {names()}") from None


def names() -> tuple[str, ...]:
    return tuple(_CRITERIA)


def _parts(producers: list[torch.Tensor], consumer: torch.Tensor | None) -> list[torch.Tensor]:
    return [p.float() for p in producers] + ([consumer.float()] if consumer is not None else [])


@register_criterion("l1")
def l1(producers: list[torch.Tensor], consumer: torch.Tensor | None,
       act: torch.Tensor | None) -> torch.Tensor:
    """Magnitude: sum of |w| over the channel's producing rows and consuming column."""
    return sum(p.abs().sum(1) for p in _parts(producers, consumer))


@register_criterion("l2")
def l2(producers: list[torch.Tensor], consumer: torch.Tensor | None,
       act: torch.Tensor | None) -> torch.Tensor:
    """Magnitude: L2 norm of the channel's producing rows and consuming column."""
    return sum(p.pow(2).sum(1) for p in _parts(producers, consumer)).sqrt()


@register_criterion("activation", calibrated=True)
def activation(producers: list[torch.Tensor], consumer: torch.Tensor | None,
               act: torch.Tensor | None) -> torch.Tensor:
    """Calibrated (Wanda applied to whole channels, as in FLAP / Wanda-sp): ||X_j||_2 x
    ||W_out[:, j]||_2, the size of what channel j adds to the consumer's output.
    Channels without a measured activation (key/value channels) score 0 here; their
    head's query channels carry the score."""
    if act is None or consumer is None:
        rows = producers[0].shape[0] if producers else consumer.shape[0]
        return torch.zeros(rows)
    return act.float() * consumer.float().norm(dim=1)
