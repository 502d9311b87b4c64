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
from .io.onnx_export import export_onnx
from .measure import count_macs, count_params, measure
from .train import accuracy, finetune, perplexity, train
from .verbs import apply, clip, cluster, prune, quantize

__version__ = "0.1.0"

__all__ = [
    "data", "zoo", "Config", "from_dict", "from_json", "registered",
    "ModelzipError", "ConfigError", "DataError", "FormatError", "UnsupportedModelError",
    "BudgetError", "save", "load", "read_manifest", "export_onnx", "measure", "count_params",
    "count_macs", "prune", "quantize", "clip", "cluster", "apply", "train", "finetune",
    "accuracy", "perplexity",
]

# --- Hugging Face folders out (issue 15) ---------------------------------------------
from .export.hf_save import save_pretrained

__all__ += ["save_pretrained"]

# --- pruning (issue 3) -------------------------------------------------------------
from . import pruning
from .pruning import (
    NM,
    Magnitude,
    SparseGPT,
    Structured,
    Wanda,
    cubic_schedule,
    iterative_prune,
    prune_until,
)

__all__ += ["pruning", "Magnitude", "NM", "SparseGPT", "Structured", "Wanda",
            "cubic_schedule", "iterative_prune", "prune_until"]

# --- quantization and clipping (issue 4) ---------------------------------------------
from .quantization import QAT, Clip, Int8, WeightOnly, convert

__all__ += ["WeightOnly", "Int8", "QAT", "Clip", "convert"]

# --- clustering, Huffman, format (issue 5) ---------------------------------------------
from .clustering import Cluster
from .deep_compression import deep_compression

__all__ += ["Cluster", "deep_compression"]

# --- distillation (issue 6) --------------------------------------------------------
from .distill import Distillation, distill, distill_recovery

__all__ += ["Distillation", "distill", "distill_recovery"]

# --- pipelines, recipes, reports (issue 7) -------------------------------------------
from .pipeline import CompressionResult, Recipe, auto_compress, compress, sensitivity
from .report import Report, report

__all__ += ["Recipe", "compress", "CompressionResult", "sensitivity", "auto_compress",
            "Report", "report"]

# --- architecture search (issue 8) -------------------------------------------------
from . import nas
from .nas import SearchResult, SearchSpace, search_architecture

__all__ += ["nas", "search_architecture", "SearchSpace", "SearchResult"]
