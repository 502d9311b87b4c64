"""Matplotlib figures of the trust section (PNG bytes): per-class bars, the
confusion-change matrix, reliability diagrams, robustness curves, cosine histogram."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig: Any) -> bytes:
    from .plots import png_bytes

    try:
        return png_bytes(fig)
    finally:
        plt.close(fig)


def per_class_png(rep: dict[str, Any]) -> bytes:
    """Paired bars of per-class accuracy, with the flip rate on a second panel."""
    rows = [r for r in rep["per_class"] if r["support"]]
    names = [str(r["class"]) for r in rows]
    x = range(len(rows))
    fig, (a, b) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(rows) + 2), 5.5), sharex=True)
    a.bar([i - 0.2 for i in x], [100 * r["acc_original"] for r in rows], 0.4,
          label="original")
    a.bar([i + 0.2 for i in x], [100 * r["acc_compressed"] for r in rows], 0.4,
          label="compressed")
    lo = min(min(100 * r["acc_original"], 100 * r["acc_compressed"]) for r in rows)
    a.set_ylim(max(0, lo - 5), 100)
    a.set_ylabel("accuracy (%)")
    a.legend(fontsize=8)
    worst = rep["worst_class"]["class"]
    a.set_title(f"per-class accuracy (worst: class {worst}, "
                f"{100 * rep['worst_class']['drop']:.2f} points drop)")
    b.bar(list(x), [100 * r["flip_rate"] for r in rows], color="tab:red")
    b.set_ylabel("top-1 flips (%)")
    b.set_xticks(list(x), names)
    b.set_xlabel("true class")
    return _png(fig)


def confusion_png(rep: dict[str, Any]) -> bytes:
    """Heat map of confusion(compressed) - confusion(original); rows: true class."""
    m = rep["confusion_change"]
    k = len(m)
    vmax = max(1, max(abs(v) for row in m for v in row))
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.45 * k + 2))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    if k <= 20:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        for i in range(k):
            for j in range(k):
                if m[i][j]:
                    ax.text(j, i, str(m[i][j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion change (compressed - original)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def calibration_png(rep: dict[str, Any]) -> bytes:
    """Reliability diagrams of both models: accuracy against confidence per bin."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for key, label in (("original", "original"), ("compressed", "compressed")):
        bins = [b for b in rep["reliability"][key] if b["count"]]
        ece = rep[f"ece_{key}"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{label} (ECE {ece:.4f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("reliability diagram (15 bins)")
    return _png(fig)


def robustness_png(rob: dict[str, Any]) -> bytes:
    """Accuracy against noise sigma and attack eps, original (solid) vs compressed."""
    kinds = [(k, u) for k, u in (("noise", "sigma"), ("fgsm", "eps"), ("pgd", "eps"))
             if rob["original"].get(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.5), squeeze=False)
    for ax, (kind, unit) in zip(axes[0], kinds):
        for key, style in (("original", "-o"), ("compressed", "--s")):
            pts = rob[key][kind]
            ax.plot([0.0] + [p[unit] for p in pts],
                    [100 * rob[key]["clean"]] + [100 * p["accuracy"] for p in pts], style,
                    label=key)
        ax.set_xlabel(unit)
        ax.set_ylabel("accuracy (%)")
        ax.set_title({"noise": "Gaussian noise", "fgsm": "FGSM", "pgd": "PGD"}[kind])
        ax.legend(fontsize=8)
    return _png(fig)


def cosine_png(rep: dict[str, Any]) -> bytes:
    """Histogram of per-example cosine to the original (encoders)."""
    h = rep["histogram"]
    edges, counts = h["edges"], h["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge")
    ax.set_xlabel("cosine to the original")
    ax.set_ylabel("examples")
    ax.set_title(f"mean {rep['cos_mean']:.4f}, 1st percentile {rep['cos_p1']:.4f}")
    return _png(fig)


def figures(rep: dict[str, Any]) -> dict[str, bytes]:
    """Every figure that applies to ``rep`` (keys as in ``trust_section.PLOTS``)."""
    out: dict[str, bytes] = {}
    if rep.get("task") == "classification":
        out["trust_per_class"] = per_class_png(rep)
        if "confusion_change" in rep:
            out["trust_confusion"] = confusion_png(rep)
        out["trust_calibration"] = calibration_png(rep)
        rob = rep.get("robustness") or {}
        if "original" in rob:
            out["trust_robustness"] = robustness_png(rob)
    elif rep.get("task") == "encoder":
        out["trust_cosine"] = cosine_png(rep)
    return out
