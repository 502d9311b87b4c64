"""``mz.export_onnx``: a compressed model as an ONNX file that keeps its integer weights.

Steps: swap integer layers for stand-ins (:mod:`.onnx_standins`), export with the
TorchScript exporter (dynamic batch and sequence axes), optionally store dense weights as
fp16, check the file with ``onnx.checker``, run it in ONNX Runtime in a fresh process and
compare with modelzip's output within the tolerance of the methods used, then rename it
into place. Nothing is left at ``path`` when any step fails.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelzipError
from ..quantization.int8 import Int8Conv2d, Int8Linear
from .onnx_granularity import (
    agreement,
    choose_forms,
    dynamic_layers,
    input_groups,
    per_tensor,
)
from .onnx_hf import (
    OPSET,
    Inputs,
    normalize_inputs,
    reference_output,
    sensitivity,
    trace_graph,
)
from .onnx_standins import Int8Forms, Plan, swap_for_export
from .onnx_summary import ExportSummary, finish_summary, tolerance
from .onnx_verify import ExportError, verify_fresh


def _export_once(model: nn.Module, inputs: Inputs, path: Path, *, level: int,
                 int8: Int8Forms, fp16: bool, opset: int) -> Plan:
    work = copy.deepcopy(model).eval()
    plan = swap_for_export(work, accuracy_level=level,
                           int8=dataclasses.replace(int8, cache={}))
    trace_graph(work, inputs, path, opset)
    if any("static" in v for v in plan.integer.values()):
        from .onnx_qdq import complete_qdq

        complete_qdq(path)
    if fp16:
        from .onnx_fp16 import dense_to_fp16

        plan.fp16 = dense_to_fp16(path)
    return plan


def plain_layers(model: nn.Module) -> nn.Module:
    """Packed weight-only layers as plain layers with the same codes (a copy: the caller's
    model stays packed); the integer forms are built from codes, scales and zero points."""
    import copy

    from ..quantization.packed_convert import PackedBase, unpack_model

    if not any(isinstance(m, PackedBase) for m in model.modules()):
        return model
    return unpack_model(copy.deepcopy(model))


_MODES = (None, "token", "tensor", "auto")


def _calib_list(calib_inputs: Any, inputs: Inputs) -> list[Inputs]:
    if calib_inputs is None:
        return [inputs]
    many = isinstance(calib_inputs, list) and calib_inputs and not all(
        isinstance(t, torch.Tensor) for t in calib_inputs)
    return [normalize_inputs(c) for c in (calib_inputs if many else [calib_inputs])]


def int8_forms(model: nn.Module, inputs: Inputs, mode: str | None, calib_inputs: Any,
               budget: float) -> tuple[Int8Forms, dict[str, Any]]:
    """Activation granularity of each Int8 dynamic layer: all ``token``, all ``tensor``, or
    ``auto`` (chosen on the calibration inputs within ``budget``, see
    :mod:`.onnx_granularity`); and what the choice measured."""
    mode = mode or ("auto" if calib_inputs is not None else "token")
    groups = input_groups(model, inputs)
    shared = {n for g in groups if len(g) > 1 for n in g}
    info: dict[str, Any] = {"mode": mode}
    if mode != "auto":
        return Int8Forms(default=mode, shared=shared), info
    forms, got = choose_forms(model, _calib_list(calib_inputs, inputs), budget)
    info.update(budget=budget, **got)
    return Int8Forms(forms=forms, shared=shared), info


def export_onnx(model: nn.Module, path: str | os.PathLike, example_inputs: Any, *,
                accuracy_level: int | None = None, fp16: bool = False,
                int8_activations: str | None = None, calib_inputs: Any = None,
                int8_budget: float = 0.0, decode: bool = False, opset: int = OPSET,
                check: bool = True, sizes: bool = True) -> ExportSummary:
    """Export ``model`` to ``path`` keeping integer weights; verified in ONNX Runtime.

    ``accuracy_level`` (MatMulNBits): None tries 4 (int8 activations inside the kernel,
    fastest on CPUs with VNNI) and falls back to 0 if the check fails; 0/1/2/3/4 force it.
    ``fp16``: dense float weights stored as fp16 (computed in fp32).
    ``int8_activations`` for Int8 dynamic layers: "token" (modelzip's per-token scales),
    "tensor" (one scale per call, ORT's fused DynamicQuantizeMatMul: faster, usually less
    accurate) or "auto": per-tensor on as many layers as keep the activation-quantization
    error (1 - mean row cosine of the output to float activations) within
    ``1 + int8_budget`` times the all-per-token error on ``calib_inputs`` (a batch or a
    list of batches like ``example_inputs``; default: the example inputs), per-token
    elsewhere. None: "auto" when ``calib_inputs`` is given, else "token".
    ``decode``: a Hugging Face causal LM's decode step with past key/values inputs and
    outputs (``example_inputs``: a prompt dict; see :mod:`.onnx_decode`).
    ``sizes``: also report the .mzip and the dense fp32 ONNX bytes. Returns an
    :class:`ExportSummary` (``str()`` is a table).
    """
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"export_onnx needs an nn.Module, got {type(model).__name__}")
    model = plain_layers(model)
    if accuracy_level not in (None, 0, 1, 2, 3, 4):
        raise ModelzipError("accuracy_level must be None or one of 0, 1, 2, 3, 4")
    if int8_activations not in _MODES or not 0.0 <= int8_budget < 100.0:
        raise ModelzipError("int8_activations must be 'token', 'tensor', 'auto' or None, "
                            "and int8_budget in [0, 100)")
    target = Path(path)
    if not target.parent.is_dir():
        raise ModelzipError(f"output folder {target.parent} does not exist")
    model.eval()
    inputs = _inputs(model, example_inputs, decode)
    forms, info = int8_forms(model, inputs, int8_activations, calib_inputs, int8_budget)
    ref, floor = _reference(model, inputs, forms, info, check)
    levels = [4, 0] if accuracy_level is None else [accuracy_level]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        for i, level in enumerate(levels):
            plan = _export_once(model, inputs, tmp_path, level=level, int8=forms, fp16=fp16,
                                opset=opset)
            _checker(tmp_path)
            res = (_verify(tmp_path, inputs, ref, Path(tmp), plan, fp16, floor) if check
                   else None)
            nbits = any("MatMulNBits" in v for v in plan.integer.values())
            if res is None or res["rel"] <= res["tol"] or not nbits or i == len(levels) - 1:
                break
        if res is not None and res["rel"] > res["tol"]:
            raise ExportError(f"ONNX Runtime output differs from modelzip's: relative error "
                              f"{res['rel']:.3g} > {res['tol']:.3g} ({_methods(plan)})")
        summary = finish_summary(tmp_path, plan, res, model if sizes else None, inputs,
                                 level=level, int8=info)
        os.replace(tmp_path, target)
    summary.path = target
    summary.file_bytes = target.stat().st_size
    return summary


def _inputs(model: nn.Module, example_inputs: Any, decode: bool) -> Inputs:
    if not decode:
        return normalize_inputs(example_inputs)
    from .onnx_decode import decode_example

    names, tensors = decode_example(model, example_inputs)
    return Inputs(names, tensors, by_name=False, decode=True)


def _reference(model: nn.Module, inputs: Inputs, forms: Int8Forms, info: dict[str, Any],
               check: bool) -> tuple[torch.Tensor, float]:
    """modelzip's output with the export's activation granularity (per-tensor layers
    emulated as ORT computes them) and its sensitivity floor; ``info`` gets how far that
    output is from modelzip's own all-per-token output."""
    names = {n for n, f in forms.forms.items() if f == "tensor"}
    if forms.default == "tensor":
        names = set(dynamic_layers(model))
    with per_tensor(model, names):
        ref = reference_output(model, inputs)
        floor = sensitivity(model, inputs, ref, (Int8Linear, Int8Conv2d)) if check else 0.0
    info["tensor_layers"] = len(names)
    if names:
        own = reference_output(model, inputs)
        info["agreement"] = agreement(ref, own)
        info["rel_to_per_token"] = float((ref - own).norm() / own.norm().clamp(min=1e-12))
    return ref, floor


def _methods(plan: Plan) -> str:
    return ", ".join(sorted(set(plan.integer.values()))) or "dense"


def _checker(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph is not valid ONNX: {str(exc).splitlines()[0]}"
                          ) from None


def _verify(path: Path, inputs: Inputs, ref: torch.Tensor, workdir: Path, plan: Plan,
            fp16: bool, floor: float) -> dict[str, Any]:
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(inputs.names, inputs.tensors,
                                                         strict=True)}
    res = verify_fresh(path, feeds, ref.numpy(), workdir)
    if not res.get("finite", True):
        raise ExportError("ONNX Runtime output has NaN or infinite values")
    res["form_tol"] = tolerance(plan, fp16)
    res["sensitivity"] = floor
    res["tol"] = max(res["form_tol"], 3 * floor)
    return res
