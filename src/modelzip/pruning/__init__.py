"""Pruning methods: unstructured magnitude, structured, N:M, SparseGPT, Wanda, and
transformer heads / neurons / depth."""

from .magnitude import Magnitude, magnitude_masks

__all__ = ["Magnitude", "magnitude_masks"]

from .schedule import cubic_schedule, iterative_prune  # noqa: E402

__all__ += ["cubic_schedule", "iterative_prune"]

from .calibrated import SparseGPT, Wanda  # noqa: E402
from .nm import NM  # noqa: E402
from .structured import Structured  # noqa: E402

__all__ += ["NM", "SparseGPT", "Wanda", "Structured"]

from .transformer_arch import restore_structure  # noqa: E402
from .transformer_prune import Depth, Heads, Neurons  # noqa: E402

__all__ += ["Heads", "Neurons", "Depth", "restore_structure"]
