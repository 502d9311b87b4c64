"""Reference models. Each records its architecture (kind ``zoo``) so that ``mz.load(path)``
rebuilds it; :func:`from_record` is that kind's builder in modelzip.io.arch's table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import FormatError, ModelzipError
from .models import TinyGPT, lenet5, lenet300, mlp128, tiny_gpt
from .students import student

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300, "lenet5": lenet5, "mlp128": mlp128, "tiny_gpt": tiny_gpt,
}


def register_zoo(name: str, fn: Callable[..., nn.Module]) -> None:
    """Add a named builder (``fn(**kwargs)`` returns a model with ``_mz_arch`` set)."""
    BUILDERS[name] = fn


def names() -> list[str]:
    return sorted(BUILDERS)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate zoo model ``name``."""
    fn = BUILDERS.get(name)
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
    if arch["name"] not in BUILDERS:
        raise FormatError(f"file names unknown zoo model {arch['name']!r}")
    try:
        return BUILDERS[arch["name"]](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FormatError(f"bad zoo model arguments: {exc}") from None


from .resnet import resnet_small  # noqa: E402

register_zoo("resnet_small", resnet_small)

__all__ = ["resnet_small", "lenet300", "lenet5", "mlp128", "tiny_gpt", "TinyGPT", "build",
           "names", "from_record", "register_zoo", "student"]
