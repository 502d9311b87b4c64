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
from ..blockwise import Method, run
from ..calib import world
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
        st = stats[fqn] = RangeStats(_channels(m))
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


def _channels(m: nn.Module) -> int:
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


class _Ranges(RangeStats):
    """RangeStats of a layer's input rows, reducible across torch.distributed ranks."""

    def __init__(self, m: nn.Module):
        super().__init__(_channels(m))
        self.conv = isinstance(m, nn.Conv2d)

    def add(self, x: torch.Tensor) -> None:  # type: ignore[override]
        super().add(x.transpose(1, -1).reshape(-1, x.shape[1]) if self.conv
                    else x.reshape(-1, x.shape[-1]))

    def all_reduce(self, device: Any) -> None:
        """min/max reduced; the row sample is rank 0's (all ranks then choose alike)."""
        if world()[1] == 1:
            return
        dist = torch.distributed
        self.lo, self.hi = self.lo.to(device), self.hi.to(device)
        dist.all_reduce(self.lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(self.hi, op=dist.ReduceOp.MAX)
        n = torch.tensor([self.sample.shape[0]], device=device)
        dist.broadcast(n, 0)
        sample = self.sample.to(device)
        if sample.shape[0] != int(n):
            sample = torch.zeros(int(n), self.lo.numel(), device=device)
        dist.broadcast(sample, 0)
        self.sample = sample


def _calibrated_int8(model: nn.Module, cfg: Int8, layers: list[tuple[str, nn.Module]],
                     static: bool, ctx: dict[str, Any]) -> None:
    """Observe each layer's inputs block by block, then swap in its int8 module."""
    def solve(fqn: str, m: nn.Module, st: RangeStats) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        smooth = None
        if cfg.smoothquant is not None and isinstance(m, nn.Linear):
            smooth = out["smooth"] = smooth_scales(st.abs_max, m.weight, cfg.smoothquant)
        if static:
            cs = None if smooth is None else 1.0 / smooth
            lo, hi = choose_range(st, cfg.observer, pct=cfg.percentile, channel_scale=cs)
            out["act"] = torch.tensor(affine_qparams(lo, hi), dtype=torch.float64)
        return out

    def install(fqn: str, m: nn.Module, res: dict[str, torch.Tensor]) -> None:
        if isinstance(m, nn.Linear):
            new = Int8Linear.from_float(m, static, res.get("smooth"))
        else:
            new = Int8Conv2d.from_float(m, static)
        if static:
            scale, zero = res["act"].tolist()
            new.set_activation(scale, int(zero))
        model.set_submodule(fqn, new)

    data = ctx.get("calib_data")
    if data is None:
        raise DataError("Int8 static / smoothquant needs calib_data (batches)")
    run(model, take(data, cfg.max_batches), dict(layers), Method(_Ranges, solve, install),
        device=ctx.get("device", "cpu"), checkpoint_dir=ctx.get("checkpoint_dir"),
        config=cfg.to_dict())


def _embeddings_int8(model: nn.Module, cfg: Int8) -> None:
    """Embedding tables: int8 codes per row (a lookup has no activations to quantize)."""
    for _, m in weight_layers(model, cfg):
        if type(m) is nn.Embedding and not getattr(m, "_mz_reparam", {}).get("weight"):
            w = m.weight.detach()
            spec = QSpec(8, True, None)
            scale, zero = qparams(w, spec)
            install_codes(m, "weight", quantize(w, scale, zero, spec), scale, zero, spec)


def _apply_int8(model: nn.Module, cfg: Int8, **ctx: Any) -> None:
    _embeddings_int8(model, cfg)
    layers = [(f, m) for f, m in weight_layers(model, cfg) if _supported(f, m)]
    if any(f == "" for f, _ in layers):
        raise UnsupportedModelError("Int8 cannot replace the root module; wrap it first")
    static = cfg.activations == "static"
    if static or cfg.smoothquant is not None:
        _calibrated_int8(model, cfg, layers, static, ctx)
        return
    for fqn, m in layers:
        new = Int8Linear.from_float(m) if isinstance(m, nn.Linear) else Int8Conv2d.from_float(m)
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
