"""Search spaces as data: a family (mlp, cnn, tiny_gpt), the choices of each dimension,
which dimensions are chosen per layer, and the fixed facts (input shape, classes, vocab).

A space is a small readable mapping (YAML or a dict), validated strictly::

    family: mlp
    input_shape: [1, 28, 28]
    num_classes: 10
    choices: {depth: [1, 2, 3], width: [16, 32, 64, 128], activation: [relu, gelu]}
    per_layer: [width]          # width_0, width_1, width_2 are chosen separately

A *sample* is a flat mapping of parameter names to chosen values (Optuna's ``params``);
:meth:`SearchSpace.normalise` drops the per-layer entries that the chosen depth leaves
unused, so that two samples naming one architecture compare equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "leaky_relu")
HEADS = ("flatten", "gap")  # cnn classifier input: all features, or global average pooling

# family -> dimension -> (kind, default choices); kind "int" (positive), "act", "bool" or
# "head". The cnn family's batchnorm/head default to one choice (the original plain net).
_DIMS: dict[str, dict[str, tuple[str, list[Any]]]] = {
    "mlp": {"depth": ("int", [1, 2, 3]), "width": ("int", [16, 32, 64, 128, 256]),
            "activation": ("act", ["relu", "gelu", "tanh"])},
    "cnn": {"depth": ("int", [1, 2, 3]), "channels": ("int", [4, 8, 16, 32]),
            "kernel": ("int", [3, 5]), "hidden": ("int", [16, 32, 64, 128]),
            "activation": ("act", ["relu", "gelu"]),
            "batchnorm": ("bool", [False]), "head": ("head", ["flatten"])},
    "tiny_gpt": {"n_layer": ("int", [1, 2, 3]), "d_model": ("int", [32, 64, 96]),
                 "n_head": ("int", [1, 2, 4]), "ffn_mult": ("int", [1, 2, 4]),
                 "activation": ("act", ["gelu", "relu"])},
}
_DEPTH = {"mlp": "depth", "cnn": "depth", "tiny_gpt": "n_layer"}
_PER_LAYER = {"mlp": ("width",), "cnn": ("channels", "kernel"), "tiny_gpt": ()}
# fixed facts: name -> (required, default)
_FIXED: dict[str, dict[str, tuple[bool, Any]]] = {
    "mlp": {"input_shape": (True, None), "num_classes": (True, None)},
    "cnn": {"input_shape": (True, None), "num_classes": (True, None), "pools": (False, 2)},
    "tiny_gpt": {"vocab_size": (True, None), "seq_len": (True, None)},
}
FAMILIES = tuple(_DIMS)


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


@dataclass
class SearchSpace:
    """The choices of one architecture family (see the module docstring for the format)."""

    family: str
    choices: dict[str, list[Any]] = field(default_factory=dict)
    per_layer: list[str] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in _DIMS:
            raise ConfigError(f"space.family={self.family!r}; choose one of {FAMILIES}")
        dims = _DIMS[self.family]
        if not isinstance(self.choices, dict):
            raise ConfigError("space.choices must be a mapping of dimension -> list")
        for key in self.choices:
            if key not in dims:
                raise ConfigError(f"space.choices.{key}: unknown dimension for family "
                                  f"{self.family!r}; valid: {sorted(dims)}")
        self.choices = {k: list(self.choices.get(k, dims[k][1])) for k in dims}
        for key, values in self.choices.items():
            self._check_values(key, values)
        if not isinstance(self.per_layer, (list, tuple)):
            raise ConfigError("space.per_layer must be a list of dimension names")
        for key in self.per_layer:
            if key not in _PER_LAYER[self.family]:
                raise ConfigError(f"space.per_layer: {key!r} cannot vary per layer in "
                                  f"{self.family!r}; valid: {list(_PER_LAYER[self.family])}")
        self.per_layer = list(dict.fromkeys(self.per_layer))
        self._check_fixed()
        self._check_family()

    def _check_values(self, key: str, values: list[Any]) -> None:
        kind = _DIMS[self.family][key][0]
        if not values:
            raise ConfigError(f"space.choices.{key} must list at least one value")
        if len(set(map(json.dumps, values))) != len(values):
            raise ConfigError(f"space.choices.{key} lists a value twice: {values}")
        for v in values:
            if kind == "int" and not _pos_int(v):
                raise ConfigError(f"space.choices.{key}: {v!r} is not a positive integer")
            if kind == "act" and v not in ACTIVATIONS:
                raise ConfigError(f"space.choices.{key}: unknown activation {v!r}; "
                                  f"valid: {ACTIVATIONS}")
            if kind == "bool" and not isinstance(v, bool):
                raise ConfigError(f"space.choices.{key}: {v!r} is not true or false")
            if kind == "head" and v not in HEADS:
                raise ConfigError(f"space.choices.{key}: unknown head {v!r}; valid: {HEADS}")

    def _check_fixed(self) -> None:
        spec = _FIXED[self.family]
        for key in self.fixed:
            if key not in spec:
                raise ConfigError(f"space.{key}: not a setting of family {self.family!r}; "
                                  f"valid: {sorted(spec)}")
        for key, (_, default) in spec.items():
            if self.fixed.get(key) is None and default is not None:
                self.fixed[key] = default
        for key, value in self.fixed.items():
            if value is None:
                continue
            if key == "input_shape":
                if (not isinstance(value, (list, tuple)) or len(value) != 3
                        or not all(_pos_int(v) for v in value)):
                    raise ConfigError(f"space.input_shape must be [channels, height, width], "
                                      f"got {value!r}")
                self.fixed[key] = list(value)
            elif key == "pools" and (isinstance(value, bool) or not isinstance(value, int)
                                     or value < 0):
                raise ConfigError(f"space.pools must be a non-negative integer, got {value!r}")
            elif key != "pools" and not _pos_int(value):
                raise ConfigError(f"space.{key} must be a positive integer, got {value!r}")

    def _check_family(self) -> None:
        shape = self.fixed.get("input_shape")
        if self.family == "cnn" and shape and shape[1] != shape[2]:
            raise ConfigError(f"space.input_shape: cnn spaces need square images, got {shape}")
        if self.family == "cnn":
            bad = [k for k in self.choices["kernel"] if k % 2 == 0]
            if bad:
                raise ConfigError(f"space.choices.kernel: kernels must be odd, got {bad}")
        if self.family == "tiny_gpt":
            for d in self.choices["d_model"]:
                for h in self.choices["n_head"]:
                    if d % h:
                        raise ConfigError(f"space.choices.n_head: {h} does not divide "
                                          f"d_model {d}")

    # ------------------------------------------------------------------ data form
    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        """Build from ``{"family": ..., "choices": {...}, "per_layer": [...], <fixed>}``."""
        if isinstance(data, SearchSpace):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"a search space must be a mapping, got {type(data).__name__}")
        data = dict(data)
        family = data.pop("family", None)
        if family is None:
            raise ConfigError("space: missing key 'family'")
        choices = data.pop("choices", {}) or {}
        per_layer = data.pop("per_layer", []) or []
        if family in _FIXED:
            fixed = {k: data.pop(k) for k in list(data) if k in _FIXED[family]}
        else:
            fixed = {}
        if data:
            raise ConfigError(f"space: unknown key(s) {sorted(data)}; valid: family, choices, "
                              f"per_layer, {', '.join(sorted(_FIXED.get(family, {})))}")
        return cls(family, choices, per_layer, fixed)

    @classmethod
    def from_yaml(cls, source: str | Path) -> SearchSpace:
        """Load a space from a YAML file path or YAML text."""
        text = str(source)
        p = Path(text)
        if "\n" not in text and p.suffix in (".yaml", ".yml", ".json"):
            if not p.is_file():
                raise ConfigError(f"search space file {text} not found")
            text = p.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML search space: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **{k: v for k, v in self.fixed.items() if v is not None},
                "choices": {k: list(v) for k, v in self.choices.items()},
                "per_layer": list(self.per_layer)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_fixed(self, **facts: Any) -> SearchSpace:
        """A copy with fixed facts filled in (only those not set already)."""
        fixed = dict(self.fixed)
        for k, v in facts.items():
            if k in _FIXED[self.family] and fixed.get(k) is None and v is not None:
                fixed[k] = v
        return SearchSpace(self.family, self.choices, self.per_layer, fixed)

    def require_fixed(self) -> None:
        missing = [k for k, (req, _) in _FIXED[self.family].items()
                   if req and self.fixed.get(k) is None]
        if missing:
            raise ConfigError(f"space ({self.family}) needs {', '.join(missing)}: set them in "
                              "the space or pass train_data from a built-in dataset")

    # ------------------------------------------------------------------ parameters
    @property
    def depth_key(self) -> str:
        return _DEPTH[self.family]

    @property
    def max_depth(self) -> int:
        return max(self.choices[self.depth_key])

    def params(self) -> dict[str, list[Any]]:
        """Flat parameter name -> choices (per-layer dimensions expanded to ``key_i``)."""
        out: dict[str, list[Any]] = {}
        for key, values in self.choices.items():
            if key in self.per_layer:
                for i in range(self.max_depth):
                    out[f"{key}_{i}"] = list(values)
            else:
                out[key] = list(values)
        return out

    def layer_value(self, sample: dict[str, Any], key: str, i: int) -> Any:
        """The value of dimension ``key`` at layer ``i`` of ``sample``."""
        return sample[f"{key}_{i}"] if key in self.per_layer else sample[key]

    def normalise(self, sample: Any, error: type[Exception] = ConfigError) -> dict[str, Any]:
        """Validate ``sample`` and drop per-layer entries beyond the chosen depth."""
        if not isinstance(sample, dict):
            raise error(f"an architecture sample must be a mapping, got {sample!r}")
        params = self.params()
        for name, value in sample.items():
            if name not in params:
                raise error(f"sample: unknown parameter {name!r}")
            if value not in params[name]:
                raise error(f"sample: {name}={value!r} is not one of {params[name]}")
        depth = sample.get(self.depth_key)
        if depth is None:
            raise error(f"sample: missing {self.depth_key!r}")
        out: dict[str, Any] = {}
        for name in params:
            key, _, idx = name.rpartition("_")
            if key in self.per_layer and idx.isdigit() and int(idx) >= depth:
                continue
            if name not in sample and len(params[name]) == 1:
                out[name] = params[name][0]  # nothing to choose (older records lack it)
                continue
            if name not in sample:
                raise error(f"sample: missing {name!r}")
            out[name] = sample[name]
        return out

    def size(self) -> int:
        """Number of distinct architectures in the space."""
        total = 0
        for depth in self.choices[self.depth_key]:
            n = 1
            for key, values in self.choices.items():
                if key == self.depth_key:
                    continue
                n *= len(values) ** (depth if key in self.per_layer else 1)
            total += n
        return total


def sample_key(sample: dict[str, Any]) -> str:
    """A canonical string of a normalised sample (for de-duplication)."""
    return json.dumps(sample, sort_keys=True)


def space(family: str | dict[str, Any] | SearchSpace | Path, data: Any = None,
          **overrides: Any) -> SearchSpace:
    """A built-in space (``"mlp"``, ``"cnn"``, ``"tiny_gpt"``), a YAML path or a mapping.

    ``data``: a ``Split`` or loader of a built-in dataset, to fill the input shape, the
    number of classes or the vocabulary. ``overrides``: choices (``width=[8, 16]``),
    ``per_layer=[...]`` or fixed facts (``num_classes=10``).
    """
    if isinstance(family, SearchSpace):
        base = family
    elif isinstance(family, dict):
        base = SearchSpace.from_dict(family)
    elif isinstance(family, (str, Path)) and str(family) in _DIMS:
        base = SearchSpace(str(family), {}, list(_PER_LAYER[str(family)][:1]))
    elif isinstance(family, Path) or (isinstance(family, str) and (
            "\n" in family or Path(family).suffix in (".yaml", ".yml", ".json"))):
        base = SearchSpace.from_yaml(family)
    elif isinstance(family, str):
        raise ConfigError(f"unknown search space {family!r}: use a family {FAMILIES} or a "
                          ".yaml file")
    else:
        raise ConfigError(f"cannot make a search space from {type(family).__name__}")
    d = base.to_dict()
    for k, v in overrides.items():
        if k in _DIMS[base.family]:
            d["choices"][k] = v
        else:
            d[k] = v
    out = SearchSpace.from_dict(d)
    return out.with_fixed(**facts_of(data)) if data is not None else out


def facts_of(data: Any) -> dict[str, Any]:
    """Fixed facts (input_shape, num_classes, vocab_size, seq_len) of a built-in dataset."""
    loader = getattr(data, "train", data)
    meta = dict(getattr(getattr(loader, "dataset", None), "meta", {}) or {})
    return {k: meta.get(k) for k in ("input_shape", "num_classes", "vocab_size", "seq_len")
            if meta.get(k) is not None}
