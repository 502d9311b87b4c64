"""Pipelines: recipes, the accuracy-driven compression loop, sensitivity, auto search."""

from .auto import auto_compress
from .compress import CompressionResult, compress
from .recipe import Recipe, builtin_recipes
from .sensitivity import sensitivity

__all__ = ["Recipe", "builtin_recipes", "compress", "auto_compress", "CompressionResult",
           "sensitivity"]
