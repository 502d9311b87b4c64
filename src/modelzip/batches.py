"""One convention for batches: a tensor, a (input, target, ...) tuple, or a kwargs dict."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import ModelzipError


def split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """(positional inputs, keyword inputs, target or None) of one batch."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    if isinstance(batch, (tuple, list)) and batch:
        return (batch[0],), {}, (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict):
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        return (), kwargs, batch.get("labels")
    raise ModelzipError(f"unsupported batch of type {type(batch).__name__}: use a tensor, "
                        "a (input, target) tuple or a dict of model keyword arguments")


def to_device(obj: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def forward(model: nn.Module, batch: Any, device: Any = None) -> tuple[Any, Any]:
    """Run ``model`` on one batch: (output, target)."""
    args, kwargs, target = split_batch(to_device(batch, device))
    return model(*args, **kwargs), target


def logits_of(output: Any) -> torch.Tensor:
    """The main tensor of a model output (plain tensor, tuple, or HF ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    raise ModelzipError(f"cannot find a tensor in model output of type {type(output).__name__}")


def take(data: Iterable[Any], n: int | None) -> Iterator[Any]:
    """At most ``n`` batches of ``data`` (all when n is None)."""
    for i, batch in enumerate(data):
        if n is not None and i >= n:
            return
        yield batch


def first_input(data: Iterable[Any]) -> Any:
    """The model input of the first batch (for example inputs and tracing)."""
    for batch in data:
        args, kwargs, _ = split_batch(batch)
        return args[0] if args else kwargs
    raise ModelzipError("the data yielded no batch")
