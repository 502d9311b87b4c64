"""Putting decoded tensors into a model: build the recorded architecture (or take the
caller's model), swap in compressed module classes, restore extra state and resized
layers, install masks and re-parametrisations, then fill every value.

Module classes and re-parametrisation kinds are looked up by name in the allowlists of
:mod:`modelzip.state`, which import the method that defines a built-in name on first use:
this layer never imports a method package.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import state
from ..errors import FormatError, ModelzipError
from . import arch as arch_records
from .bounds import (
    arch_limit,
    bounded_build,
    check_declared,
    numel,
    parameters_uninitialised,
)
from .consistency import check_consistent, check_forward
from .manifest import MAX_NUMEL, SELF_CONTAINED, SHAPE_ATTRS, Contents, need, split_key
from .reader import decode_tensors

# kinds built once on the meta device first, to bound their size by the file's (a factory
# is not: that would run user code twice)
PROBED = ("zoo", "nas", "hf")
_BUILD_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                 ArithmeticError, MemoryError, NotImplementedError, AssertionError)


def _submodule(model: nn.Module, fqn: str) -> nn.Module:
    need(isinstance(fqn, str), "bad module path")
    try:
        return model.get_submodule(fqn)
    except AttributeError:
        raise FormatError(f"file refers to module {fqn!r}, which the model lacks") from None


def _apply_structure(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Swap in compressed module classes, restore extra state and layer sizes."""
    for fqn, rec in manifest["modules"].items():
        need(isinstance(rec, dict) and isinstance(rec.get("spec"), dict), "bad module record")
        cls = state.module_class(str(rec.get("class")))
        _submodule(model, fqn)
        new = cls.mz_from_spec(rec["spec"])
        if fqn:
            model.set_submodule(fqn, new)
        else:
            raise FormatError("the root module cannot be replaced")
    for fqn, value in manifest["extra"].items():
        _submodule(model, fqn).set_extra_state(value)
    for fqn, attrs in manifest["attrs"].items():
        m = _submodule(model, fqn)
        names = SHAPE_ATTRS.get(type(m))
        need(isinstance(attrs, dict) and names is not None and set(attrs) == set(names),
             f"bad layer attributes for {fqn!r}")
        for a in names:
            v = attrs[a]
            ok = (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_NUMEL) or (
                isinstance(v, list) and all(isinstance(x, int) and x > 0 for x in v))
            need(ok, f"bad attribute {a} for {fqn!r}")
            setattr(m, a, tuple(v) if isinstance(v, list) else v)


def _install_reparams(model: nn.Module, tensors: dict[str, torch.Tensor], params: set[str],
                      manifest: dict[str, Any]) -> set[str]:
    """Install every re-parametrisation; returns the keys already placed for good."""
    installed: set[str] = set()
    for fqn, names in manifest["reparam"].items():
        m = _submodule(model, fqn)
        need(isinstance(names, dict), "bad re-parametrisation record")
        for name, meta in names.items():
            need(isinstance(meta, dict) and state.is_reparam_kind(meta.get("kind")),
                 f"bad re-parametrisation for {fqn}.{name}")
            prefix = f"{fqn}.{name}_" if fqn else f"{name}_"
            parts = {k[len(prefix):]: v for k, v in tensors.items()
                     if k.startswith(prefix) and k[len(prefix):] != "mask"}
            need(bool(parts), f"no tensors for re-parametrised {fqn}.{name}")
            trainable = tuple(s for s in parts if prefix + s in params)
            state.install_reparam(m, name, meta, parts, trainable)
            if meta["kind"] in SELF_CONTAINED:
                installed.update(prefix + s for s in parts)
    return installed


def _place(model: nn.Module, tensors: dict[str, torch.Tensor], params: set[str],
           widths: dict[str, tuple[int, bool]], manifest: dict[str, Any]) -> None:
    """Create masks, re-parametrisations and resized tensors, then fill every value."""
    for key, t in tensors.items():
        fqn, name = split_key(key)
        if name.endswith("_mask") and t.dtype == torch.bool:
            m = _submodule(model, fqn)
            m._buffers.pop(name, None)
            m.register_buffer(name, t)
    installed = _install_reparams(model, tensors, params, manifest)
    for key, (bits, signed) in widths.items():
        fqn, name = split_key(key)
        state.set_bits(_submodule(model, fqn), name, bits, signed)
    _resize(model, tensors)
    rest = {k: v for k, v in tensors.items() if k not in installed}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state") and k not in installed]
    need(not missing, f"file lacks tensors the model needs: {missing[:5]}")
    need(not unexpected, f"file has tensors the model lacks: {unexpected[:5]}")
    with torch.no_grad():  # kinds that may depend on state loaded after their install
        for _, m, name, meta in state.reparams(model):
            if meta.get("kind") not in SELF_CONTAINED:
                m.__dict__[name] = state.materialize(m, name)


def _differs(have: torch.Tensor, stored: torch.Tensor) -> bool:
    """Shape changed (pruned), or a float dtype other than the one stored (the rebuilt
    architecture is fp32; a bf16 model stays bf16 instead of being upcast on load)."""
    return have.shape != stored.shape or (
        have.dtype != stored.dtype and have.is_floating_point() and stored.is_floating_point())


