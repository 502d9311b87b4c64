"""Measurement: parameters, nonzeros, stored bytes, MACs (forward hooks), latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from .batches import split_batch
from .errors import ModelzipError
from .state import logical_weights


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) as the forward pass sees them."""
    total = nonzero = 0
    for _, w in logical_weights(model):
        total += w.numel()
        nonzero += int(torch.count_nonzero(w))
    return total, nonzero


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as a plain fp32 safetensors file (the baseline)."""
    tensors = {k: w.float().contiguous() for k, w in logical_weights(model)}
    tensors.update({k: b.float().contiguous() for k, b in model.named_buffers()
                    if b.dtype.is_floating_point and not _is_codec_buffer(k)})
    return len(st_save(tensors))


def _is_codec_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1].rsplit("_", 1)[-1] in ("scale", "zero", "codes", "codebook")


def file_bytes(model: nn.Module, **save_kw: Any) -> int:
    """Bytes of the .mzip that ``mz.save`` writes for ``model`` (built in memory: no file)."""
    from .io.writer import dumps

    return len(dumps(model, **save_kw))


def _layer_macs(module: nn.Module, inp: tuple, out: Any) -> int:
    if not isinstance(out, torch.Tensor):
        return 0
    if hasattr(module, "mz_macs"):
        return int(module.mz_macs(inp, out))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        w = module.weight
        return out.numel() * w[0].numel()
    if isinstance(module, nn.Linear) or (hasattr(module, "in_features")
                                         and hasattr(module, "out_features")):
        return out.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass over ``example_inputs`` per example.

    Counts Linear and Conv layers (and compressed layers defining ``mz_macs``); attention
    score products and element-wise ops are not included.
    """
    total = 0

    def hook(module: nn.Module, inp: tuple, out: Any) -> None:
        nonlocal total
        total += _layer_macs(module, inp, out)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children()) or hasattr(m, "mz_macs")]
    try:
        with torch.no_grad():
            _call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return total // max(1, _batch_size(example_inputs))


def _call(model: nn.Module, example_inputs: Any) -> Any:
    args, kwargs, _ = split_batch(example_inputs) if not isinstance(
        example_inputs, torch.Tensor) else ((example_inputs,), {}, None)
    return model(*args, **kwargs)


def _batch_size(example_inputs: Any) -> int:
    x = example_inputs
    if isinstance(x, dict):
        x = next(iter(x.values()))
    if isinstance(x, (tuple, list)):
        x = x[0]
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


@contextmanager
def threads(n: int | None):
    """Temporarily run torch with ``n`` intra-op threads."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def latency(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 3,
            num_threads: int | None = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    with threads(num_threads), torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_latency(model: nn.Module, example_inputs: Any, **kw: Any) -> float:
    model.eval()
    return latency(lambda: _call(model, example_inputs), **kw)


def measure(model: nn.Module, *, evaluate: Callable[[nn.Module], float] | None = None,
            example_inputs: Any = None, repeats: int = 20, num_threads: int | None = None,
            save_kw: dict[str, Any] | None = None, runtime: str = "torch") -> dict[str, Any]:
    """The standard figures of a model.

    Returns params, nonzeros, sparsity, file_bytes (.mzip), fp32_bytes (plain safetensors),
    ratio, bits_per_param, and with ``example_inputs`` also macs and latency_s (median of
    ``repeats``); with ``evaluate`` also metric. ``runtime="onnxruntime"``: latency_s and
    metric come from the verified ONNX export run in ONNX Runtime (plus onnx_bytes).
    """
    if runtime not in ("torch", "onnxruntime"):
        raise ModelzipError("runtime must be 'torch' or 'onnxruntime'")
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"measure() needs an nn.Module, got {type(model).__name__}")
    params, nonzeros = count_params(model)
    fb = file_bytes(model, **(save_kw or {}))
    base = fp32_bytes(model)
    out: dict[str, Any] = {
        "params": params, "nonzeros": nonzeros,
        "sparsity": 1 - nonzeros / params if params else 0.0,
        "file_bytes": fb, "fp32_bytes": base, "ratio": base / fb,
        "bits_per_param": 8 * fb / params if params else 0.0,
    }
    if example_inputs is not None and runtime == "torch":
        out["macs"] = count_macs(model, example_inputs)
        out["latency_s"] = model_latency(model, example_inputs, repeats=repeats,
                                         num_threads=num_threads)
    if runtime == "onnxruntime":
        measure_in_ort = runtime_backend(runtime)
        out["macs"] = count_macs(model, example_inputs) if example_inputs is not None else None
        out.update(measure_in_ort(model, example_inputs, evaluate=evaluate, repeats=repeats,
                                  num_threads=num_threads))
        return out
    if evaluate is not None:
        out["metric"] = float(evaluate(model))
    return out


# Deployment runtimes measured by exporting the model: name -> "module:function", imported
# on first use (the exporters sit above this layer; a table keeps the import one-way).
RUNTIMES = {"onnxruntime": "modelzip.export.onnx_runtime:measure_in_ort"}


def runtime_backend(name: str) -> Any:
    """The function that measures a model in deployment runtime ``name``."""
    import importlib

    module, _, fn = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), fn)
