"""Base config, the registry of methods, and (de)serialisation through an allowlist.

A method is a config dataclass (what to do) plus a handler (how to do it), registered
with :func:`register`. Configs round-trip through dicts, JSON and YAML; only classes in
the registry can be named in a file, so loading a recipe never imports arbitrary code.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ConfigError
from .knobs import Knob

if TYPE_CHECKING:
    from torch import nn

# config name -> config class; config class -> handler
_CONFIGS: dict[str, type[Config]] = {}
_HANDLERS: dict[type, Callable[..., Any]] = {}

# The packages whose import registers the built-in methods and steps. They are imported
# on first use of the registry, so nothing depends on which module was imported first.
METHOD_PACKAGES = (
    "modelzip.pruning", "modelzip.quantization", "modelzip.clustering", "modelzip.distill",
    "modelzip.pipeline.steps",
)


@dataclass
class Config:
    """Base of every method config: layer selection plus validation.

    ``targets``: module types, type names ("Linear") or "re:<fqn regex>" to include;
    empty means the method's defaults. ``ignore``: the same forms, to exclude.
    """

    targets: list[Any] = field(default_factory=list, kw_only=True)
    ignore: list[Any] = field(default_factory=list, kw_only=True)

    kind: ClassVar[str] = "generic"  # verb family: prune, quantize, clip, cluster, step
    default_targets: ClassVar[tuple[str, ...]] = ("Linear", "Conv1d", "Conv2d")
    name: ClassVar[str | None] = None  # the name in recipes/files (default: class name)

    def __post_init__(self) -> None:
        for name in ("targets", "ignore"):
            value = getattr(self, name)
            if isinstance(value, (str, type)):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{type(self).__name__}.{name} must be a list, got {value!r}")
            for item in value:
                if not isinstance(item, (str, type)):
                    raise ConfigError(f"{type(self).__name__}.{name}: bad entry {item!r}")
            setattr(self, name, list(value))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on invalid settings; subclasses extend."""

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """This config's strength knob (None: applied as written, never weakened).

        Every method declares it (a test checks); ``model`` lets a knob start from what
        the model already has (e.g. sparsity cannot go below the zeros already there).
        """
        return None

    def at(self, value: Any) -> Config:
        """A copy of this config at strength ``value`` on its knob."""
        knob = self.knob()
        if knob is None:
            raise ConfigError(f"{type(self).__name__} has no strength knob")
        current = getattr(self, knob.field)
        return self.replace(**{knob.field: type(current)(value) if current is not None
                               else value})

    @classmethod
    def config_name(cls) -> str:
        """The name recipes and files use for this config."""
        return cls.name or cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"type": ClassName, field: value, ...}``."""
        out: dict[str, Any] = {"type": type(self).config_name()}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def register(handler: Callable[..., Any]) -> Callable[[type], type]:
    """Class decorator: register a config class and the handler that applies it."""

    def deco(cls: type) -> type:
        name = cls.config_name()
        if name in _CONFIGS and _CONFIGS[name].__qualname__ != cls.__qualname__:
            raise ConfigError(f"config name {name} registered twice")
        _CONFIGS[name] = cls
        _HANDLERS[cls] = handler
        return cls

    return deco


def unregister(cls: type) -> None:
    """Remove a config class from the registry (tests, plug-ins being unloaded)."""
    _CONFIGS.pop(cls.config_name(), None)
    _HANDLERS.pop(cls, None)


def _load_methods() -> None:
    for pkg in METHOD_PACKAGES:
        importlib.import_module(pkg)


def registered() -> dict[str, type[Config]]:
    """The allowlist: config name -> class (built-in methods are loaded on first use)."""
    _load_methods()
    return dict(_CONFIGS)


def handler_for(cfg: Config, kind: str | None = None) -> Callable[..., Any]:
    """The handler registered for ``cfg``; checks the verb family when ``kind`` is given."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a modelzip config, got {type(cfg).__name__}")
    if kind is not None and cfg.kind != kind:
        raise ConfigError(f"{type(cfg).__name__} is a '{cfg.kind}' config, not '{kind}'")
    _load_methods()
    try:
        return _HANDLERS[type(cfg)]
    except KeyError:
        raise ConfigError(f"no handler registered for {type(cfg).__name__}") from None


def from_dict(data: dict[str, Any]) -> Config:
    """Build a config from ``{"type": Name, ...}`` (or ``{Name: {...}}``), strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    data = dict(data)
    if "type" in data:
        name = data.pop("type")
        args = data
    elif len(data) == 1:
        name, args = next(iter(data.items()))
        args = dict(args or {})
    else:
        raise ConfigError("a config mapping needs a 'type' key")
    return build(name, args)


def build(name: str, args: dict[str, Any]) -> Config:
    """Instantiate registered config ``name`` with ``args``; unknown names/keys are errors."""
    cls = registered().get(name) if isinstance(name, str) else None
    if cls is None:
        valid = ", ".join(sorted(_CONFIGS))
        raise ConfigError(f"unknown config '{name}'; valid: {valid}")
    if not isinstance(args, dict):
        raise ConfigError(f"{name}: arguments must be a mapping, got {args!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args) - names)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; valid: {sorted(names)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in args
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{name} needs '{missing[0]}'")
    hints = typing.get_type_hints(cls)
    clean = {k: _coerce(name, k, v, hints.get(k)) for k, v in args.items()}
    try:
        return cls(**clean)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _coerce(cname: str, key: str, value: Any, hint: Any) -> Any:
    """Light coercion for YAML/JSON input: ints accepted where floats are expected, and
    strings such as ``1e-4`` (YAML 1.1 reads exponents without a dot as strings)."""
    floaty = hint is float or (typing.get_origin(hint) in (typing.Union, type(int | None))
                               and float in typing.get_args(hint))
    if floaty and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if floaty and isinstance(value, str):
        return number_from_text(value) if _NUMBER.fullmatch(value.strip()) else value
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def number_from_text(text: str) -> float:
    """A float from a YAML/CLI string like ``1e-4``."""
    return float(text.strip())


def from_json(text: str) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON config: {exc}") from None
    return from_dict(data)


def check_range(cfg: Config, name: str, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False) -> None:
    """Validate that numeric field ``name`` lies in [lo, hi] (optionally open ends)."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{type(cfg).__name__}.{name} must be a number, got {value!r}")
    bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
    if bad:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ConfigError(f"{type(cfg).__name__}.{name}={value} outside {lb}{lo}, {hi}{rb}")


def check_choice(cfg: Config, name: str, choices: tuple[Any, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name}={value!r}; choose one of {choices}")


def check_int(cfg: Config, name: str, lo: int, hi: int | None = None, *,
              optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{type(cfg).__name__}.{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{type(cfg).__name__}.{name}={value} outside [{lo}, {hi}]")