def _resize(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Replace plain tensors whose stored shape or float dtype differs (layers shrunk by
    pruning, bf16 models). Looks at each module's own parameters and buffers (not
    ``model.state_dict()``, which makes packed layers unpack every code just to report
    shapes)."""
    for key, t in tensors.items():
        fqn, name = split_key(key)
        try:
            m = model.get_submodule(fqn)
        except AttributeError:
            continue  # reported by load_state_dict as an unexpected key
        if name in m._parameters and m._parameters[name] is not None:
            if _differs(m._parameters[name], t):
                m._parameters[name] = nn.Parameter(torch.empty_like(t), requires_grad=True)
        elif name in m._buffers and m._buffers[name] is not None \
                and name not in m._non_persistent_buffers_set:
            if _differs(m._buffers[name], t):
                m._buffers[name] = torch.empty_like(t)


def _probe(build: Any, limit: int, what: str) -> nn.Module:
    """What ``build()`` makes, on the meta device (no memory), stopped as soon as it
    passes ``limit`` elements (see bounds.py)."""
    with torch.device("meta"), bounded_build(limit, what):
        return build()


def _probe_specs(manifest: dict[str, Any], limit: int) -> int:
    """Build every compressed module the file names on the meta device first: a spec
    asking for a huge (or impossible, e.g. group size 0) layer fails before allocating."""
    total = 0
    for rec in manifest["modules"].values():
        need(isinstance(rec, dict) and isinstance(rec.get("spec"), dict), "bad module record")
        cls = state.module_class(str(rec.get("class")))
        total += numel(_probe(lambda c=cls, r=rec: c.mz_from_spec(r["spec"]), limit,
                              f"the {cls.__name__} spec"))
    return total


def _bounded_model(manifest: dict[str, Any], model: nn.Module | None, size: int,
                   trust_code: bool) -> tuple[nn.Module | None, nn.Module | None, int]:
    """(model built now or None: build it after decoding; the meta-device reference of
    the recorded architecture or None; elements the model may hold)."""
    reference = None
    arch, limit = manifest.get("arch"), arch_limit(size)
    try:
        if model is None:
            need(arch is None or (isinstance(arch, dict) and isinstance(arch.get("kind"), str)),
                 "bad architecture record")
            if isinstance(arch, dict) and arch.get("kind") in PROBED:
                reference = _probe(lambda: arch_records.build(arch), limit,
                                   "the recorded architecture")
                elements = numel(reference)
            else:  # none recorded (error), or user code the caller trusts
                model = arch_records.build(arch, trust_code=trust_code)
                elements = numel(model)
        else:
            elements = numel(model)
        return model, reference, elements + _probe_specs(manifest, limit)
    except ModelzipError:
        raise
    except _BUILD_ERRORS as exc:
        raise FormatError(f"cannot build the recorded architecture: {exc}"[:300]) from None


def validate(contents: Contents) -> None:
    """Every check :func:`restore` makes that needs no model (for ``inspect``): the
    recorded architecture and layer specs sized on the meta device, the declared elements
    bounded by them, and every tensor decoded and checked. Factory code is never run."""
    manifest = contents.manifest
    arch = manifest.get("arch")
    if isinstance(arch, dict) and arch.get("kind") in PROBED:
        _, _, elements = _bounded_model(manifest, None, contents.size, False)
        if manifest.get("version") != 1:
            check_declared(manifest, elements)
    else:
        need(arch is None or (isinstance(arch, dict) and arch.get("kind") in
                              arch_records.kinds()), "bad architecture record")
        try:
            _probe_specs(manifest, arch_limit(contents.size))
        except ModelzipError:
            raise
        except _BUILD_ERRORS as exc:
            raise FormatError(f"bad layer spec: {exc}"[:300]) from None
    decode_tensors(manifest, contents.streams)


def build_model(arch: Any, stored: int, trust_code: bool = False) -> nn.Module:
    """The recorded architecture, refused when it holds far more elements than a file of
    ``stored`` elements/bytes can describe (built on the meta device first)."""
    need(arch is None or (isinstance(arch, dict) and isinstance(arch.get("kind"), str)),
         "bad architecture record")
    try:
        if isinstance(arch, dict) and arch.get("kind") in PROBED:
            _probe(lambda: arch_records.build(arch), arch_limit(stored),
                   "the recorded architecture")
        return arch_records.build(arch, trust_code=trust_code)
    except ModelzipError:
        raise
    except _BUILD_ERRORS as exc:
        raise FormatError(f"cannot build the recorded architecture: {exc}"[:300]) from None


def restore(contents: Contents, model: nn.Module | None = None, *,
            trust_code: bool = False) -> nn.Module:
    """The model held by parsed ``contents``: ``model`` filled in place, or (None) the
    architecture the file records, rebuilt (factory code only with ``trust_code``).

    The model is sized (on the meta device) before any tensor is decoded, and the file's
    declared elements are bounded by it (bounds.py)."""
    manifest = contents.manifest
    model, reference, elements = _bounded_model(manifest, model, contents.size, trust_code)
    if manifest.get("version") != 1:
        check_declared(manifest, elements)
    tensors, params, widths = decode_tensors(manifest, contents.streams)
    try:
        if model is None:
            with parameters_uninitialised():  # the file holds every parameter
                model = arch_records.build(manifest["arch"])
        _apply_structure(model, manifest)
        _place(model, tensors, params, widths, manifest)
        check_consistent(model)
        check_forward(model, manifest.get("arch"), reference)
    except ModelzipError:
        raise
    except _BUILD_ERRORS as exc:
        raise FormatError(f"file does not fit the model: {exc}".splitlines()[0][:300]) from None
    model._mz_arch = manifest.get("arch")
    return model.eval()
