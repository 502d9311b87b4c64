"""Swap modelzip's integer layers for stand-ins that export as ONNX integer operators.

:func:`swap_for_export` walks a copy of the model and replaces every layer it can export
with integer weights (Int8 dynamic / static, WeightOnly and packed Linear, quantized
Embedding, per-channel WeightOnly Conv); every other compressed layer exports dense, and
the returned plan says which and why. Each stand-in is self-checked: the weight ORT will
compute from the exported codes must equal the one modelzip computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..ops.pack import unpack_rows
from ..quantization.int8 import Int8Conv2d, Int8Linear
from ..quantization.packed import PackedLinear
from ..state import get_mask, materialize, uninstall_reparam
from . import onnx_codes as oc
from . import onnx_ops as ops


@dataclass
class Plan:
    """What each layer became: ``integer`` {fqn: form}, ``dense`` {fqn: reason}."""

    integer: dict[str, str] = field(default_factory=dict)
    dense: dict[str, str] = field(default_factory=dict)
    fp16: int = 0  # dense float tensors stored as fp16


def _opt(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is not None:
        module.register_buffer(name, value.detach().clone().contiguous())
    else:
        setattr(module, name, None)


class OnnxInt8Linear(nn.Module):
    """``mode`` "token" / "tensor"; ``shared``: other layers read the same input and
    reuse its activation quantization through ``cache`` (one dict per export)."""

    def __init__(self, m: Int8Linear, mode: str, shared: bool = False,
                 cache: dict | None = None):
        super().__init__()
        self.spec = (mode, shared, cache)
        self.register_buffer("codes", m.weight_codes.detach().clone().contiguous())
        self.register_buffer("scale", m.weight_scale.detach().clone())
        _opt(self, "bias", None if m.bias is None else m.bias.detach())
        _opt(self, "inscale", getattr(m, "input_scale", None))
        if m.static:
            self.register_buffer("act_scale", m.act_scale.detach().reshape(()).clone())
            self.register_buffer("act_zero", (m.act_zero.reshape(()) + 128).to(torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "act_scale"):
            return ops.Int8StaticLinear.apply(x, self.act_scale, self.act_zero, self.codes,
                                              self.scale, self.bias, self.inscale)
        return ops.Int8DynamicLinear.apply(x, self.spec, self.codes, self.scale, self.bias,
                                           self.inscale)


class OnnxInt8Conv(nn.Module):
    def __init__(self, m: Int8Conv2d):
        super().__init__()
        shape = (m.out_channels, m.in_channels, *m.kernel_size)
        self.conv = (tuple(m.stride), tuple(m.padding), tuple(m.dilation))
        self.register_buffer("codes", m.weight_codes.t().reshape(shape).contiguous())
        self.register_buffer("scale", m.weight_scale.detach().clone())
        _opt(self, "bias", None if m.bias is None else m.bias.detach())
        static = m.static
        _opt(self, "act_scale", m.act_scale.reshape(()) if static else None)
        _opt(self, "act_zero", (m.act_zero.reshape(()) + 128).to(torch.uint8)
             if static else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.Int8Conv.apply(x, self.conv, self.act_scale, self.act_zero, self.codes,
                                  self.scale, self.bias)


class OnnxNBits(nn.Module):
    def __init__(self, b: oc.Blocked, k: int, level: int, bias: torch.Tensor | None,
                 inscale: torch.Tensor | None, ref_w: torch.Tensor):
        super().__init__()
        packed, scales, zeros = oc.matmul_nbits_tensors(b)
        self.attrs = (k, b.u.shape[0], b.bits, b.block, level)
        self.register_buffer("codes", packed)
        self.register_buffer("scales", scales)
        _opt(self, "zeros", zeros)
        _opt(self, "bias", bias)
        _opt(self, "inscale", None if inscale is None else 1.0 / inscale)
        self.ref_w = ref_w  # trace-time value only: not a buffer, not exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.NBitsLinear.apply(x, self.attrs, self.codes, self.scales, self.zeros,
                                     self.bias, self.inscale, self.ref_w)


class OnnxGather(nn.Module):
    def __init__(self, b: oc.Blocked, ref_w: torch.Tensor):
        super().__init__()
        data, scales, zeros = oc.gather_tensors(b)
        self.attrs = (b.bits, b.block)
        self.register_buffer("codes", data)
        self.register_buffer("scales", scales)
        _opt(self, "zeros", zeros)
        self.ref_w = ref_w

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return ops.GatherBlock.apply(idx, self.attrs, self.codes, self.scales, self.zeros,
                                     self.ref_w)


class OnnxDQConv(nn.Module):
    """A WeightOnly Conv with per-channel codes: DequantizeLinear(int8 codes) -> Conv."""

    def __init__(self, m: nn.Module, codes: torch.Tensor, scale: torch.Tensor,
                 zero: torch.Tensor | None):
        super().__init__()
        self.conv = m
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scales", scale.contiguous())
        _opt(self, "zeros", zero)
        self.ref_w = m.weight.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = ops.DequantWeight.apply(self.codes, self.scales, self.zeros, 0, self.ref_w)
        return self.conv._conv_forward(x, w, self.conv.bias)


def codes_of(m: nn.Module) -> oc.Codes | None:
    """The weight-only codes of ``m`` (affine re-parametrised weight or PackedLinear)."""
    if isinstance(m, PackedLinear):
        s = m.spec
        u = unpack_rows(m.codes, s.bits, m.in_features).to(torch.int32) - m.offset
        return oc.Codes(u, m.weight_scale.detach(), getattr(m, "weight_zero", None),
                        s.group_size, s.bits, s.symmetric, s.binary)
    meta = getattr(m, "_mz_reparam", {}).get("weight")
    if not meta or meta.get("kind") != "affine":
        return None
    codes = m.weight_codes.reshape(m.weight_codes.shape[0], -1)
    return oc.Codes(codes, m.weight_scale.detach(), getattr(m, "weight_zero", None),
                    meta["group_size"], meta["bits"], meta["symmetric"],
                    bool(meta.get("binary")))


def _weight_of(m: nn.Module) -> torch.Tensor:
    if isinstance(m, PackedLinear):
        return m.dequantized()
    return materialize(m, "weight").detach()


def _inscale(m: nn.Module) -> torch.Tensor | None:
    return getattr(m, "weight_inscale", None)


def _check(b: oc.Blocked, m: nn.Module) -> bool:
    """The weight ORT computes equals modelzip's (masks and AWQ scales included)."""
    w = oc.dequantized(b)
    s = _inscale(m)
    w = w / s if s is not None else w
    ref = _weight_of(m).reshape(w.shape)
    return bool(torch.allclose(w, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max() + 1)))


