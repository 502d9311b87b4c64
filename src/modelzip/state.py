"""What compression leaves on a module, kept identical across training, saving and loading.

Three mechanisms, all visible in ``state_dict`` and all understood by ``mz.save``/``mz.load``:

* **Masks** - a bool buffer ``<name>_mask`` beside tensor ``<name>``. Kept fixed by
  ``mz.finetune``; stored sparsely (bitmask or relative indices) in the ``.mzip``.
* **Re-parametrised weights** - the float Parameter ``<name>`` is removed and rebuilt before
  every forward from other tensors (``<name>_codes`` + ``<name>_scale``, or codes + a
  trainable ``<name>_codebook``). ``module._mz_reparam[name]`` holds the kind and its JSON
  meta; the kind's ``compute`` lives in a registry (allowlist) filled by the methods.
* **Compressed module classes** - modules such as an int8 Linear, registered with
  :func:`register_module`, that describe themselves with ``mz_spec()`` and are rebuilt
  by ``mz_from_spec(spec)``.

Integer tensors may declare their true width in ``module._mz_bits[key] = (bits, signed)``
so that the file packs them to that many bits.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, FormatError

ComputeFn = Callable[[nn.Module, str, dict[str, Any]], torch.Tensor]
_REPARAM_KINDS: dict[str, ComputeFn] = {}
_MODULE_CLASSES: dict[str, type[nn.Module]] = {}
# Built-in kinds and classes -> the module (relative to modelzip) that registers them.
# Looked up on first use, so that a name resolves whatever was imported before, and this
# core module (and the .mzip format above it) never imports a method package.
BUILTIN_REPARAMS: dict[str, str] = {
    "affine": ".quantization.weight_only", "codebook": ".clustering", "lsq": ".quantization.qat",
}
BUILTIN_MODULES: dict[str, str] = {
    "Int8Linear": ".quantization.int8", "Int8Conv2d": ".quantization.int8",
    "PackedLinear": ".quantization.packed",
}
_ROOT = __name__.rpartition(".")[0]  # "modelzip"


def _import_builtin(table: dict[str, str], name: Any) -> None:
    """Import the module that registers built-in ``name`` (nothing for other names)."""
    if isinstance(name, str) and name in table:
        importlib.import_module(table[name], _ROOT)


# ----------------------------------------------------------------------------- masks
def set_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Attach (or replace) the fixed sparsity mask of tensor ``name`` and apply it."""
    mask = mask.to(torch.bool)
    key = f"{name}_mask"
    if key in module._buffers:
        module._buffers[key] = mask
    else:
        module.register_buffer(key, mask)
    if name in module._parameters or name in module._buffers:
        with torch.no_grad():
            getattr(module, name).mul_(mask)


def get_mask(module: nn.Module, name: str) -> torch.Tensor | None:
    return module._buffers.get(f"{name}_mask")


def iter_masks(model: nn.Module) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    """(module, tensor name, mask) for every mask in the model."""
    for module in model.modules():
        for key, buf in list(module._buffers.items()):
            if key.endswith("_mask") and buf is not None and buf.dtype == torch.bool:
                yield module, key[: -len("_mask")], buf


def enforce_masks(model: nn.Module) -> None:
    """Re-zero masked entries of plain tensors (after an optimizer step)."""
    with torch.no_grad():
        for module, name, mask in iter_masks(model):
            t = module._parameters.get(name)
            if t is None:
                t = module._buffers.get(name)
            if t is not None and t.shape == mask.shape:
                t.mul_(mask)


def mask_gradients(model: nn.Module) -> None:
    """Zero the gradients of masked entries (before an optimizer step)."""
    for module, name, mask in iter_masks(model):
        t = module._parameters.get(name)
        if t is not None and t.grad is not None and t.shape == mask.shape:
            t.grad.mul_(mask)


