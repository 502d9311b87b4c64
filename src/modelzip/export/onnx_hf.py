"""Inputs, outputs and wrappers for export: plain modules and Hugging Face models.

The exporter wants positional tensor inputs and one tensor output. Example inputs may be
a tensor, a tuple of tensors, or a dict of keyword tensors (the Hugging Face convention);
dicts are passed to ``forward`` by name, which avoids ``BertModel.forward() got multiple
values`` errors. Hugging Face outputs give ``logits`` (causal / masked LMs, classifiers)
or ``last_hidden_state`` (encoders); caches are switched off (``use_cache=False``).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batches import logits_of
from ..errors import ModelzipError
from .onnx_verify import ExportError

OPSET = 17


@dataclass
class Inputs:
    """Example inputs as the exporter sees them."""

    names: list[str]
    tensors: tuple[torch.Tensor, ...]
    by_name: bool
    decode: bool = False  # a causal LM decode step with past key/values (onnx_decode)

    def axes(self) -> dict[str, dict[int, str]]:
        """Dynamic batch axis everywhere; a dynamic sequence axis on 2-D integer inputs."""
        if self.decode:
            from .onnx_decode import decode_axes

            return decode_axes(self.names)[1]
        out = {}
        for n, t in zip(self.names, self.tensors, strict=True):
            ax = {0: "batch"} if t.dim() else {}
            if t.dim() == 2 and not t.dtype.is_floating_point:
                ax[1] = "sequence"
            out[n] = ax
        return out

    @property
    def has_sequence(self) -> bool:
        return any(1 in ax for ax in self.axes().values())


def normalize_inputs(example_inputs: Any) -> Inputs:
    """Validate ``example_inputs`` (tensor, tuple/list of tensors, or dict of tensors)."""
    x = example_inputs
    if isinstance(x, torch.Tensor):
        return Inputs(["input_0"], (x,), False)
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return Inputs([f"input_{i}" for i in range(len(x))], tuple(x), False)
    if isinstance(x, dict) and x and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                         for k, v in x.items()):
        kept = {k: v for k, v in x.items() if k != "labels"}
        return Inputs(list(kept), tuple(kept.values()), True)
    raise ModelzipError("export_onnx needs example inputs as a tensor, a tuple of tensors "
                        f"or a dict of keyword tensors, got {type(x).__name__}")


def _extra_kwargs(model: nn.Module) -> dict[str, Any]:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def _needs_mask(model: nn.Module, names: list[str]) -> bool:
    """input_ids without attention_mask: transformers then guesses packed sequences from
    positions with ``torch.diff``, which the exporter cannot write; an all-ones mask built
    in the graph from the ids' shape means the same (every token attended)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "input_ids" in names and "attention_mask" not in names and (
        "attention_mask" in params)


class Wrapped(nn.Module):
    """Positional inputs in, the model's main output tensor out."""

    def __init__(self, model: nn.Module, inputs: Inputs):
        super().__init__()
        self.model = model
        self.names = list(inputs.names)
        self.by_name = inputs.by_name
        self.decode = inputs.decode
        self.extra = _extra_kwargs(model) if inputs.by_name else {}
        self.add_mask = inputs.by_name and _needs_mask(model, self.names)

    def forward(self, *tensors: torch.Tensor) -> Any:
        if self.decode:
            from .onnx_decode import step

            return step(self.model, tensors[0], tensors[1], tensors[2:])
        if self.by_name:
            kw = dict(zip(self.names, tensors, strict=True))
            if self.add_mask:
                kw["attention_mask"] = torch.ones_like(kw["input_ids"])
            out = self.model(**kw, **self.extra)
        else:
            out = self.model(*tensors)
        return logits_of(out)


def reference_output(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    """modelzip's own output for the example inputs (what ORT must reproduce); a decode
    step: its outputs (logits, present keys/values) flattened and concatenated."""
    try:
        with torch.inference_mode():
            out = Wrapped(model, inputs).eval()(*inputs.tensors)
            if inputs.decode:
                return torch.cat([t.detach().float().reshape(-1) for t in out])
            return out.detach().float()
    except ModelzipError:
        raise
    except Exception as exc:  # shape/dtype mismatches surface as many error types
        raise ExportError("the model does not run on the example inputs: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def trace_graph(model: nn.Module, inputs: Inputs, path: Path, opset: int) -> None:
    """Export ``model`` (stand-ins already swapped in) with the TorchScript exporter."""
    axes = inputs.axes()
    out_axes = {0: "batch", 1: "sequence"} if inputs.has_sequence else {0: "batch"}
    outs, dyn = ["output"], {**axes, "output": out_axes}
    if inputs.decode:
        from .onnx_decode import decode_axes

        outs, dyn = decode_axes(inputs.names)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped(model, inputs).eval(), inputs.tensors, str(path),
                              input_names=inputs.names, output_names=outs,
                              dynamic_axes=dyn,
                              opset_version=opset, dynamo=False, do_constant_folding=True)
    except ModelzipError:
        raise
    except Exception as exc:  # the exporter raises many types; report one clear error
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX export failed: {msg}") from None


def linear_from_conv1d(model: nn.Module) -> nn.Module:
    """Replace Hugging Face ``Conv1D`` layers (GPT-2: a Linear with a transposed weight)
    by ``nn.Linear`` in place, so that Linear-targeting methods and exporters see them."""
    for fqn, m in list(model.named_modules()):
        if type(m).__name__ == "Conv1D" and hasattr(m, "nf") and fqn:
            w = m.weight.detach()
            lin = nn.Linear(w.shape[0], w.shape[1], bias=m.bias is not None)
            lin.weight.data.copy_(w.t())
            if m.bias is not None:
                lin.bias.data.copy_(m.bias.detach())
            model.set_submodule(fqn, lin)
    return model


def sensitivity(model: nn.Module, inputs: Inputs, ref: torch.Tensor,
                layer_types: tuple[type, ...], rel: float = 1e-6) -> float:
    """How far modelzip's own output moves when the inputs of its activation-quantizing
    layers get float-rounding-sized noise (``rel`` x |x|): rounding ties flip and deep
    int8 models amplify them. An export cannot be held closer than this (normwise)."""
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    if not layers:
        return 0.0
    gen = torch.Generator().manual_seed(0)

    def jitter(m: nn.Module, args: tuple) -> tuple:
        x = args[0]
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return (x + rel * x.abs() * noise, *args[1:])

    handles = [m.register_forward_pre_hook(jitter) for m in layers]
    try:
        out = reference_output(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return float((out - ref).norm() / ref.norm().clamp(min=1e-12))
