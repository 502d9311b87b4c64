"""Per-layer sensitivity and the per-layer settings derived from it (mixed precision).

The sensitivity of a layer is the metric drop when that layer alone is compressed with
the given config. Layers that hurt least get harsher settings on the config's own knob,
at the same overall budget (continuous knobs weighted by layer size; ladder knobs such
as bits moved one rung).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..knobs import Knob
from ..progress import bar
from ..select import weight_layers
from ..verbs import apply


def sensitivity(model: nn.Module, cfg: Config, evaluate: Callable[[nn.Module], float], *,
                calib_data: Iterable[Any] | None = None, progress: bool = False
                ) -> dict[str, float]:
    """Metric drop per selected layer when only that layer is compressed with ``cfg``."""
    base = float(evaluate(model))
    out: dict[str, float] = {}
    layers = weight_layers(model, cfg)
    if not layers:
        raise ConfigError(f"{type(cfg).__name__} selects no layer of this model")
    for fqn, _ in bar(layers, desc="sensitivity", progress=progress):
        trial = copy.deepcopy(model)
        apply(trial, cfg.replace(targets=[f"re:{re.escape(fqn)}"], ignore=[]),
              calib_data=calib_data)
        out[fqn] = base - float(evaluate(trial))
    return out


def allocate_sparsity(sens: dict[str, float], sizes: dict[str, int], target: float,
                      max_sparsity: float = 0.98) -> dict[str, float]:
    """Per-layer sparsities averaging ``target`` (size-weighted): robust layers prune more.

    Each layer gets ``target * w_i`` with ``w_i`` falling with sensitivity rank, rescaled
    so that the weighted mean is exactly ``target`` (before clipping to ``max_sparsity``).
    """
    names = sorted(sens, key=lambda n: sens[n])  # least sensitive first
    n = len(names)
    raw = {name: 1.5 - i / max(n - 1, 1) for i, name in enumerate(names)}  # 1.5 .. 0.5
    total = sum(sizes[k] for k in names)
    mean = sum(raw[k] * sizes[k] for k in names) / total
    out = {k: min(max_sparsity, target * raw[k] / mean) for k in names}
    spill = target * total - sum(out[k] * sizes[k] for k in names)
    for k in names:  # give what clipping removed to the least sensitive layers with room
        room = (max_sparsity - out[k]) * sizes[k]
        take = min(room, max(spill, 0.0))
        out[k] += take / sizes[k]
        spill -= take
    return {k: round(v, 4) for k, v in out.items()}


def allocate_bits(sens: dict[str, float], bits: int, spread: int = 1,
                  lo: int = 2, hi: int = 8) -> dict[str, int]:
    """Per-layer bit widths: the most sensitive third gets ``bits+spread``, the least
    sensitive third ``bits-spread`` (the average stays close to ``bits``)."""
    names = sorted(sens, key=lambda n: sens[n])
    n = len(names)
    out = {}
    for i, name in enumerate(names):
        third = 3 * i // max(n, 1)
        b = bits - spread if third == 0 and n >= 3 else bits + spread if third == 2 else bits
        out[name] = max(lo, min(hi, b))
    return out


def allocate(knob: Knob, value: Any, sens: dict[str, float], sizes: dict[str, int]
             ) -> dict[str, Any]:
    """Per-layer settings of ``knob`` around ``value``: a continuous knob keeps the
    size-weighted mean (robust layers go harsher), a ladder moves one rung each way."""
    if knob.discrete:
        names = sorted(sens, key=lambda n: sens[n])  # least sensitive first
        n = len(names)
        out = {}
        for i, name in enumerate(names):
            third = 3 * i // max(n, 1)
            shift = 1 if third == 0 and n >= 3 else -1 if third == 2 else 0
            out[name] = knob.shifted(value, shift)
        return out
    lo, hi = knob.gentlest, knob.harshest
    sign = 1.0 if hi >= lo else -1.0  # mirror a knob whose harsh end is the low one
    alloc = allocate_sparsity(sens, sizes, sign * (value - lo), sign * (hi - lo))
    return {k: round(lo + sign * v, 4) for k, v in alloc.items()}


def per_layer_configs(model: nn.Module, cfg: Config, evaluate: Callable[[nn.Module], float],
                      *, calib_data: Iterable[Any] | None = None) -> list[Config]:
    """Expand ``cfg`` into one config per layer with sensitivity-allocated strength."""
    knob = cfg.knob()
    if knob is None:
        raise ConfigError(f"{type(cfg).__name__} has no per-layer strength to allocate")
    sens = sensitivity(model, cfg, evaluate, calib_data=calib_data)
    sizes = {fqn: m.weight.numel() for fqn, m in weight_layers(model, cfg)}
    alloc = allocate(knob, getattr(cfg, knob.field), sens, sizes)
    return [cfg.at(value).replace(targets=[f"re:{re.escape(fqn)}"], ignore=[])
            for fqn, value in alloc.items()]
