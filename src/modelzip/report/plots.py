"""Matplotlib figures of a report (Agg backend, returned as PNG bytes)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def png_bytes(fig: Any) -> bytes:
    """The PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _png(fig: Any) -> bytes:
    try:
        return png_bytes(fig)
    finally:
        plt.close(fig)


def layers_png(layers: list[dict[str, Any]]) -> bytes:
    """Bars: bits per kept weight (values + index) and percent kept, per layer."""
    names = [r["layer"] for r in layers]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, max(2.5, 0.35 * len(names) + 1)))
    y = range(len(names))
    a.barh(y, [r["weight_bits_huffman"] for r in layers], label="weight bits")
    a.barh(y, [r["index_bits_huffman"] for r in layers],
           left=[r["weight_bits_huffman"] for r in layers], label="index bits")
    a.set_yticks(list(y), names, fontsize=7)
    a.invert_yaxis()
    a.set_xlabel("bits per kept weight (stored)")
    a.legend(fontsize=7)
    b.barh(y, [100 * r["kept"] for r in layers], color="tab:green")
    b.set_yticks(list(y), [""] * len(names))
    b.invert_yaxis()
    b.set_xlabel("weights kept (%)")
    fig.suptitle("per-layer storage")
    return _png(fig)


def attempts_png(history: list[dict[str, Any]]) -> bytes:
    """Scatter: metric against file size for every attempt of a compress run."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [h for h in history if h["passed"]]
    bad = [h for h in history if not h["passed"]]
    ax.scatter([h["bytes"] for h in ok], [h["metric"] for h in ok], c="tab:blue",
               label="meets requirement")
    ax.scatter([h["bytes"] for h in bad], [h["metric"] for h in bad], c="tab:red",
               marker="x", label="breaks requirement")
    ax.set_xscale("log")
    ax.set_xlabel("est. file bytes")
    ax.set_ylabel("metric")
    ax.legend(fontsize=8)
    ax.set_title("attempts: metric against size")
    return _png(fig)


def sensitivity_png(sens: dict[str, float]) -> bytes:
    """Bars: metric drop when each layer alone is compressed."""
    names = list(sens)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(names) + 1)))
    ax.barh(range(len(names)), [sens[n] for n in names], color="tab:orange")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("metric drop")
    ax.set_title("per-layer sensitivity")
    return _png(fig)
