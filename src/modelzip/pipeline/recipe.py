"""Recipes: ordered stages, each a registered config: a method (Magnitude, WeightOnly...)
or a step (finetune, distill, evaluate, convert), written in Python or YAML and
validated strictly against the registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, build, registered
from ..errors import ConfigError

Stage = Config


def parse_stage(item: Any) -> Stage:
    """A stage from a config object or a one-key mapping ``{Name: {args}}``."""
    if isinstance(item, Config):
        return item
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"a stage must be a one-key mapping like {{Magnitude: {{...}}}}, "
                          f"got {str(item)[:80]!r}")
    name, args = next(iter(item.items()))
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise ConfigError(f"stage '{name}': arguments must be a mapping")
    if not isinstance(name, str) or name not in registered():
        valid = sorted(registered())
        raise ConfigError(f"unknown stage '{name}'; valid: {', '.join(valid)}")
    return build(name, args)


@dataclass
class Recipe:
    """An ordered list of stages with an optional name and description."""

    stages: list[Stage]
    name: str = "custom"
    description: str = ""
    model: str | None = None  # reference zoo model (for benchmarks and the CLI)
    data: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise ConfigError("a recipe needs a non-empty list of stages")
        self.stages = [parse_stage(s) for s in self.stages]

    @classmethod
    def from_dict(cls, data: Any, name: str = "custom") -> Recipe:
        if not isinstance(data, dict):
            raise ConfigError("a recipe must be a mapping with a 'stages' list")
        allowed = {"stages", "name", "description", "model", "data"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"recipe: unknown key(s) {unknown}; valid: {sorted(allowed)}")
        if "stages" not in data:
            raise ConfigError("recipe: missing 'stages'")
        for key in ("name", "description", "model", "data"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"recipe: '{key}' must be a string")
        return cls(list(data["stages"] or []), data.get("name", name),
                   data.get("description", ""), data.get("model"), data.get("data"))

    @classmethod
    def from_yaml(cls, text: str, name: str = "custom") -> Recipe:
        """A recipe from YAML text, bounded: at most MAX_YAML characters, and at most
        MAX_YAML_NODES values once aliases are expanded (an alias bomb is refused while
        it is walked, before anything expands it)."""
        if len(text) > MAX_YAML:
            raise ConfigError(f"recipe is over {MAX_YAML:,} characters")
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"recipe is not valid YAML: {str(exc)[:200]}") from None
        _check_size(data)
        return cls.from_dict(data, name)

    @classmethod
    def load(cls, ref: str | os.PathLike | Recipe) -> Recipe:
        """A Recipe from itself, a built-in name or a YAML file path."""
        if isinstance(ref, Recipe):
            return ref
        if isinstance(ref, (list, tuple)):
            return cls(list(ref))
        text_ref = str(ref)
        builtins = builtin_recipes()
        if text_ref in builtins:
            return cls.from_yaml(builtins[text_ref], text_ref)
        path = Path(text_ref)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return cls.from_yaml(path.read_text(encoding="utf-8"), path.stem)
        raise ConfigError(f"unknown recipe '{text_ref}': not a built-in "
                          f"({', '.join(sorted(builtins))}) nor a .yaml file")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        for k in ("model", "data"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        out["stages"] = [_stage_dict(s) for s in self.stages]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _stage_dict(stage: Stage) -> dict[str, Any]:
    d = stage.to_dict()
    name = d.pop("type")
    return {name: {k: v for k, v in d.items() if v != [] or k not in ("targets", "ignore")}}


MAX_YAML, MAX_YAML_NODES = 1 << 20, 100_000


def _check_size(data: Any) -> None:
    """Refuse YAML whose values, aliases expanded, exceed MAX_YAML_NODES (counted as the
    walk goes, so a billion-laughs document stops after MAX_YAML_NODES steps)."""
    stack, nodes = [data], 0
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > MAX_YAML_NODES:
            raise ConfigError(f"recipe has over {MAX_YAML_NODES:,} values (aliases expanded)")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def builtin_recipes() -> dict[str, str]:
    """Built-in recipe name -> YAML text."""
    folder = resources.files("modelzip") / "recipes"
    return {p.name[:-5]: p.read_text(encoding="utf-8") for p in folder.iterdir()
            if p.name.endswith(".yaml")}
