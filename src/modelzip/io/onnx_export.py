"""ONNX export of a (compressed) model, checked and compared with onnxruntime.

Compressed layers export as what their forward pass computes: re-parametrised weights
become float initialisers (masked entries are zeros), so any ONNX runtime can run the
model. The file is written atomically and verified before it replaces the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelzipError, UnsupportedModelError


def export_onnx(model: nn.Module, path: str | os.PathLike, example_inputs: Any, *,
                opset: int = 17, check: bool = True, atol: float = 1e-4) -> Path:
    """Export ``model`` for ``example_inputs`` (a tensor or a tuple of tensors) to ``path``.

    The batch dimension is dynamic. With ``check`` the exported file is loaded by
    onnxruntime and its outputs compared with torch's within ``atol``.
    """
    import onnx

    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ModelzipError("export_onnx needs example inputs as a tensor or tuple of tensors")
    names = [f"input_{i}" for i in range(len(inputs))]
    axes = {n: {0: "batch"} for n in names} | {"output": {0: "batch"}}
    target = Path(path)
    model.eval()
    with tempfile.TemporaryDirectory(dir=target.parent if target.parent.is_dir() else None
                                     ) as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(model, inputs, str(tmp_path), input_names=names,
                                  output_names=["output"], dynamic_axes=axes,
                                  opset_version=opset, dynamo=False)
        except Exception as exc:  # the exporter raises many types; report one clear error
            raise UnsupportedModelError(f"ONNX export failed: {str(exc).splitlines()[0]}"
                                        ) from None
        onnx.checker.check_model(str(tmp_path))
        if check:
            _compare(model, inputs, tmp_path, names, atol)
        os.replace(tmp_path, target)
    return target


def _compare(model: nn.Module, inputs: tuple, path: Path, names: list[str],
             atol: float) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
    with torch.no_grad():
        ref = model(*inputs)
    ref = ref.logits if hasattr(ref, "logits") else ref
    err = float(np.abs(got - ref.numpy()).max())
    if err > atol:
        raise UnsupportedModelError(f"ONNX output differs from torch by {err:.3g} > {atol}")
