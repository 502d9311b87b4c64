"""PackedLinear: a weight-only quantized Linear that keeps its codes packed in memory
(two 4-bit codes per byte, four 2-bit, eight 1-bit) and dequantizes them group by group
at every forward, so that resident weight memory is the packed size, not fp32."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from ..ops.pack import pack_rows, unpack_rows
from ..ops.quant import QSpec, dequantize
from ..state import register_module


@register_module
class PackedLinear(nn.Module):
    """y = x W^T + b with W = (codes - offset - zero) * scale [/ inscale], unpacked on
    the fly. Codes are unsigned (signed codes are offset by 2^(bits-1))."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int,
                 group_size: int | None, symmetric: bool = True, inscale: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.spec = QSpec(bits, symmetric, group_size)
        groups = 1 if group_size in (None, -1) else -(-in_features // group_size)
        rows = 1 if group_size == -1 else out_features
        nbytes = -(-in_features * bits // 8)
        self.register_buffer("codes", torch.zeros(out_features, nbytes, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(rows, groups))
        if not symmetric:
            self.register_buffer("weight_zero", torch.zeros(rows, groups, dtype=torch.int16))
        if inscale:
            self.register_buffer("weight_inscale", torch.ones(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def offset(self) -> int:
        return (1 << (self.spec.bits - 1)) if self.spec.signed else 0

    def dequantized(self) -> torch.Tensor:
        """The float weight, rebuilt from the packed codes (not cached)."""
        u = unpack_rows(self.codes, self.spec.bits, self.in_features).to(torch.int16)
        zero = getattr(self, "weight_zero", None)
        zero = torch.zeros_like(self.weight_scale) if zero is None else zero
        w = dequantize(u - self.offset, self.weight_scale, zero, self.spec.group_size,
                       binary=self.spec.binary)
        inscale = getattr(self, "weight_inscale", None)
        return w / inscale if inscale is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized().to(x.dtype), self.bias)

    def mz_spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "bits": self.spec.bits,
                "group_size": self.spec.group_size, "symmetric": self.spec.symmetric,
                "inscale": hasattr(self, "weight_inscale")}

    @classmethod
    def mz_from_spec(cls, spec: dict[str, Any]) -> PackedLinear:
        try:
            ok = spec["bits"] in (1, 2, 4, 8) and spec["in_features"] > 0
            if ok:
                return cls(int(spec["in_features"]), int(spec["out_features"]),
                           bool(spec["bias"]), int(spec["bits"]), spec["group_size"],
                           bool(spec["symmetric"]), bool(spec["inscale"]))
        except (KeyError, TypeError, ValueError, RuntimeError):
            pass
        raise FormatError("bad PackedLinear spec")

    def mz_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.dequantized()}

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.spec.bits}, "
                f"group={self.spec.group_size}")


def from_reparam(module: nn.Linear) -> PackedLinear:
    """A PackedLinear holding the same codes as a weight-only quantized nn.Linear."""
    meta = module._mz_reparam["weight"]
    new = PackedLinear(module.in_features, module.out_features, module.bias is not None,
                       meta["bits"], meta["group_size"], meta["symmetric"],
                       hasattr(module, "weight_inscale"))
    u = module.weight_codes.to(torch.int16) + new.offset
    new.codes.copy_(pack_rows(u.to(torch.uint8), meta["bits"]))
    new.weight_scale.copy_(module.weight_scale)
    for key in ("weight_zero", "weight_inscale"):
        if hasattr(new, key):
            getattr(new, key).copy_(getattr(module, key))
    if module.bias is not None:
        new.bias.data.copy_(module.bias.detach())
    return new


def pack_layers(model: nn.Module, fqns: list[str]) -> None:
    """Swap the weight-only quantized nn.Linear layers among ``fqns`` for PackedLinear."""
    for fqn in fqns:
        m = model.get_submodule(fqn)
        if (type(m) is nn.Linear and fqn and
                getattr(m, "_mz_reparam", {}).get("weight", {}).get("kind") == "affine"):
            model.set_submodule(fqn, from_reparam(m))