_DENSE_REASONS = {
    "codebook": "clustered weights (no ONNX Runtime kernel): dense",
    "lsq": "QAT fake-quant weight (run mz.convert first): dense",
}
MASK_REASON = "sparse weights (no ONNX Runtime sparse kernel): dense, zeros kept"


def _bits_note(c: oc.Codes) -> str:
    cb = oc.container_bits(c.bits)
    return f"{c.bits}-bit" + ("" if cb == c.bits else f" in {cb}-bit containers")


def _linear(m: nn.Module, c: oc.Codes, level: int) -> tuple[nn.Module | None, str]:
    k = m.in_features
    block = oc.choose_block(k, c.group)
    if block is None:
        return None, f"group size {c.group} has no power-of-two block >= 16: dense"
    b = oc.blocked(c, block)
    if not _check(b, m):
        return None, "codes do not reproduce the weight: dense"
    bias = None if m.bias is None else m.bias.detach()
    new = OnnxNBits(b, k, level, bias, _inscale(m), _weight_of(m))
    return new, f"MatMulNBits {_bits_note(c)}, block {block}, accuracy_level {level}"


def _embedding(m: nn.Embedding, c: oc.Codes) -> tuple[nn.Module | None, str]:
    if m.max_norm is not None:
        return None, "Embedding with max_norm: dense"
    block = oc.choose_block(m.embedding_dim, c.group, need_divides=True)
    if block is None:
        return None, "embedding width has no power-of-two block >= 16: dense"
    b = oc.blocked(c, block)
    if not _check(b, m):
        return None, "codes do not reproduce the weight: dense"
    return OnnxGather(b, _weight_of(m)), f"GatherBlockQuantized {_bits_note(c)}, block {block}"


