"""Which layers a config applies to: ``targets`` / ``ignore`` by type, type name or fqn regex."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from .config import Config
from .errors import ConfigError


def _matches(fqn: str, module: nn.Module, spec: object) -> bool:
    if isinstance(spec, type):
        return isinstance(module, spec)
    if isinstance(spec, str):
        if spec.startswith("re:"):
            try:
                return re.fullmatch(spec[3:], fqn) is not None
            except re.error as exc:
                raise ConfigError(f"bad regex {spec!r}: {exc}") from None
        if spec == fqn:
            return True
        return any(cls.__name__ == spec for cls in type(module).__mro__)
    raise ConfigError(f"bad layer selector {spec!r}")


def select(model: nn.Module, cfg: Config,
           defaults: Iterable[object] | None = None) -> list[tuple[str, nn.Module]]:
    """Leaf-ish modules chosen by ``cfg.targets`` (or defaults) minus ``cfg.ignore``.

    A module matched by ``ignore`` is skipped together with its children.
    """
    targets = list(cfg.targets) or list(defaults if defaults is not None else cfg.default_targets)
    ignored: list[str] = []
    chosen: list[tuple[str, nn.Module]] = []
    for fqn, module in model.named_modules():
        if any(fqn == p or fqn.startswith(p + ".") for p in ignored):
            continue
        if fqn and any(_matches(fqn, module, s) for s in cfg.ignore):
            ignored.append(fqn)
            continue
        if any(_matches(fqn, module, s) for s in targets):
            chosen.append((fqn, module))
    return chosen


def weight_layers(model: nn.Module, cfg: Config,
                  defaults: Iterable[object] | None = None) -> list[tuple[str, nn.Module]]:
    """Selected modules that carry a floating-point ``weight``."""
    out = []
    for fqn, module in select(model, cfg, defaults):
        w = getattr(module, "weight", None)
        if w is not None and hasattr(w, "dtype") and w.dtype.is_floating_point:
            out.append((fqn, module))
    return out
