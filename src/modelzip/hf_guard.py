"""No silent garbage from transformers' own ``save_pretrained``.

On a model that modelzip has compressed, ``model.save_pretrained`` would write the
bookkeeping tensors (``weight_codes``, ``weight_scale``, masks, int8 modules) under names
that ``from_pretrained`` ignores, and the folder would reload with random weights. The
instance's ``save_pretrained`` is therefore replaced (never the class's) by one that
delegates while the model holds no modelzip state and otherwise raises a clear error
pointing at ``mz.save_pretrained``.
"""

from __future__ import annotations

import types
from typing import Any

from torch import nn

from .errors import ModelzipError
from .state import is_registered_module, iter_masks


def has_compression_state(model: nn.Module) -> bool:
    """Whether any module carries modelzip codes, codebooks, masks or compressed modules."""
    if any(True for _ in iter_masks(model)):
        return True
    return any(getattr(m, "_mz_reparam", None) or is_registered_module(m)
               for m in model.modules())


class SavePretrainedError(ModelzipError):
    """transformers' save_pretrained called on a modelzip-compressed model."""


def _guarded_save_pretrained(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    if has_compression_state(self):
        raise SavePretrainedError(
            "this model is compressed by modelzip: transformers' save_pretrained would write "
            "weight_codes/scales/masks that from_pretrained ignores (the folder would reload "
            "with random weights); use mz.save_pretrained(model, folder, format='dense' or "
            "'compressed-tensors') or `modelzip export FILE --format hf|compressed-tensors`")
    return type(self).save_pretrained(self, *args, **kwargs)


def guard_save_pretrained(model: nn.Module) -> nn.Module:
    """Install the guard on ``model`` if it is a transformers-style model; returns it."""
    cls_method = getattr(type(model), "save_pretrained", None)
    if callable(cls_method) and hasattr(model, "config") and \
            "save_pretrained" not in model.__dict__:
        model.save_pretrained = types.MethodType(_guarded_save_pretrained, model)
    return model
