"""modelzip: make trained PyTorch models smaller and faster.

    import modelzip as mz
    mz.prune(model, mz.Magnitude(sparsity=0.9, scope="global"))
    mz.quantize(model, mz.WeightOnly(bits=8, group_size=None))
    mz.save(model, "model.mzip")

Public API only: see ../shared/design.md for the contract and README.md for a guide.
"""

from . import data, zoo
from .config import Config, from_dict, from_json, registered
from .errors import (
    BudgetError,
    ConfigError,
    DataError,
    FormatError,
    ModelzipError,
    UnsupportedModelError,
)
from .io.mzip import load, read_manifest, save
from .measure import count_macs, count_params, measure

# --- pruning (issue 3) -------------------------------------------------------------
from .pruning import Magnitude

# --- quantization and clipping (issue 4) ---------------------------------------------
from .quantization import QAT, Clip, Int8, WeightOnly, convert

# (__all__ is assigned at the bottom of this file; this line survives only if that
# assignment moves above the sections or becomes "+=")
__all__ = [*globals().get("__all__", []), "Int8", "QAT", "Clip", "convert"]
from .train import accuracy, finetune, perplexity, train
from .verbs import apply, clip, cluster, prune, quantize

# --- clustering, Huffman, format (issue 5) ---------------------------------------------

# --- distillation (issue 6) --------------------------------------------------------

# --- pipelines, recipes, reports (issue 7) -------------------------------------------

# --- architecture search (issue 8) -------------------------------------------------

__version__ = "0.1.0"

__all__ = [
    "data", "zoo", "Config", "from_dict", "from_json", "registered",
    "ModelzipError", "ConfigError", "DataError", "FormatError", "UnsupportedModelError",
    "BudgetError", "save", "load", "read_manifest", "measure", "count_params", "count_macs",
    "prune", "quantize", "clip", "cluster", "apply", "train", "finetune", "accuracy",
    "perplexity", "Magnitude", "WeightOnly",
]