def _conv(m: nn.Module, c: oc.Codes) -> tuple[nn.Module | None, str]:
    per_channel = c.group in (None, -1) or c.group >= c.codes.shape[1]
    if not per_channel or c.binary or _inscale(m) is not None:
        return None, "grouped / binary conv codes (no integer ONNX conv form): dense"
    scale = c.scale.reshape(-1).expand(c.codes.shape[0]).float()
    codes = m.weight_codes.detach()
    zero = None if c.zero is None else c.zero.reshape(-1).expand(codes.shape[0]).to(
        torch.uint8)
    codes = codes.to(torch.int8 if c.symmetric else torch.uint8)
    ref = _weight_of(m)
    shape = (-1,) + (1,) * (codes.dim() - 1)
    w = (codes.float() - (0 if zero is None else zero.float().reshape(shape)))
    if not torch.allclose(w * scale.reshape(shape), ref, rtol=1e-5, atol=1e-7):
        return None, "codes do not reproduce the weight: dense"
    return OnnxDQConv(m, codes, scale, zero), f"DequantizeLinear {c.bits}-bit per channel"


@dataclass
class Int8Forms:
    """Activation granularity per Int8 dynamic layer ({fqn: "token" | "tensor"}, others
    ``default``), the layers that share their input with another, and the per-export
    cache of shared activation quantizations."""

    default: str = "token"
    forms: dict[str, str] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)
    cache: dict = field(default_factory=dict)


def _int8(m: nn.Module, fqn: str, f: Int8Forms) -> tuple[nn.Module, str]:
    if isinstance(m, Int8Conv2d):
        how = "QDQ static" if m.static else "ConvInteger (dynamic, per-tensor activations)"
        return OnnxInt8Conv(m), f"Int8 conv {how}"
    if m.static:
        return OnnxInt8Linear(m, "static"), ("Int8 QDQ static (uint8 activations, int8 "
                                             "weights)")
    mode, shared = f.forms.get(fqn, f.default), fqn in f.shared
    if mode == "token":
        how = "per-token activations, MatMulIntegerToFloat u8 x s8"
    else:
        how = "per-tensor activations, " + ("DynamicQuantizeLinear + MatMulIntegerToFloat"
                                            if shared else "DynamicQuantizeMatMul")
    how += ", input quantized once for its group" if shared else ""
    return OnnxInt8Linear(m, mode, shared, f.cache), f"Int8 dynamic ({how})"


def _standin(m: nn.Module, fqn: str, level: int, f: Int8Forms
             ) -> tuple[nn.Module | None, str | None]:
    """(stand-in or None, what it is or why dense) for one module; (None, None): plain."""
    if isinstance(m, (Int8Linear, Int8Conv2d)):
        return _int8(m, fqn, f)
    c = codes_of(m)
    reparam = getattr(m, "_mz_reparam", {}).get("weight")
    if c is None:
        if reparam:
            return None, _DENSE_REASONS.get(reparam["kind"], f"{reparam['kind']}: dense")
        return None, MASK_REASON if get_mask(m, "weight") is not None else None
    if isinstance(m, (nn.Linear, PackedLinear)):
        return _linear(m, c, level)
    if isinstance(m, nn.Embedding):
        return _embedding(m, c)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _conv(m, c)
    return None, f"{type(m).__name__} with integer codes: dense"


def swap_for_export(model: nn.Module, *, accuracy_level: int,
                    int8: Int8Forms | None = None) -> Plan:
    """Replace exportable integer layers of ``model`` (a copy!) in place; the plan says
    what each compressed layer became."""
    plan = Plan()
    int8 = Int8Forms() if int8 is None else int8
    for fqn, m in list(model.named_modules()):
        new, note = _standin(m, fqn, accuracy_level, int8)
        if note is None:
            continue
        if new is None:
            plan.dense[fqn or "<root>"] = note
            continue
        if not fqn:
            plan.dense["<root>"] = "the root module itself is compressed: wrap it: dense"
            continue
        model.set_submodule(fqn, new)
        plan.integer[fqn] = note
    return plan


def _float_module(m: nn.Module) -> nn.Module:
    if isinstance(m, Int8Conv2d):
        new: nn.Module = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                   m.padding, m.dilation, bias=m.bias is not None)
    else:
        new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    w = m.mz_weights()["weight"]
    new.weight.data.copy_(w.reshape(new.weight.shape))
    if m.bias is not None:
        new.bias.data.copy_(m.bias.detach())
    return new


def densify(model: nn.Module) -> nn.Module:
    """``model`` (a copy!) with Int8 and packed layers as plain float layers, in place:
    the dense fp32 baseline an export is compared with."""
    for fqn, m in list(model.named_modules()):
        if fqn and isinstance(m, (Int8Linear, Int8Conv2d, PackedLinear)):
            model.set_submodule(fqn, _float_module(m))
        for name in list(getattr(m, "_mz_reparam", {})):
            uninstall_reparam(m, name)  # a plain fp32 Parameter, not traced dequantize ops
    return model
