"""The export summary: operators, initializer bytes per dtype, file bytes beside the
.mzip and the dense fp32 ONNX, what each compressed layer became, and the check result."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelzipError
from .onnx_hf import OPSET, Inputs, trace_graph
from .onnx_standins import Plan, densify
from .onnx_verify import graph_summary

# normwise relative tolerance ||ORT - modelzip|| / ||modelzip|| per export form: exact
# integer forms differ only by float summation order and rare rounding ties; MatMulNBits
# at accuracy_level 4 quantizes activations differently from modelzip. Per-tensor Int8
# layers are compared with modelzip's layer computing per-tensor exactly as ORT does
# (onnx_granularity), so they get the exact-form tolerance plus ORT's own rounding of x / s
_TOL = (("MatMulNBits", "accuracy_level 4", 3e-2), ("MatMulNBits", "", 1e-3),
        ("Int8 dynamic (per-tensor", "", 3e-2), ("ConvInteger", "", 5e-2),
        ("Int8", "", 1e-2), ("GatherBlockQuantized", "", 1e-5),
        ("DequantizeLinear", "", 1e-5))


def tolerance(plan: Plan, fp16: bool) -> float:
    """The loosest tolerance among the forms in ``plan`` (dense fp32: 1e-4)."""
    tol = 1e-2 if fp16 and plan.fp16 else 1e-5
    for form in plan.integer.values():
        for key, extra, t in _TOL:
            if key in form and extra in form:
                tol = max(tol, t)
                break
    return tol


@dataclass
class ExportSummary:
    """What :func:`export_onnx` wrote and how it was checked."""

    path: Path | None = None
    file_bytes: int = 0
    mzip_bytes: int | None = None
    fp32_onnx_bytes: int | None = None
    operators: dict[str, int] = field(default_factory=dict)
    initializer_bytes: dict[str, int] = field(default_factory=dict)
    integer_layers: dict[str, str] = field(default_factory=dict)
    dense_layers: dict[str, str] = field(default_factory=dict)
    check: dict[str, Any] | None = None
    accuracy_level: int | None = None
    int8_activations: str = "token"
    int8: dict[str, Any] = field(default_factory=dict)
    fp16_tensors: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path) if self.path else None
        return d

    def __str__(self) -> str:
        lines = [f"ONNX file {self.path}: {self.file_bytes:,} bytes"
                 + (f" (.mzip {self.mzip_bytes:,}" if self.mzip_bytes else " (")
                 + (f", dense fp32 ONNX {self.fp32_onnx_bytes:,})" if self.fp32_onnx_bytes
                    else ")"),
                 "operators: " + ", ".join(f"{k} x{v}" for k, v in self.operators.items()),
                 "initializer bytes: " + ", ".join(f"{k} {v:,}" for k, v in
                                                   self.initializer_bytes.items())]
        for fqn, form in self.integer_layers.items():
            lines.append(f"  integer  {fqn}: {form}")
        for fqn, why in self.dense_layers.items():
            lines.append(f"  dense    {fqn}: {why}")
        lines.extend(_int8_lines(self.int8))
        if self.fp16_tensors:
            lines.append(f"  {self.fp16_tensors} dense float tensors stored as fp16")
        if self.check:
            c = self.check
            lines.append(f"checked in ONNX Runtime (fresh process): max |diff| "
                         f"{c['max_abs']:.3g}, normwise relative {c['rel']:.3g} <= {c['tol']:.3g}"
                         f" (form {c['form_tol']:.3g}; modelzip's own output moves "
                         f"{c['sensitivity']:.3g} under 1e-6 input noise)")
        return "\n".join(lines)


def _int8_lines(info: dict[str, Any]) -> list[str]:
    if not info.get("tensor_layers"):
        return []
    out = [f"  Int8 activations '{info['mode']}': {info['tensor_layers']} layer(s) per-tensor "
           f"(ORT checked against modelzip with those layers per-tensor); output vs "
           f"modelzip's all-per-token output: mean row cosine {info['agreement']:.5f}, "
           f"normwise relative {info['rel_to_per_token']:.3g}"]
    if "error_chosen" in info:
        out.append(f"  chosen on calibration inputs: activation-quantization error (1 - row "
                   f"cosine to float activations) {info['error_chosen']:.3g} vs "
                   f"{info['error_per_token']:.3g} all per-token (budget "
                   f"+{info['budget']:.0%})")
    return out


def _mzip_bytes(model: nn.Module) -> int | None:
    from ..measure import file_bytes

    try:
        return file_bytes(model)
    except (ModelzipError, TypeError, ValueError, RuntimeError):
        return None


def _fp32_bytes(model: nn.Module, inputs: Inputs, workdir: Path) -> int | None:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "fp32.onnx"
        try:
            trace_graph(densify(copy.deepcopy(model)).eval(), inputs, path, OPSET)
        except ModelzipError:
            return None
        return path.stat().st_size


def finish_summary(path: Path, plan: Plan, check: dict[str, Any] | None,
                   model: nn.Module | None, inputs: Inputs, *, level: int,
                   int8: dict[str, Any]) -> ExportSummary:
    """Summary of the file at ``path``; with ``model`` also .mzip and fp32 ONNX bytes."""
    g = graph_summary(path)
    s = ExportSummary(operators=g["operators"], initializer_bytes=g["initializer_bytes"],
                      integer_layers=dict(plan.integer), dense_layers=dict(plan.dense),
                      check=check, int8_activations=int8["mode"], int8=dict(int8),
                      fp16_tensors=plan.fp16,
                      accuracy_level=level if any("MatMulNBits" in v for v in
                                                  plan.integer.values()) else None)
    if model is not None:
        s.mzip_bytes = _mzip_bytes(model)
        s.fp32_onnx_bytes = _fp32_bytes(model, inputs, path.parent)
    return s
