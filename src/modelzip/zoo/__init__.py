"""Reference models. Each records its architecture so that ``mz.load(path)`` rebuilds it."""

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
# arch "kind" -> builder from the arch record (zoo here; Hugging Face registers "hf")
_ARCH_KINDS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_zoo(name: str, fn: Callable[..., nn.Module]) -> None:
    """Add a named builder (``fn(**kwargs)`` returns a model with ``_mz_arch`` set)."""
    _BUILDERS[name] = fn


def register_arch_kind(kind: str, fn: Callable[[dict[str, Any]], nn.Module]) -> None:
    _ARCH_KINDS[kind] = fn


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


def _from_zoo(arch: dict[str, Any]) -> nn.Module:
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict) or not isinstance(arch.get("name"), str):
        raise FormatError("bad zoo architecture record")
    if arch["name"] not in _BUILDERS:
        raise FormatError(f"file names unknown zoo model {arch['name']!r}")
    try:
        return _BUILDERS[arch["name"]](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FormatError(f"bad zoo model arguments: {exc}") from None


_ARCH_KINDS["zoo"] = _from_zoo


def from_arch(arch: Any) -> nn.Module:
    """Build a model from the architecture record stored in a file."""
    if arch is None:
        raise ModelzipError("the file records no architecture: pass model= to mz.load")
    if not isinstance(arch, dict) or arch.get("kind") not in _ARCH_KINDS:
        raise FormatError(f"unknown architecture record {str(arch)[:80]!r}")
    return _ARCH_KINDS[arch["kind"]](arch)


from .resnet import resnet_small  # noqa: E402

register_zoo("resnet_small", resnet_small)

__all__ = ["resnet_small", "lenet300", "lenet5", "mlp128", "tiny_gpt", "TinyGPT", "build",
           "names", "from_arch", "register_zoo", "register_arch_kind", "student"]
