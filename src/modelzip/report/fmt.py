"""Text formatting of report figures, shared by the terminal table and the HTML page."""

from __future__ import annotations

from typing import Any


def fmt_value(v: Any) -> str:
    """A figure as text: 4 significant digits for floats, thousands separators for ints."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)
