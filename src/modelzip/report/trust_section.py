"""The trust section of a report: terminal tables (rich) and HTML, from a ``mz.trust``
dict. Plots are in ``trust_plots.py``."""

from __future__ import annotations

import html
from typing import Any

from rich.table import Table


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _pts(v: Any) -> str:
    return "-" if v is None else f"{round(100 * v, 2) + 0.0:+.2f}"  # no "-0.00"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def summary_rows(rep: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, original, compressed, change) rows for any task."""
    task = rep.get("task")
    if task == "classification":
        w = rep["worst_class"]
        rows = [("accuracy %", _pct(rep["acc_original"]), _pct(rep["acc_compressed"]),
                 _pts(-rep["drop"])),
                (f"worst class ({w['class']}) accuracy %", _pct(w["acc_original"]),
                 _pct(w["acc_compressed"]), _pts(-w["drop"])),
                ("top-1 agreement %", "", _pct(rep["agreement"]), ""),
                ("ECE (15 bins)", _num(rep["ece_original"]), _num(rep["ece_compressed"]),
                 f"{rep['ece_change']:+.4f}"),
                ("KL(original || compressed), nats", "", _num(rep["kl_mean"]), "")]
        return rows + robustness_rows(rep.get("robustness"))
    if task == "language_model":
        return [("perplexity", _num(rep["ppl_original"]), _num(rep["ppl_compressed"]),
                 f"{rep['ppl_change']:+.4g}"),
                ("next-token accuracy %", _pct(rep["acc_original"]),
                 _pct(rep["acc_compressed"]), _pts(-rep["drop"])),
                ("per-token agreement %", "", _pct(rep["agreement"]), ""),
                ("KL(original || compressed), nats/token", "", _num(rep["kl_mean"]), "")]
    if task == "encoder":
        return [(f"cosine to original: {k}", "", f"{rep[f'cos_{k}']:.4f}", "")
                for k in ("mean", "median", "p5", "p1", "min")]
    return []


def robustness_rows(rob: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """Accuracy under noise and attacks, original beside compressed."""
    if not rob or "original" not in rob:
        return []
    o, c = rob["original"], rob["compressed"]
    rows = []
    for key, label, unit in (("noise", "Gaussian noise", "sigma"), ("fgsm", "FGSM", "eps"),
                             ("pgd", "PGD", "eps")):
        for a, b in zip(o.get(key, []), c.get(key, [])):
            rows.append((f"{label} {unit}={a[unit]:g} accuracy %", _pct(a["accuracy"]),
                         _pct(b["accuracy"]), _pts(b["accuracy"] - a["accuracy"])))
    return rows


def trust_table(rep: dict[str, Any], title: str = "trust: original vs compressed") -> Table:
    """The summary table (rich)."""
    t = Table(title=title)
    for c in ("figure", "original", "compressed", "change"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    for row in summary_rows(rep):
        t.add_row(*row)
    return t


def per_class_table(rep: dict[str, Any]) -> Table | None:
    """Per-class accuracy, drop and flip rate (classifiers only)."""
    if rep.get("task") != "classification":
        return None
    t = Table(title="per class")
    for c in ("class", "examples", "original %", "compressed %", "change (points)",
              "flip rate %", "lost", "gained"):
        t.add_column(c, justify="right")
    for r in rep["per_class"]:
        t.add_row(str(r["class"]), str(r["support"]), _pct(r["acc_original"]),
                  _pct(r["acc_compressed"]), _pts(None if r["drop"] is None else -r["drop"]),
                  _pct(r["flip_rate"]), str(r["lost"]), str(r["gained"]))
    return t


def tables(rep: dict[str, Any]) -> list[Table]:
    """Every terminal table of the trust section."""
    per = per_class_table(rep)
    return [trust_table(rep)] + ([per] if per is not None else [])


def _html_table(cols: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


PLOTS = (("trust_per_class", "Per-class accuracy: original and compressed"),
         ("trust_confusion", "Confusion change (compressed minus original)"),
         ("trust_calibration", "Calibration (reliability diagram)"),
         ("trust_robustness", "Robustness: accuracy under noise and attacks"),
         ("trust_cosine", "Cosine to the original, per example"))


def html_section(rep: dict[str, Any], images: dict[str, str]) -> str:
    """The HTML of the trust section (``images``: name -> base64 PNG)."""
    parts = ["<h2>Trust: what compression changed, and for whom</h2>",
             _html_table(["figure", "original", "compressed", "change"],
                         [list(r) for r in summary_rows(rep)])]
    if rep.get("task") == "classification":
        parts.append(_html_table(
            ["class", "examples", "original %", "compressed %", "change (points)",
             "flip rate %"],
            [[r["class"], r["support"], _pct(r["acc_original"]), _pct(r["acc_compressed"]),
              _pts(None if r["drop"] is None else -r["drop"]), _pct(r["flip_rate"])]
             for r in rep["per_class"]]))
    for name, label in PLOTS:
        if name in images:
            parts.append(f"<h3>{label}</h3><img alt='{name}' "
                         f"src='data:image/png;base64,{images[name]}'>")
    return "".join(parts)
