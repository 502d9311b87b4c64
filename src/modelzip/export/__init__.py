"""Exporters: compressed models to deployment runtimes (ONNX Runtime).

They sit above the method packages (they know every compressed layer) and below the CLI.
"""

from .onnx_graph import export_onnx
from .onnx_summary import ExportSummary
from .onnx_verify import ExportError

__all__ = ["export_onnx", "ExportSummary", "ExportError"]
