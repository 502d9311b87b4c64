"""Architecture records: how a .mzip names the model it holds, and how that model is
rebuilt from the file alone.

One table maps each record ``kind`` to the module that rebuilds it; the module is imported
when a file of that kind is loaded, so no kind depends on what was imported before (a
Hugging Face file loads in a fresh process). Every builder module exposes
``from_record(arch) -> nn.Module``:

* ``zoo``  - a built-in model by name and keyword arguments (modelzip.zoo)
* ``nas``  - a searched architecture: the space and the sample (modelzip.nas.builder)
* ``hf``   - a Hugging Face model: its config and an allowlisted transformers class
  (modelzip.io.hf); recorded automatically when a ``transformers`` model is saved
* ``factory`` - ``{"factory": "pkg.mod:fn", "kwargs": {...}}``: user code. Loading it
  imports and runs that code, so it happens only when the caller passes
  ``trust_code=True`` (``--trust-code`` in the CLI).
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

from torch import nn

from ..errors import ConfigError, FormatError, ModelzipError

# kind -> module (relative to this package's parent, modelzip) holding from_record(arch)
KINDS: dict[str, str] = {"zoo": ".zoo", "nas": ".nas.builder", "hf": ".io.hf"}
FACTORY = "factory"
_ROOT = __name__.rsplit(".", 2)[0]  # "modelzip": anchors the relative names above
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class UntrustedCodeError(ModelzipError):
    """Loading the file would import and run user code, and the caller did not allow it."""


def kinds() -> tuple[str, ...]:
    """Every architecture kind a file may record."""
    return (*KINDS, FACTORY)


def record_of(model: nn.Module) -> dict[str, Any] | None:
    """The architecture record to store for ``model`` (None: the loader must pass model=).

    Models from the zoo, NAS, factories and :func:`modelzip.io.hf.load_pretrained` carry
    one in ``model._mz_arch``; any other ``transformers`` model is recorded from its config.
    """
    arch = getattr(model, "_mz_arch", None)
    if arch is not None:
        return arch
    tf = sys.modules.get("transformers")  # a transformers model implies it was imported
    if tf is not None and isinstance(model, tf.PreTrainedModel):
        return builder_module("hf").record(model)
    return None


def builder_module(kind: str) -> Any:
    """The module that rebuilds ``kind`` (imported now if it was not before)."""
    return importlib.import_module(KINDS[kind], _ROOT)


def build(arch: Any, *, trust_code: bool = False) -> nn.Module:
    """Rebuild the model an architecture record describes (with fresh weights)."""
    if arch is None:
        raise ModelzipError("the file records no architecture: pass model= to mz.load")
    if not isinstance(arch, dict) or arch.get("kind") not in kinds():
        raise FormatError(f"unknown architecture record {str(arch)[:80]!r}")
    if arch["kind"] == FACTORY:
        return _from_factory_record(arch, trust_code)
    if arch["kind"] == "nas":
        _check_nas_choices(arch.get("space"))
    return builder_module(arch["kind"]).from_record(arch)


MAX_CHOICE, MAX_CHOICES = 1 << 16, 4096


def _check_nas_choices(space: Any) -> None:
    """A NAS space expands per-layer choices ``max(depth)`` times before anything is built,
    so a record with depth choice 2**31 would loop for minutes: bound the choice lists
    (every integer <= MAX_CHOICE, at most MAX_CHOICES values in all) first."""
    choices = space.get("choices") if isinstance(space, dict) else None
    if not isinstance(choices, dict):
        return  # the builder reports the malformed record
    values = [v for vs in choices.values() if isinstance(vs, list) for v in vs]
    if len(values) > MAX_CHOICES or any(
            isinstance(v, int) and not isinstance(v, bool) and v > MAX_CHOICE for v in values):
        raise FormatError(f"nas architecture record: choices over {MAX_CHOICE:,} or more "
                          f"than {MAX_CHOICES:,} values")


def check_factory(spec: Any) -> str:
    """``spec`` if it is a ``package.module:function`` name, else ConfigError."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ConfigError(f"model factory must look like package.module:function, got {spec!r}")
    return spec


def from_factory(spec: str, **kwargs: Any) -> nn.Module:
    """Import ``package.module:function``, call it with ``kwargs`` and record the factory in
    the model, so that a saved file can rebuild it (with ``trust_code=True``).

    A model that already records an architecture (zoo, NAS, Hugging Face) keeps its own.
    """
    mod_name, _, attr = check_factory(spec).partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelzipError(f"cannot import model factory '{spec}': {exc}") from None
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"'{spec}' did not return an nn.Module")
    if record_of(model) is None:
        record = {"kind": FACTORY, "factory": spec}
        if kwargs:
            record["kwargs"] = kwargs
        model._mz_arch = record
    return model


def _from_factory_record(arch: dict[str, Any], trust_code: bool) -> nn.Module:
    spec, kwargs = arch.get("factory"), arch.get("kwargs", {})
    if not (set(arch) <= {"kind", "factory", "kwargs"} and isinstance(spec, str)
            and _SPEC.match(spec) and isinstance(kwargs, dict)):
        raise FormatError("bad factory architecture record")
    if not trust_code:
        raise UntrustedCodeError(
            f"this file's model is built by code `{spec}`; pass trust_code=True / "
            "--trust-code to import and run it")
    try:
        return from_factory(spec, **kwargs)
    except TypeError as exc:
        raise FormatError(f"factory `{spec}` rejects the recorded arguments: {exc}") from None


def describe(arch: Any) -> str:
    """One line naming the architecture a file records (for inspect)."""
    if not isinstance(arch, dict):
        return "none recorded (load with model=)"
    kind = arch.get("kind")
    if kind == FACTORY:
        return f"factory `{arch.get('factory')}` (user code: rebuilt only with trust_code)"
    if kind == "zoo":
        return f"zoo {arch.get('name')}"
    if kind == "hf":
        return f"Hugging Face {arch.get('class') or arch.get('auto_class')}"
    if kind == "nas":
        space = arch.get("space")
        return f"searched {space.get('family') if isinstance(space, dict) else '?'}"
    return f"unknown kind {str(kind)[:40]!r}"