# ------------------------------------------------------------------ re-parametrisation
def register_reparam(kind: str) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: register how a re-parametrised tensor of ``kind`` is computed."""

    def deco(fn: ComputeFn) -> ComputeFn:
        _REPARAM_KINDS[kind] = fn
        return fn

    return deco


def reparam_kinds() -> tuple[str, ...]:
    """Every known kind: registered ones and the built-ins (imported on first use)."""
    return tuple(dict.fromkeys([*_REPARAM_KINDS, *BUILTIN_REPARAMS]))


def reparam_compute(kind: Any) -> ComputeFn | None:
    """The compute rule of re-parametrisation ``kind`` (None when unknown)."""
    if not isinstance(kind, str):
        return None
    if kind not in _REPARAM_KINDS:
        _import_builtin(BUILTIN_REPARAMS, kind)
    return _REPARAM_KINDS.get(kind)


def is_reparam_kind(kind: Any) -> bool:
    return reparam_compute(kind) is not None


def _sources_key(module: nn.Module, name: str) -> tuple:
    prefix = f"{name}_"
    return tuple((k, id(t), t._version) for store in (module._parameters, module._buffers)
                 for k, t in store.items() if k.startswith(prefix) and t is not None)


def _reparam_hook(module: nn.Module, args: Any) -> None:
    # with gradients on, rebuild every time (autograd needs the graph); without, reuse
    # the materialized tensor while none of its sources has changed
    cache = module.__dict__.setdefault("_mz_cache", {})
    grad = torch.is_grad_enabled()
    for name in module._mz_reparam:
        key = None if grad else _sources_key(module, name)
        if key is not None and cache.get(name) == key and name in module.__dict__:
            continue
        module.__dict__[name] = materialize(module, name)
        cache[name] = key


def _detach_hook(module: nn.Module, args: Any, output: Any) -> None:
    # autograd keeps its own references; the attribute is detached so deepcopy works
    for name in module._mz_reparam:
        t = module.__dict__.get(name)
        if t is not None and t.requires_grad:
            module.__dict__[name] = t.detach()


def materialize(module: nn.Module, name: str) -> torch.Tensor:
    """The float tensor ``name`` as the forward pass sees it (mask applied)."""
    meta = module._mz_reparam[name]
    fn = reparam_compute(meta["kind"])
    if fn is None:
        raise FormatError(f"unknown re-parametrisation kind {meta['kind']!r}")
    value = fn(module, name, meta)
    mask = get_mask(module, name)
    return value * mask if mask is not None else value


def install_reparam(module: nn.Module, name: str, meta: dict[str, Any],
                    tensors: dict[str, torch.Tensor], trainable: tuple[str, ...] = ()) -> None:
    """Replace tensor ``name`` by tensors ``<name>_<suffix>`` plus a compute rule.

    ``meta["kind"]`` must be a registered kind; ``trainable`` suffixes become Parameters.
    """
    if not is_reparam_kind(meta.get("kind")):
        raise ConfigError(f"unknown re-parametrisation kind {meta.get('kind')!r}")
    if name in module._parameters:
        del module._parameters[name]
    elif name in module._buffers:
        del module._buffers[name]
    else:
        uninstall_reparam(module, name, keep_value=False)
    for suffix, t in tensors.items():
        key = f"{name}_{suffix}"
        module._parameters.pop(key, None)
        module._buffers.pop(key, None)
        if suffix in trainable:
            module.register_parameter(key, nn.Parameter(t.detach().clone()))
        else:
            module.register_buffer(key, t.detach().clone())
    if not hasattr(module, "_mz_reparam"):
        module._mz_reparam = {}
    module._mz_reparam[name] = dict(meta)
    if not getattr(module, "_mz_hooked", False):
        module.register_forward_pre_hook(_reparam_hook)
        module.register_forward_hook(_detach_hook)
        module._mz_hooked = True
    with torch.no_grad():
        module.__dict__[name] = materialize(module, name)


def uninstall_reparam(module: nn.Module, name: str, keep_value: bool = True) -> None:
    """Turn a re-parametrised tensor back into a plain Parameter (its current value)."""
    meta = getattr(module, "_mz_reparam", {}).get(name)
    if meta is None:
        return
    value = materialize(module, name).detach().clone() if keep_value else None
    del module._mz_reparam[name]
    prefix = f"{name}_"
    for store in (module._parameters, module._buffers):
        for key in [k for k in store if k.startswith(prefix) and k != f"{name}_mask"]:
            del store[key]
    module.__dict__.pop(name, None)
    if value is not None:
        module.register_parameter(name, nn.Parameter(value))


def reparams(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, dict[str, Any]]]:
    """(module fqn, module, tensor name, meta) for every re-parametrised tensor."""
    for fqn, module in model.named_modules():
        for name, meta in getattr(module, "_mz_reparam", {}).items():
            yield fqn, module, name, meta


def refresh(model: nn.Module) -> None:
    """Recompute every re-parametrised tensor (after loading or editing its sources)."""
    with torch.no_grad():
        for _, module, name, _ in reparams(model):
            module.__dict__[name] = materialize(module, name)


def set_bits(module: nn.Module, key: str, bits: int, signed: bool) -> None:
    """Declare that integer tensor ``key`` of ``module`` uses only ``bits`` bits."""
    if not hasattr(module, "_mz_bits"):
        module._mz_bits = {}
    module._mz_bits[key] = (int(bits), bool(signed))


# ------------------------------------------------------------ compressed module classes
def register_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: allow ``cls`` in .mzip files (needs mz_spec / mz_from_spec)."""
    if not (hasattr(cls, "mz_spec") and hasattr(cls, "mz_from_spec")):
        raise TypeError(f"{cls.__name__} needs mz_spec() and mz_from_spec(spec)")
    _MODULE_CLASSES[cls.__name__] = cls
    return cls


def module_class(name: str) -> type[nn.Module]:
    """The registered compressed module class ``name`` (FormatError when not allowed)."""
    if name not in _MODULE_CLASSES:
        _import_builtin(BUILTIN_MODULES, name)
    try:
        return _MODULE_CLASSES[name]
    except KeyError:
        raise FormatError(f"unknown module class {name!r} in file") from None


def is_registered_module(module: nn.Module) -> bool:
    return _MODULE_CLASSES.get(type(module).__name__) is type(module)


def logical_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(fqn, float tensor) for every weight as the forward pass sees it.

    Plain parameters, re-parametrised tensors and the dequantized weights of registered
    compressed modules (via their optional ``mz_weights()``) all count once.
    """
    for fqn, module in model.named_modules():
        for name, p in module._parameters.items():
            if p is not None and not name.endswith("_codebook"):
                yield f"{fqn}.{name}" if fqn else name, p.detach()
        for name in getattr(module, "_mz_reparam", {}):
            yield f"{fqn}.{name}" if fqn else name, materialize(module, name).detach()
        if is_registered_module(module) and hasattr(module, "mz_weights"):
            for name, w in module.mz_weights().items():
                yield f"{fqn}.{name}" if fqn else name, w.detach()
