"""Running exported files in ONNX Runtime: an nn.Module facade (so ``mz.accuracy`` /
``mz.perplexity`` / any ``evaluate`` work unchanged), latency, and ``measure`` figures."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelzipError


def session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (``threads`` intra-op threads; None: ORT's default)."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelzipError(f"no such ONNX file: {p}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types for malformed files
        raise ModelzipError(f"ONNX Runtime cannot load {p}: {str(exc).splitlines()[0]}"
                            ) from None


class OrtModule(nn.Module):
    """An ONNX file behind an nn.Module: positional or keyword tensors in, tensor out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.sess = session(path, threads)
        self.input_names = [i.name for i in self.sess.get_inputs()]

    def feeds(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        if kwargs:
            return {k: v.detach().cpu().numpy() for k, v in kwargs.items()
                    if k in self.input_names}
        if len(args) != len(self.input_names):
            raise ModelzipError(f"{self.path.name} takes {len(self.input_names)} inputs "
                                f"({', '.join(self.input_names)}), got {len(args)}")
        return {n: a.detach().cpu().numpy() for n, a in zip(self.input_names, args,
                                                            strict=True)}

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.from_numpy(self.sess.run(None, self.feeds(*args, **kwargs))[0])


def latency(module: OrtModule, example: Any, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one ORT run on ``example`` (tensor, tuple or dict)."""
    if isinstance(example, dict):
        feeds = module.feeds(**example)
    else:
        feeds = module.feeds(*(example if isinstance(example, (tuple, list)) else (example,)))
    for _ in range(warmup):
        module.sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module.sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_in_ort(model: nn.Module, example_inputs: Any, *, evaluate: Any = None,
                   repeats: int = 20, num_threads: int | None = None,
                   export_kw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``model`` (verified), then latency_s / metric measured in ONNX Runtime, and
    onnx_bytes: the figures of ``mz.measure(..., runtime="onnxruntime")``."""
    from .onnx_graph import export_onnx

    if example_inputs is None:
        raise ModelzipError("runtime='onnxruntime' needs example_inputs")
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_onnx(model, Path(tmp) / "model.onnx", example_inputs,
                              sizes=False, **(export_kw or {}))
        ort_model = OrtModule(summary.path, num_threads)
        out: dict[str, Any] = {"runtime": "onnxruntime", "onnx_bytes": summary.file_bytes,
                               "onnx_operators": summary.operators,
                               "latency_s": latency(ort_model, example_inputs,
                                                    repeats=repeats)}
        if evaluate is not None:
            out["metric"] = float(evaluate(ort_model))
    return out
