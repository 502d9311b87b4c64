"""What a compressed model looks like: per-layer storage, the attempts of a compress run,
layer sensitivity; as a rich table, PNG plots, and one self-contained HTML file."""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from torch import nn

from ..errors import ModelzipError
from ..io.inspect import layer_table
from ..io.mzip import read_contents, save
from ..io.safetensors_io import write_atomic
from ..measure import count_params, fp32_bytes, model_latency
from .fmt import fmt_value

# sizes a run measured on its own copy of the model; the report shows the file's instead
SIZE_KEYS = ("file_bytes", "ratio", "fp32_bytes")


def outcome(result: Any) -> list[tuple[str, list[str]]]:
    """What a compress run could not do, as (heading, lines) for the report."""
    if result is None:
        return []
    m = result.metrics
    out = [("Backed-off units", [str(u) for u in m.get("changed_units", [])]),
           ("Skipped units (no setting met the requirement)",
            [str(u) for u in m.get("skipped_units", [])])]
    if not m.get("complete", True):
        out.append(("Why the run is not complete",
                    [str(r) for r in m.get("incomplete_because", [])] or ["not recorded"]))
    return [(h, lines) for h, lines in out if lines]


def layer_rows(model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-layer storage rows of ``model`` as it would be saved (see io.inspect)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.mzip")
        save(model, path)
        return layer_table(read_contents(path))


@dataclass
class Report:
    """Figures of a (compressed) model, optionally against a baseline and a compress run."""

    title: str
    summary: dict[str, Any]
    layers: list[dict[str, Any]]
    totals: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    trust: dict[str, Any] | None = None  # a mz.trust() dict: the trust section
    outcome: list[tuple[str, list[str]]] = field(default_factory=list)

    def table(self) -> Table:
        """The per-layer table with totals (print it with rich)."""
        t = Table(title=self.title)
        for c in ("layer", "weights", "kept %", "weight bits", "index bits", "bytes"):
            t.add_column(c, justify="left" if c == "layer" else "right")
        for r in self.layers + [self.totals]:
            t.add_row(r["layer"], f"{r['weights']:,}", f"{100 * r['kept']:.1f}",
                      f"{r['weight_bits_huffman']:.2f}", f"{r['index_bits_huffman']:.2f}",
                      f"{r['bytes']:,}")
        return t

    def summary_table(self) -> Table:
        t = Table(title="summary")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for k, v in self.summary.items():
            t.add_row(k, fmt_value(v))
        return t

    def figures(self) -> dict[str, bytes]:
        """PNG plots: per-layer bits and sparsity; attempts; sensitivity."""
        from . import plots

        out = {"layers": plots.layers_png(self.layers)}
        if self.history:
            out["attempts"] = plots.attempts_png(self.history)
        if self.sensitivity:
            out["sensitivity"] = plots.sensitivity_png(self.sensitivity)
        if self.trust:
            from .trust_plots import figures as trust_figures

            out.update(trust_figures(self.trust))
        return out

    def plot(self, path: str | os.PathLike) -> Path:
        """Write the per-layer plot (and the others beside it, suffixed) as PNG files."""
        path = Path(path)
        figs = self.figures()
        write_atomic(path, figs.pop("layers"))
        for name, png in figs.items():
            write_atomic(path.with_name(f"{path.stem}-{name}{path.suffix}"), png)
        return path

    def to_html(self, path: str | os.PathLike) -> Path:
        """Write one self-contained HTML file (plots embedded; no scripts, no network)."""
        from .html_page import page

        text = page(self, {k: base64.b64encode(v).decode() for k, v in self.figures().items()})
        write_atomic(path, text.encode("utf-8"))
        return Path(path)


def report(model: nn.Module, baseline: nn.Module | None = None, *, result: Any = None,
           evaluate: Any = None, example_inputs: Any = None,
           sensitivity: dict[str, float] | None = None, title: str = "modelzip report",
           trust: dict[str, Any] | None = None,
           file: str | os.PathLike | None = None) -> Report:
    """Build a :class:`Report` of ``model`` (and ``baseline``, a compress ``result``,
    ``trust``: a ``mz.trust(baseline, model, data)`` dict for the trust section).

    ``file``: the .mzip the model was written to; its bytes are the size shown (without it,
    the model is saved to a temporary file and that file is measured). Sizes of a run's
    attempts are estimates (Huffman only, or the fast path for models over 16 MiB) and are
    labelled so."""
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"report() needs an nn.Module, got {type(model).__name__}")
    layers, totals = layer_table(read_contents(file)) if file is not None else layer_rows(model)
    params, nonzeros = count_params(model)
    summary: dict[str, Any] = {"parameters": params, "nonzeros": nonzeros,
                               "file bytes": totals["file_bytes"]}
    if baseline is not None:
        base_bytes = fp32_bytes(baseline)
        summary["fp32 bytes (baseline)"] = base_bytes
        summary["size ratio"] = base_bytes / totals["file_bytes"]
    if evaluate is not None:
        summary["metric"] = float(evaluate(model))
        if baseline is not None:
            summary["baseline metric"] = float(evaluate(baseline))
    if example_inputs is not None:
        lat = model_latency(model, example_inputs, repeats=30)
        summary["latency ms"] = 1e3 * lat
        if baseline is not None:
            summary["speed-up"] = model_latency(baseline, example_inputs, repeats=30) / lat
    if result is not None:
        summary.update({f"run: {k}": v for k, v in result.metrics.items()
                        if isinstance(v, (int, float, str)) and k not in SIZE_KEYS})
    hist = list(getattr(result, "history", []) or [])
    return Report(title, summary, layers, totals, hist, dict(sensitivity or {}), trust,
                  outcome(result))
