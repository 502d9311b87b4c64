"""``mz.save_pretrained``: a Hugging Face folder out of a modelzip model, verified.

The folder is written to a temporary sibling, loaded by transformers in a fresh process
and compared with modelzip's own outputs, and only then renamed into place: a failed
export leaves nothing behind.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelzipError
from ..quantization.int8 import Int8Linear
from ..state import refresh, reparams
from .hf_dense import dense_twin, save_dense
from .hf_verify import example_inputs, model_output, verify_folder

FORMATS = ("dense", "compressed-tensors")
TOLERANCE = 1e-4  # max abs difference on logits for dense and weight-only exports


def folder_bytes(folder: Path) -> int:
    """Total bytes of the files in ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _check_target(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ModelzipError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ModelzipError(f"{folder} exists and is not empty (pass overwrite=True / --force)")


def _publish(tmp: Path, folder: Path) -> None:
    old = None
    if folder.is_dir():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tolerance(model: nn.Module, inputs: dict, ref: Any) -> tuple[float, float | None]:
    """1e-4, or for models with int8 activations 3x the activation quantization error
    (e = modelzip's W8A8 output against the same weights with float activations): both
    runtimes quantize activations to int8, each about e from the float result, with
    their own rounding (compressed-tensors divides per-token ranges by 127.5, modelzip
    by 127), and a head that the export keeps dense runs with float activations."""
    if not any(isinstance(m, Int8Linear) for m in model.modules()):
        return TOLERANCE, None
    twin, _ = dense_twin(model)
    act_err = float((model_output(twin, inputs) - ref).abs().max())
    return TOLERANCE + 3 * act_err, act_err


def reference_model(plain: nn.Module, copied: bool) -> tuple[nn.Module, str | None]:
    """The model the folder is checked against (modelzip's dequantized model: the plain
    layers, whose forward is dequantize-then-matmul like transformers'), and the dtype
    transformers loads the folder in. A half-precision model is checked in float32 on
    both sides (integer codes stay codes; upcast in place when ``plain`` is already a
    copy): what is compared is the folder's content, not two bf16 kernels' rounding."""
    dtype = getattr(plain, "dtype", torch.float32)
    if dtype == torch.float32 or not dtype.is_floating_point:
        return plain, None
    ref = plain if copied else copy.deepcopy(plain)
    ref.__dict__.pop("save_pretrained", None)
    ref.float()
    for *_, meta in reparams(ref):  # dequantize to float32 too
        meta.pop("dtype", None)
    refresh(ref)
    return ref, "float32"


def _plain_layers(model: nn.Module) -> nn.Module:
    """Packed weight-only layers as plain layers holding the same codes (a copy; the
    caller's model stays packed): the writers read codes, scales and zero points there."""
    from ..quantization.packed_convert import PackedBase, unpack_model

    if not any(isinstance(m, PackedBase) for m in model.modules()):
        return model
    plain = unpack_model(copy.deepcopy(model), torch.float32)  # exact dequantized weights
    for attr in ("_mz_arch", "save_pretrained"):
        if attr in model.__dict__:
            plain.__dict__[attr] = model.__dict__[attr]
    return plain


def save_pretrained(model: nn.Module, folder: str | os.PathLike, format: str = "dense", *,
                    verify: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write ``model`` (a transformers model, compressed or not) as a Hugging Face folder.

    ``format="dense"``: float weights with masks, clusters and codes applied;
    ``"compressed-tensors"``: integer codes in the format vLLM serves (see
    :mod:`modelzip.export.hf_ctensors`). ``verify`` loads the folder with transformers in
    a fresh process and raises unless its load report is clean and its outputs match.
    Returns the export summary (layers kept dense and why, config changes, bytes).
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {format!r}")
    folder = Path(folder)
    _check_target(folder, overwrite)
    plain = _plain_layers(model)
    copied, model = plain is not model, plain
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        if format == "dense":
            summary = save_dense(model, tmp)
        else:
            from .hf_ctensors import save_ctensors

            summary = save_ctensors(model, tmp)
        summary["format"] = summary.get("format", format) if format != "dense" else "dense"
        if verify:
            check, dtype = reference_model(model, copied)
            inputs = example_inputs(check)
            ref = model_output(check, inputs)
            tol, act_err = _tolerance(check, inputs, ref)
            summary["verify"] = verify_folder(tmp, ref, inputs, tol, dtype)
            del check
            if act_err is not None:
                summary["verify"]["activation_quant_error"] = act_err
        _publish(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["folder"] = str(folder)
    summary["bytes"] = folder_bytes(folder)
    return summary
