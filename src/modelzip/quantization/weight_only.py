"""Weight-only quantization: integer codes + scales replace the float weight.

The layer keeps its type; its ``weight`` Parameter becomes buffers ``weight_codes``
(int8/uint8) and ``weight_scale`` (+ ``weight_zero`` when asymmetric), dequantized before
each forward (see :mod:`modelzip.state`). The file stores the codes packed to ``bits``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_choice, check_int, register
from ..errors import ConfigError, UnsupportedModelError
from ..ops.quant import QSpec, dequantize, qparams, quantize
from ..select import weight_layers
from ..state import install_reparam, register_reparam, set_bits


@register_reparam("affine")
def _affine_weight(module: nn.Module, name: str, meta: dict[str, Any]) -> torch.Tensor:
    codes = getattr(module, f"{name}_codes")
    scale = getattr(module, f"{name}_scale")
    zero = getattr(module, f"{name}_zero", None)
    if zero is None:
        zero = torch.zeros_like(scale)
    return dequantize(codes, scale, zero, meta["group_size"])


def effective_group(cols: int, group_size: int | None) -> int | None:
    """The group size usable for ``cols`` inputs (None = per channel)."""
    if group_size is None or group_size == -1:
        return group_size
    if group_size >= cols:
        return None
    if cols % group_size:
        warnings.warn(f"{cols} inputs not divisible by group {group_size}: per-channel used",
                      stacklevel=3)
        return None
    return group_size


def install_codes(module: nn.Module, name: str, codes: torch.Tensor, scale: torch.Tensor,
                  zero: torch.Tensor | None, spec: QSpec) -> None:
    """Put integer ``codes`` with their scales in place of float tensor ``name``."""
    dtype = torch.int8 if spec.symmetric else torch.uint8
    if spec.bits > 8:
        raise ConfigError("weight codes wider than 8 bits are not supported")
    tensors = {"codes": codes.to(dtype), "scale": scale.float()}
    if not spec.symmetric:
        tensors["zero"] = zero.to(torch.int16)
    meta = {"kind": "affine", "bits": spec.bits, "group_size": spec.group_size,
            "symmetric": spec.symmetric}
    install_reparam(module, name, meta, tensors)
    set_bits(module, f"{name}_codes", spec.bits, spec.symmetric)


def _rtn(model: nn.Module, cfg: WeightOnly, **_: Any) -> None:
    for fqn, module in weight_layers(model, cfg):
        if getattr(module, "_mz_reparam", {}).get("weight"):
            raise UnsupportedModelError(f"layer '{fqn}' is already quantized or clustered")
        w = module.weight.detach()
        cols = w[0].numel() if w.dim() > 1 else w.numel()
        spec = QSpec(cfg.bits, cfg.symmetric, effective_group(cols, cfg.group_size))
        scale, zero = qparams(w, spec)
        install_codes(module, "weight", quantize(w, scale, zero, spec), scale, zero, spec)


_METHODS = {"rtn": _rtn}


def _apply_weight_only(model: nn.Module, cfg: WeightOnly, **ctx: Any) -> None:
    fn = _METHODS.get(cfg.method)
    if fn is None:
        raise UnsupportedModelError(f"WeightOnly method '{cfg.method}' is not available")
    fn(model, cfg, **ctx)


def register_method(name: str, fn: Any) -> None:
    """Add a weight-only algorithm (e.g. GPTQ, AWQ) under ``method=name``."""
    _METHODS[name] = fn


@register(_apply_weight_only)
@dataclass
class WeightOnly(Config):
    """Weight-only quantization to ``bits`` (1-8) per group of ``group_size`` inputs.

    ``group_size=None`` means one scale per output channel, ``-1`` one per tensor.
    """

    bits: int = 4
    group_size: int | None = 128
    method: str = "rtn"
    symmetric: bool = True

    kind = "quantize"
    default_targets = ("Linear", "Conv1d", "Conv2d", "Embedding")

    def validate(self) -> None:
        check_int(self, "bits", 1, 8)
        check_int(self, "group_size", -1, None, optional=True)
        if self.group_size == 0:
            raise ConfigError("WeightOnly.group_size must be positive, -1 or None")
        check_choice(self, "method", ("rtn", "gptq", "awq"))
        if not isinstance(self.symmetric, bool):
            raise ConfigError("WeightOnly.symmetric must be true or false")
        if self.symmetric and self.bits == 1:
            raise ConfigError("1-bit symmetric has no levels; use bits>=2 or a binary config")
