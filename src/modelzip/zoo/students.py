"""Student builders for distillation: thinner or shallower zoo models, or a copy to compress.

``student("lenet5", width=0.5)`` halves every channel and hidden width;
``student(gpt, depth=0.5)`` keeps half the transformer blocks of a zoo tiny_gpt teacher;
``student(model, init="copy")`` is the "same architecture, compressed" student: an
independent copy of the teacher, to be pruned or quantized and then recovered by
distilling from the untouched original.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedModelError

# zoo name -> keyword arguments scaled by ``width``; by ``depth``
_WIDTH = {"lenet300": ("hidden",), "lenet5": ("channels", "hidden"), "mlp128": ("hidden",),
          "tiny_gpt": ("d_model", "d_ff")}
_DEPTH = {"tiny_gpt": "n_layer"}
INITS = ("random", "copy", "teacher")


def _arch(teacher: nn.Module | str) -> tuple[str, dict[str, Any]]:
    """(zoo name, builder kwargs) of a zoo name or of a model built by the zoo."""
    from . import BUILDERS

    if isinstance(teacher, str):
        if teacher not in BUILDERS:
            raise ConfigError(f"unknown zoo model {teacher!r}; available: {sorted(BUILDERS)}")
        params = inspect.signature(BUILDERS[teacher]).parameters.values()
        return teacher, {p.name: p.default for p in params if p.default is not p.empty}
    arch = getattr(teacher, "_mz_arch", None)
    if not (isinstance(arch, dict) and arch.get("kind") == "zoo"):
        raise UnsupportedModelError(f"{type(teacher).__name__} is not a zoo model: build "
                                    "the student yourself, or use init='copy'")
    return arch["name"], dict(arch.get("kwargs", {}))


def _scale(value: Any, factor: float, multiple: int = 1) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_scale(v, factor, multiple) for v in value]
    return max(multiple, round(value * factor / multiple) * multiple)


def _factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"student {name} must be a positive number, got {value!r}")
    return float(value)


def student(teacher: nn.Module | str, *, width: float = 1.0, depth: float = 1.0,
            init: str = "random", **overrides: Any) -> nn.Module:
    """A student for ``teacher`` (a zoo name or a zoo-built model).

    ``width`` scales hidden sizes and channels, ``depth`` the number of transformer
    blocks (tiny_gpt only); ``overrides`` set builder arguments directly. ``init``:
    "random" (fresh weights), "copy" (a deep copy of the teacher, for compress-then-
    recover) or "teacher" (tiny_gpt: same width, every k-th block copied from the
    teacher, as in DistilBERT).
    """
    width, depth = _factor("width", width), _factor("depth", depth)
    if init not in INITS:
        raise ConfigError(f"student init={init!r}; choose one of {INITS}")
    if init == "copy":
        if isinstance(teacher, str) or width != 1 or depth != 1 or overrides:
            raise ConfigError("init='copy' copies a teacher model as it is: pass the model, "
                              "no width/depth/overrides")
        return copy.deepcopy(teacher)
    from . import build

    name, kwargs = _arch(teacher)
    multiple = kwargs.get("n_head", 1) if name == "tiny_gpt" else 1
    for key in _WIDTH.get(name, ()):
        kwargs[key] = _scale(kwargs.get(key), width, multiple if key == "d_model" else 1)
    if depth != 1:
        if name not in _DEPTH:
            raise ConfigError(f"zoo model {name!r} has a fixed depth; depth is for "
                              f"{sorted(_DEPTH)}")
        kwargs[_DEPTH[name]] = _scale(kwargs[_DEPTH[name]], depth)
    kwargs.update(overrides)
    model = build(name, **kwargs)
    if init == "teacher":
        _copy_blocks(teacher, model)
    return model


def _copy_blocks(teacher: Any, model: nn.Module) -> None:
    """Initialise a shallower tiny_gpt from every k-th block of its teacher."""
    blocks_t, blocks_s = getattr(teacher, "blocks", None), getattr(model, "blocks", None)
    if not isinstance(teacher, nn.Module) or blocks_t is None or blocks_s is None:
        raise ConfigError("init='teacher' needs a tiny_gpt teacher model")
    keep = [i * len(blocks_t) // len(blocks_s) for i in range(len(blocks_s))]
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("blocks.")}
    for j, i in enumerate(keep):
        state.update({f"blocks.{j}.{k}": v for k, v in blocks_t[i].state_dict().items()})
    try:
        with torch.no_grad():
            model.load_state_dict({k: v.clone() if isinstance(v, torch.Tensor) else v
                                   for k, v in state.items()})
    except RuntimeError as exc:
        raise ConfigError(f"init='teacher' needs the teacher's width: {exc}") from None
