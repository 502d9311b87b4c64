"""Activation granularity of Int8 dynamic layers in the ONNX export, chosen by measurement.

modelzip's ``Int8`` dynamic layers quantize activations per token (one scale per row).
ONNX Runtime runs that as a short chain of operators around MatMulIntegerToFloat; its
fused DynamicQuantizeMatMul (one scale per call, uint8 with a zero point) is faster but
usually less accurate. ``int8_activations="auto"`` keeps per-token scales where they
matter: the activation-quantization error of an output is ``1 - mean row cosine`` to the
same model computing with float activations (int8 weights kept); layers that read the
same input (attention Q/K/V) form one group; each group is scored alone (per-tensor
there, per-token elsewhere); then the largest prefix of groups, least harmful first, whose
joint error stays within ``(1 + budget)`` x the all-per-token error on the calibration
inputs (bisection on the prefix length) runs per-tensor.

Per-tensor layers are emulated here in torch exactly as ORT computes them
(DynamicQuantizeLinear: uint8, scale (max(x, 0) - min(x, 0)) / 255, rounded zero point),
so the export is verified against modelzip's output with those layers per-tensor, and the
distance from modelzip's all-per-token output is reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..quantization.int8 import Int8Linear
from .onnx_hf import Inputs, reference_output


def dynamic_layers(model: nn.Module) -> dict[str, Int8Linear]:
    """The Int8 dynamic Linear layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, Int8Linear) and not m.static and n}


def tensor_output(m: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """``m`` on ``x`` with one uint8 activation scale for the whole call, as ORT's
    DynamicQuantizeLinear / DynamicQuantizeMatMul compute it."""
    x2 = x.reshape(-1, m.in_features).float()
    inscale = getattr(m, "input_scale", None)
    if inscale is not None:
        x2 = x2 * inscale
    hi, lo = x2.max().clamp(min=0), x2.min().clamp(max=0)
    s = ((hi - lo) / 255).clamp(min=1e-12)
    zp = torch.round(-lo / s).clamp(0, 255)
    q = (torch.round(x2 / s) + zp).clamp(0, 255) - zp
    y = (q @ m.weight_codes.float()) * (s * m.weight_scale)
    if m.bias is not None:
        y = y + m.bias
    return y.reshape(*x.shape[:-1], m.out_features)


def float_output(m: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """``m`` with float activations (its int8 weights dequantized)."""
    return torch.nn.functional.linear(x.float(), m.dequantized(), m.bias)


@contextmanager
def per_tensor(model: nn.Module, names: set[str], fn: Any = tensor_output
               ) -> Iterator[None]:
    """Within the block, the layers ``names`` of ``model`` compute per-tensor (``fn``:
    :func:`float_output` for float activations)."""
    handles = [m.register_forward_hook(lambda mod, args, out: fn(mod, args[0]))
               for n, m in dynamic_layers(model).items() if n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def input_groups(model: nn.Module, inputs: Inputs) -> list[list[str]]:
    """Dynamic Int8 layers grouped by the input tensor they read (same object)."""
    seen: dict[int, list[str]] = {}
    keep: list[torch.Tensor] = []  # keep inputs alive so ids stay unique

    def hook(name: str) -> Any:
        def record(mod: nn.Module, args: tuple) -> None:
            keep.append(args[0])
            seen.setdefault(id(args[0]), []).append(name)
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in dynamic_layers(model).items()]
    try:
        reference_output(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of the rows (last axis) of two outputs."""
    a2, b2 = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    return float(torch.nn.functional.cosine_similarity(a2, b2, dim=-1, eps=1e-12).mean())


def _error(model: nn.Module, calib: list[Inputs], ideal: list[torch.Tensor],
           names: set[str]) -> float:
    with per_tensor(model, names):
        outs = [reference_output(model, b) for b in calib]
    return sum(1 - agreement(o, r) for o, r in zip(outs, ideal, strict=True)) / len(outs)


def choose_forms(model: nn.Module, calib: list[Inputs], budget: float
                 ) -> tuple[dict[str, str], dict[str, float]]:
    """{layer: "token" | "tensor"} for the dynamic Int8 layers, and what it measured:
    the activation-quantization error all per-token and with the choice."""
    layers = dynamic_layers(model)
    if not layers:
        return {}, {}
    groups = input_groups(model, calib[0])
    with per_tensor(model, set(layers), float_output):
        ideal = [reference_output(model, b) for b in calib]
    base = _error(model, calib, ideal, set())
    alone = [_error(model, calib, ideal, set(g)) for g in groups]
    order = [groups[i] for i in sorted(range(len(groups)), key=lambda i: alone[i])]

    def prefix(k: int) -> set[str]:
        return {n for g in order[:k] for n in g}

    lo, hi, err = 0, len(order), base
    while lo < hi:  # largest k whose first k groups together stay within the budget
        mid = (lo + hi + 1) // 2
        got = _error(model, calib, ideal, prefix(mid))
        if got <= (1 + budget) * base:
            lo, err = mid, got
        else:
            hi = mid - 1
    chosen = prefix(lo)
    forms = {n: "tensor" if n in chosen else "token" for n in layers}
    return forms, {"error_per_token": base, "error_chosen": err}
