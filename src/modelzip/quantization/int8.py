"""W8A8: int8 weights and int8 activations, executed as int8 x int8 -> int32 matmuls.

:class:`Int8Linear` holds int8 weight codes (stored transposed, ``[in, out]``, the layout
``torch._int_mm`` reads fastest) with one scale per output channel. At run time the input
is quantized per token (``dynamic``: scale = max|x_row| / 127) or with a fixed scale and
zero point from calibration (``static``), multiplied in integers, and rescaled once:
``y = (acc - z * colsum(Wq)) * s_x * s_w + b``. SmoothQuant (Xiao et al. 2023) divides
the input channels by ``s_j = max|X_j|^a / max|W_j|^(1-a)`` and multiplies the weight
columns by it, moving outliers from activations into weights (kept in the layer as a
per-channel input multiplier rather than folded into the previous LayerNorm).

:class:`Int8Conv2d` runs the same integer matmul on im2col patches (``F.unfold``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from ..state import register_module

QMAX = 127


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 [M,K] x int8 [K,N] -> int32 [M,N]; falls back to an int32 matmul where
    ``torch._int_mm`` rejects the shapes or device."""
    try:
        return torch._int_mm(a, b)
    except RuntimeError:
        return a.to(torch.int32) @ b.to(torch.int32)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 codes ``[out, -1]`` and scales ``[out]``."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    scale = (w2.abs().amax(1) / QMAX).clamp(min=1e-12)
    return torch.round(w2 / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8), scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (per-token) symmetric int8 codes and scales ``[M, 1]``.

    |x / s| <= 127 by construction, so no clamp; the |x| buffer is reused for x / s
    (fewer large allocations: they dominate on CPU at these sizes)."""
    x = x.detach()  # rounding has no gradient; out= below needs plain tensors
    buf = x.abs()
    s = buf.amax(1, keepdim=True).clamp_(min=1e-8).div_(QMAX)
    return torch.div(x, s, out=buf).round_().to(torch.int8), s


def rescale(acc: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor,
            bias: torch.Tensor | None) -> torch.Tensor:
    """float ``acc * row_scale * col_scale (+ bias)``, written over the int32 ``acc``
    buffer (same element size, element-for-element) to save an allocation."""
    y = torch.mul(acc, row_scale, out=acc.view(torch.float32))
    if bias is None:
        return y.mul_(col_scale)
    if bias.requires_grad and torch.is_grad_enabled():  # out= does not take autograd
        return y.mul_(col_scale) + bias
    return torch.addcmul(bias, y, col_scale, out=y)


class _Int8Base(nn.Module):
    """Shared state: transposed int8 codes, scales, static activation qparams, smoothing."""

    def _init_state(self, k: int, n: int, bias: bool, static: bool, smooth: bool) -> None:
        self.register_buffer("weight_codes", torch.zeros(k, n, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
        self.static = static
        if static:
            self.register_buffer("act_scale", torch.ones(1))
            self.register_buffer("act_zero", torch.zeros(1, dtype=torch.int32))
            self.register_buffer("colsum", torch.zeros(n, dtype=torch.int32))
        if smooth:
            self.register_buffer("input_scale", torch.ones(k))

    def set_weight(self, codes: torch.Tensor, scale: torch.Tensor) -> None:
        """Install int8 ``codes`` ``[out, k]`` and their per-channel ``scale``."""
        self.weight_codes.copy_(codes.t())
        self.weight_scale.copy_(scale)
        if self.static:
            self.colsum.copy_(self.weight_codes.to(torch.int32).sum(0))

    def set_activation(self, scale: float, zero: int) -> None:
        self.act_scale.fill_(scale)
        self.act_zero.fill_(zero)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Integer matmul of float rows ``x2`` [M, k] with rescaling: float [M, n]."""
        inscale = getattr(self, "input_scale", None)
        if inscale is not None:
            x2 = x2 * inscale
        if self.static:
            s, z = self.act_scale, self.act_zero
            q = torch.div(x2, s).round_().add_(z).clamp_(-128, 127).to(torch.int8)
            acc = int_mm(q, self.weight_codes).sub_(z * self.colsum)
            return rescale(acc, s, self.weight_scale, self.bias)
        q, s = quantize_rows(x2.contiguous())
        return rescale(int_mm(q, self.weight_codes), s, self.weight_scale, self.bias)

    def dequantized(self) -> torch.Tensor:
        """The float weight ``[out, k]`` (SmoothQuant's input scale folded back)."""
        w = self.weight_codes.t().float() * self.weight_scale[:, None]
        inscale = getattr(self, "input_scale", None)
        return w * inscale if inscale is not None else w


