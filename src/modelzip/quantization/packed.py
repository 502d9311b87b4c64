"""Packed weight-only layers: integer codes stay packed in memory (two 4-bit codes per
byte, four 2-bit, eight 1-bit; 3-bit codes use 4-bit slots, 5-7 bit codes one byte) and
are dequantized layer by layer at every forward into a per-thread scratch buffer that all
layers share, so resident weight memory is the packed size, not fp32.

This is the default representation of a weight-only quantized Linear or Embedding
(``mz.WeightOnly(packed=True)``). :func:`unpack_model` turns packed layers back into
plain layers with an fp32 weight cache (fastest, about 1.25x the fp32 model's memory at 4
bits); :func:`pack_model` does the reverse, e.g. for a model loaded from an older file.

The state dict is the same as the unpacked layer's (``weight_codes`` at their true width,
``weight_scale`` ...), so files do not depend on the in-memory layout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from ..ops.dequant import blockable, pack_blocked, scaled_codes, scratch, unpack_blocked
from ..ops.pack import pack_rows, unpack_rows
from ..ops.quant import QSpec, dequantize
from ..state import register_module

CHUNK = 1 << 22  # elements of weight dequantized at once (16 MiB in fp32)


def slot_bits(bits: int) -> int:
    """The in-memory width of a ``bits``-wide code (1, 2, 4 or 8)."""
    return next(b for b in (1, 2, 4, 8) if b >= bits)


def _unsigned_codes(codes: torch.Tensor, offset: int) -> torch.Tensor:
    """``codes + offset`` as uint8, where any code outside ``[-offset, 2**bits - offset)``
    lands at or above ``2**bits`` (int8 codes are added in uint8 with wrap-around: one
    pass, no int16 copy; for a code in [-128, 127] the sum mod 256 is below 2**bits only
    when the code is in range)."""
    if codes.dtype in (torch.int8, torch.uint8):
        u = codes.view(torch.uint8)
        return u + offset if offset else u
    u = codes.to(torch.int32) + offset  # wider integers: out-of-range values go to 255
    return u.masked_fill(u < 0, 255).clamp(max=255).to(torch.uint8)


class PackedBase(nn.Module):
    """Shared storage of packed layers: ``codes`` (uint8, rows x packed cols, group-blocked
    when the shape allows, see :mod:`modelzip.ops.dequant`), ``weight_scale``
    [+ ``weight_zero``, ``weight_inscale``]."""

    def _init_packed(self, rows: int, cols: int, bits: int, group_size: int | None,
                     symmetric: bool, inscale: bool) -> None:
        self.rows, self.cols = rows, cols
        self.spec = QSpec(bits, symmetric, group_size)
        self.slot = slot_bits(bits)
        self.group = cols if group_size in (None, -1) else group_size
        self.blocked = blockable(cols, self.slot, self.group)
        groups = 1 if group_size in (None, -1) else -(-cols // group_size)
        srows = 1 if group_size == -1 else rows
        nbytes = -(-cols * self.slot // 8)
        self.register_buffer("codes", torch.zeros(rows, nbytes, dtype=torch.uint8),
                             persistent=False)
        self.register_buffer("weight_scale", torch.ones(srows, groups))
        if not symmetric:
            self.register_buffer("weight_zero", torch.zeros(srows, groups, dtype=torch.int16))
        if inscale:
            self.register_buffer("weight_inscale", torch.ones(cols))
        self._mz_bits = {"weight_codes": (bits, self.spec.signed)}

    @property
    def offset(self) -> int:
        return (1 << (self.spec.bits - 1)) if self.spec.signed else 0

    def _unsigned(self) -> torch.Tensor:
        if self.blocked:
            return unpack_blocked(self.codes, self.slot, self.group)
        return unpack_rows(self.codes, self.slot, self.cols)

    @property
    def weight(self) -> torch.Tensor:
        """The float weight, computed on every access (nothing is cached)."""
        return self.dequantized()

    @property
    def weight_codes(self) -> torch.Tensor:
        """The unpacked integer codes (a new tensor; the layer keeps them packed)."""
        return self.codes_tensor()

    def codes_tensor(self) -> torch.Tensor:
        """The integer codes ``[rows, cols]`` as the unpacked layer holds them."""
        dtype = torch.int8 if self.spec.signed else torch.uint8
        if self.codes.is_meta:  # sizing a layer (load-time bounds): no work to do
            return torch.empty(self.rows, self.cols, dtype=dtype, device="meta")
        u = self._unsigned().to(torch.int16) - self.offset
        return u.to(dtype)

    def set_codes(self, codes: torch.Tensor) -> None:
        """Pack integer ``codes`` ``[rows, cols]`` (signed or not, as the spec says)."""
        if tuple(codes.shape) != (self.rows, self.cols):
            raise FormatError(f"weight codes of shape {tuple(codes.shape)}, expected "
                              f"{(self.rows, self.cols)}")
        u = _unsigned_codes(codes, self.offset)
        if u.numel() and int(u.max()) >= 1 << self.spec.bits:
            raise FormatError(f"weight codes outside {self.spec.bits} bits")
        packed = (pack_blocked(u, self.slot, self.group) if self.blocked
                  else pack_rows(u, self.slot))
        self.codes = packed.to(self.codes.device)

    def shift_terms(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, shift) ``[rows or 1, groups]`` with weight = (code - shift) * a per group;
        the shifts are small integers (or 1/2), exact in every float dtype."""
        s = self.weight_scale.to(dtype)
        if self.spec.binary:  # codes {0, 1} mean -1/+1: (c - 1/2) 2s
            return 2 * s, torch.full_like(s, 0.5)
        shift = torch.full_like(s, float(self.offset))
        zero = getattr(self, "weight_zero", None)
        if zero is not None:
            shift = shift + zero.to(dtype)
        return s, shift

    def affine_terms(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) ``[rows or 1, groups]`` with weight = code * a - b per group."""
        a, shift = self.shift_terms(dtype)
        return a, shift * a

    def dequantized(self) -> torch.Tensor:
        """The float weight ``[rows, cols]``, rebuilt from the codes (a new tensor)."""
        zero = getattr(self, "weight_zero", None)
        zero = torch.zeros_like(self.weight_scale) if zero is None else zero
        w = dequantize(self.codes_tensor().to(torch.int16), self.weight_scale, zero,
                       self.spec.group_size, binary=self.spec.binary)
        inscale = getattr(self, "weight_inscale", None)
        return w / inscale if inscale is not None else w

    # the file and state_dict hold the codes unpacked, at their declared width
    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight_codes"] = self.codes_tensor()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        key, legacy = prefix + "weight_codes", prefix + "codes"  # older files: row-packed
        if key in state_dict:
            self.set_codes(state_dict[key])
        elif legacy in state_dict and state_dict[legacy].shape == self.codes.shape:
            u = unpack_rows(state_dict[legacy].to(torch.uint8), self.slot, self.cols)
            self.set_codes(u.to(torch.int16) - self.offset)
        else:
            missing_keys.append(key)
        for k in (key, legacy):
            if k in unexpected_keys:
                unexpected_keys.remove(k)

    def _spec_common(self) -> dict[str, Any]:
        return {"bits": self.spec.bits, "group_size": self.spec.group_size,
                "symmetric": self.spec.symmetric}


@register_module
class PackedLinear(PackedBase):
    """y = x W^T + b with W = (codes - offset - zero) * scale [/ inscale], dequantized on
    the fly (in row chunks of at most ``CHUNK`` weights) into a shared scratch buffer."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int,
                 group_size: int | None, symmetric: bool = True, inscale: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_packed(out_features, in_features, bits, group_size, symmetric, inscale)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if not self.blocked:
            return F.linear(x, self.dequantized().to(x.dtype), bias)
        inscale = getattr(self, "weight_inscale", None)
        if inscale is not None:
            x = x / inscale.to(x.dtype)
        # fp32: weight = code * a - b per group, x W^T = x (code*a)^T - (x summed per group)
        # b^T (one pass over the weight). bf16/fp16 would lose the result to cancellation
        # between the two terms: there the weight is dequantized as (code - shift) * a.
        exact = x.dtype in (torch.bfloat16, torch.float16)
        a, shift = self.shift_terms(x.dtype)
        b = shift * a
        xg = None if exact else x.unflatten(-1, (-1, self.group)).sum(-1)
        # the scratch buffer may be reused unless autograd must keep the weight for x's grad
        reuse = not (torch.is_grad_enabled() and x.requires_grad)
        step = max(1, CHUNK // max(1, self.in_features))
        parts = []
        for r0 in range(0, self.out_features, step):
            r1 = min(self.out_features, r0 + step)
            rs = slice(r0, r1) if a.shape[0] > 1 else slice(0, 1)
            n = (r1 - r0) * self.in_features
            buf = (scratch(n, x.dtype, x.device) if reuse
                   else torch.empty(n, dtype=x.dtype, device=x.device))
            w = scaled_codes(self.codes[r0:r1], self.slot, self.group, a[rs], buf,
                             shift[rs] if exact else None)
            y = F.linear(x, w, None if bias is None else bias[r0:r1])
            if xg is not None:
                y = y.sub_(xg @ b[rs].t()) if not y.requires_grad else y - xg @ b[rs].t()
            parts.append(y)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def mz_spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "inscale": hasattr(self, "weight_inscale"),
                **self._spec_common()}

    @classmethod
    def mz_from_spec(cls, spec: dict[str, Any]) -> PackedLinear:
        try:
            if spec["bits"] in range(1, 9) and spec["in_features"] > 0:
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


__all__ = ["PackedBase", "PackedLinear", "slot_bits", "CHUNK"]
