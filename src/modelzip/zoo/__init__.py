"""Reference models. Each records its architecture (kind ``zoo``) so that ``mz.load(path)``
rebuilds it; :func:`from_record` is that kind's builder in modelzip.io.arch's table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import FormatError, ModelzipError
from .models import TinyGPT, lenet5, lenet300, mlp128, tiny_gpt
from .students import student

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300, "lenet5": lenet5, "mlp128": mlp128, "tiny_gpt": tiny_gpt,
}


def register_zoo(name: str, fn: Callable[..., nn.Module]) -> None:
    """Add a named builder (``fn(**kwargs)`` returns a model with ``_mz_arch`` set)."""
    _BUILDERS[name] = fn


def names() -> list[str]:
    return sorted(_BUILDERS)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate zoo model ``name``."""
    fn = _BUILDERS.get(name)
    if fn is None:
        raise ModelzipError(f"unknown zoo model '{name}'; available: {', '.join(names())}")
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise ModelzipError(f"zoo model '{name}': {exc}") from None


def from_record(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a zoo model from its architecture record ``{"kind": "zoo", "name", "kwargs"}``."""
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict) or not isinstance(arch.get("name"), str):
        raise FormatError("bad zoo architecture record")
    if arch["name"] not in _BUILDERS:
        raise FormatError(f"file names unknown zoo model {arch['name']!r}")
    try:
        return _BUILDERS[arch["name"]](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FormatError(f"bad zoo model arguments: {exc}") from None


def from_arch(arch: Any, *, trust_code: bool = False) -> nn.Module:
    """Build a model from any architecture record stored in a file (see modelzip.io.arch)."""
    from ..io.arch import build

    return build(arch, trust_code=trust_code)


from .resnet import resnet_small  # noqa: E402

register_zoo("resnet_small", resnet_small)

__all__ = ["resnet_small", "lenet300", "lenet5", "mlp128", "tiny_gpt", "TinyGPT", "build",
           "names", "from_arch", "from_record", "register_zoo", "student"]
