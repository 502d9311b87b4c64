"""Pruning methods: unstructured magnitude, structured, N:M, SparseGPT, Wanda."""

from .magnitude import Magnitude, magnitude_masks

__all__ = ["Magnitude", "magnitude_masks"]

from .schedule import cubic_schedule, iterative_prune  # noqa: E402

__all__ += ["cubic_schedule", "iterative_prune"]
