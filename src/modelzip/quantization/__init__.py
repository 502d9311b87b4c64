"""Quantization: weight-only (RTN/GPTQ/AWQ), int8 activations, QAT."""

from .weight_only import WeightOnly

__all__ = ["WeightOnly"]
