"""Load-time consistency checks: a file whose manifest was edited (with valid checksums)
must fail at load with FormatError, not later inside ``forward``.

* :func:`check_consistent`: every layer's recorded sizes (``attrs``: in/out features,
  channels, groups, norm sizes) agree with the tensors it actually holds;
* :func:`check_forward`: the loaded model runs one tiny input that the recorded
  architecture (the unedited reference, built on the meta device: no memory) accepts.
  This catches edits of ``extra`` (e.g. attention head counts), dtypes and re-
  parametrisations that only show in the forward pass.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, ModelzipError
from .manifest import need

_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError,
           ArithmeticError, NotImplementedError, AssertionError)
IMAGE_SIZES = (28, 32, 8, 16, 64, 224)


def _shape(m: nn.Module, name: str) -> tuple[int, ...] | None:
    t = getattr(m, name, None)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _expected(m: nn.Module) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape that the layer's size attributes imply."""
    if isinstance(m, nn.Linear):
        return {"weight": (m.out_features, m.in_features), "bias": (m.out_features,)}
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        need(m.groups > 0 and m.in_channels % m.groups == 0
             and m.out_channels % m.groups == 0, "bad convolution groups")
        return {"weight": (m.out_channels, m.in_channels // m.groups, *m.kernel_size),
                "bias": (m.out_channels,)}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        n = (m.num_features,)
        return {"weight": n, "bias": n, "running_mean": n, "running_var": n}
    if isinstance(m, nn.LayerNorm):
        return {"weight": tuple(m.normalized_shape), "bias": tuple(m.normalized_shape)}
    if isinstance(m, nn.GroupNorm):
        need(m.num_groups > 0 and m.num_channels % m.num_groups == 0, "bad group norm")
        return {"weight": (m.num_channels,), "bias": (m.num_channels,)}
    if isinstance(m, nn.Embedding):
        return {"weight": (m.num_embeddings, m.embedding_dim)}
    return {}


def check_consistent(model: nn.Module) -> None:
    """Every standard layer's size attributes match the tensors it holds."""
    for fqn, m in model.named_modules():
        for name, shape in _expected(m).items():
            got = _shape(m, name)
            need(got is None or got == shape,
                 f"layer {fqn or '<root>'}: {name} has shape {list(got or ())}, its recorded "
                 f"sizes say {list(shape)}")


def _candidates(model: nn.Module, arch: Any) -> list[torch.Tensor]:
    """Tiny inputs the model may take, guessed from its first layer with weights."""
    first = next((m for m in model.modules() if not list(m.children())
                  and isinstance(getattr(m, "weight", None), torch.Tensor)), None)
    if isinstance(first, nn.Embedding):
        return [torch.zeros(1, 2, dtype=torch.long)]
    if isinstance(first, nn.Conv2d):
        kw = arch.get("kwargs", {}) if isinstance(arch, dict) else {}
        sizes = [kw["image_size"]] if isinstance(kw, dict) and isinstance(
            kw.get("image_size"), int) and 0 < kw["image_size"] <= 512 else []
        return [torch.zeros(1, first.in_channels, s, s) for s in (*sizes, *IMAGE_SIZES)]
    if isinstance(first, nn.Conv1d):
        return [torch.zeros(1, first.in_channels, 16)]
    features = getattr(first, "in_features", None)
    if isinstance(features, int) and 0 < features <= 1 << 20:
        return [torch.zeros(1, features)]
    return []


def _runs(model: nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            model(x)
        return True
    except (*_ERRORS, ModelzipError):
        return False


_ACCEPTED: dict[str, int] = {}  # arch record -> index of the input it accepts (-1: none)


def _accepted(reference: nn.Module, arch: Any, inputs: list[torch.Tensor]) -> int:
    """Index of the first input the reference accepts (cached per record: the meta-device
    forward costs tens of milliseconds)."""
    try:  # by digest: a Hugging Face record carries its tokenizer files (~1 MB)
        key = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _ACCEPTED:
        return _ACCEPTED[key]
    found = next((i for i, x in enumerate(inputs) if _runs(reference, x.to("meta"))), -1)
    if key is not None:
        if len(_ACCEPTED) > 256:
            _ACCEPTED.clear()
        _ACCEPTED[key] = found
    return found


def check_forward(model: nn.Module, arch: Any, reference: nn.Module | None) -> None:
    """Run one tiny input through the loaded model, if the recorded architecture (the
    meta-device ``reference``) accepts it; a failure means the file is inconsistent."""
    if reference is None:
        return
    inputs = _candidates(reference, arch)
    i = _accepted(reference, arch, inputs)
    if i < 0:
        return
    x, training = inputs[i], model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except (*_ERRORS, ModelzipError) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise FormatError(f"the loaded model fails on a {list(x.shape)} input that its "
                          f"architecture accepts: {msg}") from None
    finally:
        model.train(training)
