"""Exporters: compressed models out of modelzip into deployment runtimes (ONNX Runtime;
Hugging Face folders, dense or compressed-tensors).

They sit above the method packages (they know every compressed layer) and below the CLI.
"""

from .onnx_graph import export_onnx
from .onnx_summary import ExportSummary
from .onnx_verify import ExportError

__all__ = ["export_onnx", "ExportSummary", "ExportError"]