def _check_spec(spec: dict[str, Any], keys: tuple[str, ...]) -> None:
    if not isinstance(spec, dict) or any(k not in spec for k in keys):
        raise FormatError(f"bad int8 module spec: needs {keys}")
    for k in keys:
        v = spec[k]
        if k in ("bias", "static", "smooth"):
            ok = isinstance(v, bool)
        elif k in ("kernel_size", "stride", "padding", "dilation"):
            least = 0 if k == "padding" else 1
            ok = isinstance(v, list) and len(v) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= least for i in v)
        else:
            ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        if not ok:
            raise FormatError(f"bad int8 module spec field {k}={v!r}")


@register_module
class Int8Linear(_Int8Base):
    """A Linear layer executed as int8 x int8 -> int32 (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 static: bool = False, smooth: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_state(in_features, out_features, bias, static, smooth)

    @classmethod
    def from_float(cls, lin: nn.Linear, static: bool = False,
                   smooth: torch.Tensor | None = None) -> Int8Linear:
        """Quantize ``lin``; ``smooth`` (SmoothQuant scales s) multiplies weight columns."""
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, static,
                  smooth is not None)
        w = lin.weight.detach().float()
        if smooth is not None:
            w = w * smooth
            new.input_scale.copy_(1.0 / smooth)
        new.set_weight(*quantize_weight(w))
        if lin.bias is not None:
            new.bias.data.copy_(lin.bias.detach())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x.reshape(-1, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features)

    def mz_spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "static": self.static,
                "smooth": hasattr(self, "input_scale")}

    @classmethod
    def mz_from_spec(cls, spec: dict[str, Any]) -> Int8Linear:
        _check_spec(spec, ("in_features", "out_features", "bias", "static", "smooth"))
        return cls(spec["in_features"], spec["out_features"], spec["bias"], spec["static"],
                   spec["smooth"])

    def mz_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.dequantized()}

    def extra_repr(self) -> str:
        mode = "static" if self.static else "dynamic"
        return f"in={self.in_features}, out={self.out_features}, activations={mode}"


@register_module
class Int8Conv2d(_Int8Base):
    """A Conv2d (groups=1) as an integer matmul on im2col patches."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: list[int],
                 stride: list[int], padding: list[int], dilation: list[int],
                 bias: bool = True, static: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        k = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._init_state(k, out_channels, bias, static, False)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, static: bool = False) -> Int8Conv2d:
        new = cls(conv.in_channels, conv.out_channels, list(conv.kernel_size),
                  list(conv.stride), list(conv.padding), list(conv.dilation),
                  conv.bias is not None, static)
        new.set_weight(*quantize_weight(conv.weight))
        if conv.bias is not None:
            new.bias.data.copy_(conv.bias.detach())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1
              ) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1
              ) // self.stride[1] + 1
        y = self.matmul(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
        return y.reshape(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow)

    def mz_spec(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation),
                "bias": self.bias is not None, "static": self.static}

    @classmethod
    def mz_from_spec(cls, spec: dict[str, Any]) -> Int8Conv2d:
        keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                "dilation", "bias", "static")
        _check_spec(spec, keys)
        return cls(*(spec[k] for k in keys))

    def mz_macs(self, inp: Any, out: torch.Tensor) -> int:
        return out.numel() * self.weight_codes.shape[0]

    def mz_weights(self) -> dict[str, torch.Tensor]:
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        return {"weight": self.dequantized().reshape(shape)}
