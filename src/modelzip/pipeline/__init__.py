"""Pipelines: recipes, the requirement, the one compression loop (runner) and what is
built on it: compress, auto_compress, prune_until, deep_compression; sensitivity."""

from .auto import auto_compress
from .compress import compress
from .recipe import Recipe, builtin_recipes
from .requirement import Requirement
from .result import CompressionResult
from .sensitivity import sensitivity
from .steps import Convert, Distill, Evaluate, Finetune
from .wrappers import deep_compression, prune_until

__all__ = ["Recipe", "builtin_recipes", "compress", "auto_compress", "CompressionResult",
           "Requirement", "sensitivity", "deep_compression", "prune_until", "Finetune",
           "Distill", "Evaluate", "Convert"]
