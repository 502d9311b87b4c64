"""PackedEmbedding, and conversion between packed layers and weight-only quantized plain
layers (codes + an fp32 weight cache): :func:`pack_model` / :func:`unpack_model`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from ..ops.dequant import scaled_codes
from ..state import get_mask, install_reparam, register_module
from .packed import PackedBase, PackedLinear


@register_module
class PackedEmbedding(PackedBase):
    """An embedding table of packed codes: only the looked-up rows are dequantized (in
    fp32), returned in ``dtype`` (the table's dtype before quantization: a bf16 model's
    embeddings give bf16 rows), or in the scales' dtype when that is not given."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int,
                 group_size: int | None, symmetric: bool = True,
                 padding_idx: int | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.out_dtype = padding_idx, dtype
        self._init_packed(num_embeddings, embedding_dim, bits, group_size, symmetric, False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        dtype = self.out_dtype or self.weight_scale.dtype
        flat = idx.reshape(-1)
        if not self.blocked:
            return F.embedding(idx, self.dequantized()).to(dtype)
        a, shift = self.shift_terms(torch.float32)
        if a.shape[0] > 1:
            a, shift = a.index_select(0, flat), shift.index_select(0, flat)
        codes = self.codes.index_select(0, flat)
        out = torch.empty(flat.numel() * self.embedding_dim, device=codes.device)
        w = scaled_codes(codes, self.slot, self.group, a, out, shift)
        return w.reshape(*idx.shape, self.embedding_dim).to(dtype)

    def mz_spec(self) -> dict[str, Any]:
        spec = {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, **self._spec_common()}
        if self.out_dtype in _HALF:  # fp32 tables keep the spec (and file bytes) they had
            spec["dtype"] = _HALF[self.out_dtype]
        return spec

    @classmethod
    def mz_from_spec(cls, spec: dict[str, Any]) -> PackedEmbedding:
        try:
            pad = spec["padding_idx"]
            if spec["bits"] in range(1, 9) and spec["num_embeddings"] > 0 and (
                    pad is None or isinstance(pad, int)):
                dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
                         None: None}[spec.get("dtype")]
                return cls(int(spec["num_embeddings"]), int(spec["embedding_dim"]),
                           int(spec["bits"]), spec["group_size"], bool(spec["symmetric"]), pad,
                           dtype)
        except (KeyError, TypeError, ValueError, RuntimeError):
            pass
        raise FormatError("bad PackedEmbedding spec")

    def mz_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.dequantized()}

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits={self.spec.bits}, "
                f"group={self.spec.group_size}")


def _affine(m: nn.Module) -> dict[str, Any] | None:
    meta = getattr(m, "_mz_reparam", {}).get("weight")
    if not meta or meta.get("kind") != "affine" or len(m._mz_reparam) != 1:
        return None
    return None if get_mask(m, "weight") is not None else meta  # sparse: keep masked codec


def _fill(new: PackedBase, m: nn.Module) -> PackedBase:
    new.set_codes(m.weight_codes)
    for key in ("weight_scale", "weight_zero", "weight_inscale"):
        if hasattr(new, key):
            getattr(new, key).copy_(getattr(m, key))
    return new.to(m.weight_scale.device)


def packed_from(m: nn.Module) -> PackedBase | None:
    """The packed equivalent of a weight-only quantized Linear / Embedding (else None)."""
    meta = _affine(m)
    if meta is None:
        return None
    args = (meta["bits"], meta["group_size"], meta["symmetric"])
    if type(m) is nn.Linear:
        new = PackedLinear(m.in_features, m.out_features, m.bias is not None, *args,
                           hasattr(m, "weight_inscale"))
        if m.bias is not None:
            new.bias = nn.Parameter(m.bias.detach().clone(), m.bias.requires_grad)
        return _fill(new, m)
    if type(m) is nn.Embedding and m.max_norm is None and not hasattr(m, "weight_inscale"):
        dtype = {v: k for k, v in _HALF.items()}.get(meta.get("dtype"))
        return _fill(PackedEmbedding(m.num_embeddings, m.embedding_dim, *args, m.padding_idx,
                                     dtype), m)
    return None


def unpacked_from(p: PackedBase, dtype: torch.dtype | None = None) -> nn.Module:
    """A plain Linear / Embedding holding ``p``'s codes, with the weight cached in fp32, or
    in ``dtype`` (bf16 / fp16) for a half-precision model."""
    dev = p.codes.device
    if isinstance(p, PackedLinear):
        with torch.device("meta"):
            m: nn.Module = nn.Linear(p.in_features, p.out_features, p.bias is not None)
        if p.bias is not None:
            m.bias = nn.Parameter(p.bias.detach().clone(), p.bias.requires_grad)
    else:
        with torch.device("meta"):
            m = nn.Embedding(p.num_embeddings, p.embedding_dim, p.padding_idx)
    tensors = {"codes": p.codes_tensor(), "scale": p.weight_scale.clone()}
    for key in ("zero", "inscale"):
        if hasattr(p, f"weight_{key}"):
            tensors[key] = getattr(p, f"weight_{key}").clone()
    meta = {"kind": "affine", "bits": p.spec.bits, "group_size": p.spec.group_size,
            "symmetric": p.spec.symmetric, "binary": p.spec.binary}
    if dtype in _HALF:
        meta["dtype"] = _HALF[dtype]
    install_reparam(m, "weight", meta, {k: v.to(dev) for k, v in tensors.items()})
    m._mz_bits = {"weight_codes": (p.spec.bits, p.spec.signed)}
    return m


def pack_model(model: nn.Module, fqns: list[str] | None = None) -> nn.Module:
    """Swap weight-only quantized Linear / Embedding layers (all, or those in ``fqns``)
    for packed layers; returns ``model``. Masked (sparse) layers stay as they are."""
    for fqn, m in list(model.named_modules()):
        if fqn and (fqns is None or fqn in fqns):
            new = packed_from(m)
            if new is not None:
                model.set_submodule(fqn, new)
    return model


_HALF = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's floating-point parameters outside packed layers (a bf16
    model keeps its norms and embeddings in bf16); None when there are none or they mix."""
    found = {t.dtype for m in model.modules() if not isinstance(m, PackedBase)
             for t in m.parameters(recurse=False) if t.is_floating_point()}
    return found.pop() if len(found) == 1 else None


def unpack_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Swap packed layers for plain layers that cache their weight (the fast but
    memory-hungry representation), in ``dtype``; by default the model's own dtype when it
    is bf16 / fp16 (else float32); returns ``model``."""
    dtype = dtype or _float_dtype(model)
    for fqn, m in list(model.named_modules()):
        if fqn and isinstance(m, PackedBase):
            model.set_submodule(fqn, unpacked_from(m, dtype))
    return model


__all__ = ["PackedEmbedding", "pack_model", "unpack_model", "packed_from", "unpacked_from"]
