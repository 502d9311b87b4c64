"""Weight clipping: ``mz.clip(model, mz.Clip(threshold=T, value=t))``.

``method="fixed"`` does exactly what the seed asks: every weight whose magnitude exceeds
``T`` is set to ``t`` (``value=None`` saturates instead: the weight becomes sign(w) T).
The practical modes pick T per layer and saturate: ``percentile`` (the p-th percentile
of |w|) and ``mse`` (the T minimising the squared error of ``bits``-bit symmetric
quantization of the clipped tensor - the same search the quantizers use).

Clipping changes float values in place; on its own it does not make the file smaller.
It is a preparation for quantization (fewer outliers -> finer steps) or, with ``t = 0``,
a removal of outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_choice, check_int, check_range, register
from ..errors import ConfigError
from ..knobs import Knob, ladder_from
from ..ops.quant import mse_threshold
from ..select import weight_layers


def clip_tensor(w: torch.Tensor, threshold: float, value: float | None) -> torch.Tensor:
    """``w`` with |w| > threshold set to ``value`` (or saturated to ±threshold)."""
    if value is None:
        return w.clamp(-threshold, threshold)
    return torch.where(w.abs() > threshold, torch.full_like(w, value), w)


def layer_threshold(w: torch.Tensor, cfg: Clip) -> float:
    """The threshold T of one layer's weight under ``cfg``."""
    if cfg.method == "fixed":
        return float(cfg.threshold)
    if cfg.method == "percentile":
        a = w.detach().abs().reshape(-1).float()
        return float(torch.quantile(a[: 1 << 24], cfg.percentile / 100))
    return mse_threshold(w.detach().float(), cfg.bits)


def _apply_clip(model: nn.Module, cfg: Clip, **_: Any) -> None:
    for _, module in weight_layers(model, cfg):
        w = module.weight
        if not isinstance(w, nn.Parameter):
            raise ConfigError("Clip applies to float weights: clip before quantizing")
        t = layer_threshold(w, cfg)
        with torch.no_grad():
            w.copy_(clip_tensor(w, t, cfg.value if cfg.method == "fixed" else None))


@register(_apply_clip)
@dataclass
class Clip(Config):
    """Clip weights: |w| > threshold -> value (fixed), or saturate at a per-layer
    percentile / MSE-optimal threshold."""

    threshold: float | None = None
    value: float | None = None
    method: str = "fixed"
    percentile: float = 99.9
    bits: int = 8

    kind = "clip"
    default_targets = ("Linear", "Conv1d", "Conv2d", "Embedding")

    def validate(self) -> None:
        check_choice(self, "method", ("fixed", "percentile", "mse"))
        if self.method == "fixed":
            if self.threshold is None:
                raise ConfigError("Clip(method='fixed') needs threshold=T")
            check_range(self, "threshold", 0.0, float("inf"))
        if self.value is not None:
            check_range(self, "value", float("-inf"), float("inf"))
        check_range(self, "percentile", 0.0, 100.0, lo_open=True)
        check_int(self, "bits", 2, 16)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """percentile: towards 100 is gentler; mse: more bits clip less; fixed: as given."""
        if self.method == "percentile":
            return Knob("percentile", 100.0, min(90.0, self.percentile), step=0.005)
        if self.method == "mse":
            return Knob("bits", 16, 2, ladder_from(self.bits, (16, 8, 6, 4, 3, 2)))
        return None
