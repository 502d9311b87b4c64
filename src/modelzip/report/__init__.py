"""Reports: a terminal table (rich) and a self-contained HTML page with plots."""

from .report import Report, layer_rows, report

__all__ = ["Report", "report", "layer_rows"]
