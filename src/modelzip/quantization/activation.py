"""``Int8``: W8A8 quantization of Linear and Conv2d layers into integer-executed modules.

``activations="dynamic"`` quantizes each token at run time (no calibration needed);
``"static"`` fixes one scale and zero point per layer input from calibration data with
an observer (minmax, percentile, mse, entropy). ``smoothquant=alpha`` migrates activation
outliers into the weights first (needs calibration data). Layers in ``ignore`` (for
example ``["re:.*lm_head"]``) stay in floating point.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batches import forward, take
from ..config import Config, check_choice, check_int, check_range, register
from ..errors import DataError, UnsupportedModelError
from ..knobs import Knob
from ..ops.observers import OBSERVERS, RangeStats, affine_qparams, choose_range, smooth_scales
from ..ops.quant import QSpec, qparams, quantize
from ..select import weight_layers
from .int8 import Int8Conv2d, Int8Linear
from .weight_only import install_codes


def _supported(fqn: str, m: nn.Module) -> bool:
    if type(m) is nn.Linear:
        return True
    if type(m) is nn.Conv2d:
        ok = m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
        if not ok:
            warnings.warn(f"Int8: conv '{fqn}' (groups/padding mode) stays float",
                          stacklevel=4)
        return ok
    return False


def _rows(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, nn.Conv2d):
        return x.transpose(1, -1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def observe(model: nn.Module, layers: list[tuple[str, nn.Module]], data: Any,
            max_batches: int | None) -> dict[str, RangeStats]:
    """One pass of ``data`` through ``model`` recording each layer's input ranges."""
    stats: dict[str, RangeStats] = {}
    handles = []
    for fqn, m in layers:
        ch = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        st = stats[fqn] = RangeStats(ch)
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, st=st: st.add(_rows(mod, args[0]))))
    try:
        with torch.no_grad():
            n = sum(1 for batch in take(data, max_batches) if forward(model, batch) or True)
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        raise DataError("Int8 calibration data yielded no batch")
    return stats


def _embeddings_int8(model: nn.Module, cfg: Int8) -> None:
    """Embedding tables: int8 codes per row (a lookup has no activations to quantize)."""
    for _, m in weight_layers(model, cfg):
        if type(m) is nn.Embedding and not getattr(m, "_mz_reparam", {}).get("weight"):
            w = m.weight.detach()
            spec = QSpec(8, True, None)
            scale, zero = qparams(w, spec)
            install_codes(m, "weight", quantize(w, scale, zero, spec), scale, zero, spec)


def _apply_int8(model: nn.Module, cfg: Int8, calib_data: Any = None, **_: Any) -> None:
    _embeddings_int8(model, cfg)
    layers = [(f, m) for f, m in weight_layers(model, cfg) if _supported(f, m)]
    if any(f == "" for f, _ in layers):
        raise UnsupportedModelError("Int8 cannot replace the root module; wrap it first")
    static = cfg.activations == "static"
    stats: dict[str, RangeStats] = {}
    if static or cfg.smoothquant is not None:
        if calib_data is None:
            raise DataError("Int8 static / smoothquant needs calib_data (batches)")
        stats = observe(model, layers, calib_data, cfg.max_batches)
    for fqn, m in layers:
        smooth = None
        if cfg.smoothquant is not None and isinstance(m, nn.Linear):
            smooth = smooth_scales(stats[fqn].abs_max, m.weight, cfg.smoothquant)
        if isinstance(m, nn.Linear):
            new = Int8Linear.from_float(m, static, smooth)
        else:
            new = Int8Conv2d.from_float(m, static)
        if static:
            cs = None if smooth is None else 1.0 / smooth
            lo, hi = choose_range(stats[fqn], cfg.observer, pct=cfg.percentile,
                                  channel_scale=cs)
            new.set_activation(*affine_qparams(lo, hi))
        model.set_submodule(fqn, new)


@register(_apply_int8)
@dataclass
class Int8(Config):
    """W8A8: int8 weights (per output channel) and int8 activations, run as int8 matmuls.

    ``activations``: "dynamic" (per-token scales at run time) or "static" (calibrated).
    ``observer`` (static): minmax | percentile | mse | entropy; ``percentile`` for the
    percentile observer. ``smoothquant``: None or alpha in [0, 1] (0.5 is typical).
    """

    activations: str = "dynamic"
    observer: str = "minmax"
    percentile: float = 99.99
    smoothquant: float | None = None
    max_batches: int | None = 32

    kind = "quantize"
    default_targets = ("Linear", "Conv2d", "Embedding")

    def validate(self) -> None:
        check_choice(self, "activations", ("dynamic", "static"))
        check_choice(self, "observer", OBSERVERS)
        check_range(self, "percentile", 50.0, 100.0, hi_open=False)
        if self.smoothquant is not None:
            check_range(self, "smoothquant", 0.0, 1.0)
        check_int(self, "max_batches", 1, optional=True)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """None: W8A8 has one strength; a recipe that fails with it skips it."""
        return None
