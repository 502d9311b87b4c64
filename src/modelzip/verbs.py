"""The transform verbs: each looks up the config's handler and changes the model in place."""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import Config, handler_for
from .devices import resolve_device
from .hf_guard import guard_save_pretrained


def _apply(kind: str, model: nn.Module, cfg: Config, **ctx: Any) -> nn.Module:
    handler_for(cfg, kind)(model, cfg, **ctx)
    return guard_save_pretrained(model)  # transformers' own save would write garbage


def prune(model: nn.Module, cfg: Config, *, calib_data: Any = None,
          example_inputs: Any = None, device: Any = "cpu",
          checkpoint_dir: Any = None) -> nn.Module:
    """Prune ``model`` in place with a pruning config; returns the same model.

    ``device`` ("cpu", "cuda", "auto"): where calibrated methods compute, one block at a
    time (the model stays on the CPU); ``checkpoint_dir``: per-block checkpoints, so a
    killed calibrated run resumes (see docs/large-models.md).
    """
    return _apply("prune", model, cfg, calib_data=calib_data, example_inputs=example_inputs,
                  **_placement(device, checkpoint_dir))


def quantize(model: nn.Module, cfg: Config, *, calib_data: Any = None, device: Any = "cpu",
             checkpoint_dir: Any = None) -> nn.Module:
    """Quantize ``model`` in place with a quantization config; returns the same model.

    ``device`` and ``checkpoint_dir`` as for :func:`prune`.
    """
    return _apply("quantize", model, cfg, calib_data=calib_data,
                  **_placement(device, checkpoint_dir))


def _placement(device: Any, checkpoint_dir: Any) -> dict[str, Any]:
    resolve_device(device)  # a clear error up front (e.g. CUDA requested, none present)
    return {"device": device, "checkpoint_dir": checkpoint_dir}


def clip(model: nn.Module, cfg: Config) -> nn.Module:
    """Clip weights in place; returns the same model."""
    return _apply("clip", model, cfg)


def cluster(model: nn.Module, cfg: Config, *, device: Any = "cpu") -> nn.Module:
    """Share weights by clustering, in place; returns the same model. ``device``: where
    each layer's k-means runs (the layer stays where it is)."""
    resolve_device(device)
    return _apply("cluster", model, cfg, device=device)


def apply(model: nn.Module, cfg: Config, **ctx: Any) -> nn.Module:
    """Apply any registered config through its own verb family (used by recipes).

    ``ctx`` passes through to the handler (``calib_data``, ``device``, ``checkpoint_dir``).
    """
    if "device" in ctx:
        resolve_device(ctx["device"])
    handler_for(cfg)(model, cfg, **ctx)
    return guard_save_pretrained(model)
