"""modelzip: make trained PyTorch models smaller and faster.

    import modelzip as mz
    mz.prune(model, mz.Magnitude(sparsity=0.9, scope="global"))
    mz.quantize(model, mz.WeightOnly(bits=8, group_size=None))
    mz.save(model, "model.mzip")

This module holds the public API only (re-exports); README.md is the guide and
docs/architecture.md describes how the package is laid out.
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
from .knobs import Knob
from .measure import count_macs, count_params, measure
from .train import accuracy, finetune, perplexity, train
from .verbs import apply, clip, cluster, prune, quantize

# methods
from . import pruning
from .pruning import (
    NM,
    Depth,
    Heads,
    Magnitude,
    Neurons,
    SparseGPT,
    Structured,
    Wanda,
    cubic_schedule,
    iterative_prune,
)
from .quantization import QAT, Clip, Int8, WeightOnly, convert
from .quantization import pack_model as pack
from .quantization import unpack_model as unpack
from .clustering import Cluster
from .distill import Distillation, distill, distill_recovery
from . import nas
from .nas import SearchResult, SearchSpace, search_architecture

# files and exports
from .io.mzip import dumps, load, loads, read_manifest, save
from .export import export_onnx
from .export.hf_save import save_pretrained

# pipelines and reports
from .pipeline import (
    CompressionResult,
    Convert,
    Distill,
    Evaluate,
    Finetune,
    Recipe,
    Requirement,
    auto_compress,
    compress,
    deep_compression,
    prune_until,
    sensitivity,
)
from .pipeline.stream import compress_pretrained
from .report import Report, report
from .errors import SignatureError
from .trust.api import trust

__version__ = "0.1.0"

__all__ = [
    "data", "zoo", "Config", "Knob", "from_dict", "from_json", "registered",
    "ModelzipError", "ConfigError", "DataError", "FormatError", "UnsupportedModelError",
    "BudgetError", "measure", "count_params", "count_macs", "prune", "quantize", "clip",
    "cluster", "apply", "train", "finetune", "accuracy", "perplexity",
    "pruning", "Magnitude", "NM", "SparseGPT", "Structured", "Wanda", "Heads", "Neurons",
    "Depth", "pack", "unpack", "cubic_schedule",
    "iterative_prune", "WeightOnly", "Int8", "QAT", "Clip", "convert", "Cluster",
    "Distillation", "distill", "distill_recovery", "nas", "search_architecture",
    "SearchSpace", "SearchResult",
    "save", "load", "dumps", "loads", "read_manifest", "export_onnx", "save_pretrained",
    "Recipe", "Requirement", "compress", "CompressionResult", "auto_compress",
    "deep_compression", "prune_until", "sensitivity", "compress_pretrained",
    "Finetune", "Distill", "Evaluate",
    "Convert", "Report", "report", "trust", "SignatureError",
]
