"""Pure functions comparing two models' outputs on the same examples.

No nn.Module knowledge here: inputs are logits, labels, embeddings or cosines (tensors),
outputs are plain Python numbers, lists and dicts (JSON-ready). ``o`` is the original
model, ``c`` the compressed one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
MAX_CONFUSION_CLASSES = 50  # larger confusion matrices are left out of the report


def confusion(labels: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``[true, predicted]`` (int64, ``num_classes`` x ``num_classes``)."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def reliability(conf: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
                ) -> list[dict[str, float]]:
    """Equal-width confidence bins ``(lo, hi]`` (the first also takes 0): count, mean
    confidence and accuracy of each (Guo et al. 2017, the reliability diagram)."""
    conf = conf.double()
    idx = (torch.ceil(conf * bins) - 1).clamp(0, bins - 1).long()
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": n,
                    "confidence": float(conf[sel].mean()) if n else 0.0,
                    "accuracy": float(correct[sel].double().mean()) if n else 0.0})
    return out


def ece_from_bins(table: list[dict[str, float]]) -> float:
    """Expected calibration error: sum over bins of |B|/n * |accuracy(B) - confidence(B)|."""
    n = sum(b["count"] for b in table)
    if n == 0:
        return 0.0
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of softmax(``logits``) against ``labels`` with ``bins`` equal-width bins."""
    probs = torch.softmax(logits.double(), -1)
    conf, pred = probs.max(-1)
    return ece_from_bins(reliability(conf, pred == labels, bins))


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per row (nats), rows over the last dimension."""
    lp = F.log_softmax(logits_p.double(), -1)
    lq = F.log_softmax(logits_q.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def per_class(labels: torch.Tensor, pred_o: torch.Tensor, pred_c: torch.Tensor,
              num_classes: int) -> list[dict[str, Any]]:
    """Per true class: support, accuracy of both models, drop, and how predictions moved
    (flip rate: any change of top-1; lost: right -> wrong; gained: wrong -> right)."""
    rows = []
    for k in range(num_classes):
        sel = labels == k
        n = int(sel.sum())
        if n == 0:
            rows.append({"class": k, "support": 0, "acc_original": None,
                         "acc_compressed": None, "drop": None, "flip_rate": None,
                         "lost": 0, "gained": 0})
            continue
        ok_o, ok_c = pred_o[sel] == k, pred_c[sel] == k
        acc_o, acc_c = float(ok_o.double().mean()), float(ok_c.double().mean())
        rows.append({"class": k, "support": n, "acc_original": acc_o, "acc_compressed": acc_c,
                     "drop": acc_o - acc_c,
                     "flip_rate": float((pred_o[sel] != pred_c[sel]).double().mean()),
                     "lost": int((ok_o & ~ok_c).sum()), "gained": int((~ok_o & ok_c).sum())})
    return rows


def classification(logits_o: torch.Tensor, logits_c: torch.Tensor, labels: torch.Tensor,
                   *, num_classes: int | None = None, bins: int = ECE_BINS) -> dict[str, Any]:
    """Every classifier figure: overall and per-class accuracy and drop, the worst class,
    top-1 agreement, flip rates, ECE of both models and its change, mean KL(o || c),
    the confusion matrices' difference (compressed - original) and reliability tables."""
    labels = labels.reshape(-1).long()
    logits_o = logits_o.reshape(labels.numel(), -1)
    logits_c = logits_c.reshape(labels.numel(), -1)
    k = num_classes or max(logits_o.shape[-1], int(labels.max()) + 1 if labels.numel() else 0)
    p_o, p_c = torch.softmax(logits_o.double(), -1), torch.softmax(logits_c.double(), -1)
    conf_o, pred_o = p_o.max(-1)
    conf_c, pred_c = p_c.max(-1)
    rel_o = reliability(conf_o, pred_o == labels, bins)
    rel_c = reliability(conf_c, pred_c == labels, bins)
    acc_o = float((pred_o == labels).double().mean())
    acc_c = float((pred_c == labels).double().mean())
    classes = per_class(labels, pred_o, pred_c, k)
    present = [r for r in classes if r["support"]]
    worst = max(present, key=lambda r: r["drop"])
    ece_o, ece_c = ece_from_bins(rel_o), ece_from_bins(rel_c)
    kl = kl_rows(logits_o, logits_c)
    out: dict[str, Any] = {
        "task": "classification", "examples": int(labels.numel()), "num_classes": k,
        "acc_original": acc_o, "acc_compressed": acc_c, "drop": acc_o - acc_c,
        "worst_class": {"class": worst["class"], "drop": worst["drop"],
                        "acc_original": worst["acc_original"],
                        "acc_compressed": worst["acc_compressed"]},
        "max_class_drop": worst["drop"],
        "agreement": float((pred_o == pred_c).double().mean()),
        "ece_original": ece_o, "ece_compressed": ece_c, "ece_change": ece_c - ece_o,
        "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
        "per_class": classes,
        "reliability": {"original": rel_o, "compressed": rel_c},
    }
    if k <= MAX_CONFUSION_CLASSES:
        out["confusion_change"] = (confusion(labels, pred_c, k)
                                   - confusion(labels, pred_o, k)).tolist()
    return out


def lm_sums(logits_o: torch.Tensor, logits_c: torch.Tensor, targets: torch.Tensor,
            ignore_index: int = -100) -> dict[str, float]:
    """Sums over one batch of next-token predictions (combine with :func:`lm_from_sums`):
    tokens, top-1 agreements, KL(o || c), and each model's NLL and right answers."""
    v = logits_o.shape[-1]
    t = targets.reshape(-1).long()
    lo, lc = logits_o.reshape(-1, v), logits_c.reshape(-1, v)
    keep = t != ignore_index
    lo, lc, t = lo[keep], lc[keep], t[keep]
    po, pc = lo.argmax(-1), lc.argmax(-1)
    return {"tokens": float(t.numel()), "agree": float((po == pc).sum()),
            "kl": float(kl_rows(lo, lc).sum()),
            "nll_original": float(F.cross_entropy(lo.double(), t, reduction="sum")),
            "nll_compressed": float(F.cross_entropy(lc.double(), t, reduction="sum")),
            "right_original": float((po == t).sum()), "right_compressed": float((pc == t).sum())}


def lm_from_sums(sums: dict[str, float]) -> dict[str, Any]:
    """Per-token agreement, mean KL, perplexity and next-token accuracy of both models."""
    import math

    n = sums["tokens"]
    if n == 0:
        return {"task": "language_model", "tokens": 0}
    ppl_o, ppl_c = math.exp(sums["nll_original"] / n), math.exp(sums["nll_compressed"] / n)
    return {"task": "language_model", "tokens": int(n), "agreement": sums["agree"] / n,
            "kl_mean": sums["kl"] / n, "ppl_original": ppl_o, "ppl_compressed": ppl_c,
            "ppl_change": ppl_c - ppl_o,
            "acc_original": sums["right_original"] / n,
            "acc_compressed": sums["right_compressed"] / n,
            "drop": (sums["right_original"] - sums["right_compressed"]) / n}


def add_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    """``total`` + ``part`` key by key (missing keys count as 0)."""
    return {k: total.get(k, 0.0) + part.get(k, 0.0) for k in set(total) | set(part)}


def cosine_stats(cos: torch.Tensor, worst: int = 5) -> dict[str, Any]:
    """The distribution of per-example cosine similarities: mean, min, 1st and 5th
    percentiles, median, the indices of the ``worst`` lowest, a 20-bin histogram."""
    c = cos.double().reshape(-1)
    order = torch.argsort(c)[:worst]
    lo = min(float(c.min()), 0.999)
    counts = torch.histc(c.float(), bins=20, min=lo, max=1.0)
    edges = [lo + (1.0 - lo) * i / 20 for i in range(21)]
    return {"task": "encoder", "examples": int(c.numel()), "cos_mean": float(c.mean()),
            "cos_min": float(c.min()), "cos_p1": float(torch.quantile(c, 0.01)),
            "cos_p5": float(torch.quantile(c, 0.05)), "cos_median": float(c.median()),
            "worst": [{"index": int(i), "cosine": float(c[i])} for i in order],
            "histogram": {"edges": edges, "counts": [int(v) for v in counts]}}


def pooled(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per example: ``[B, D]`` as is; ``[B, T, D]`` mean-pooled over the
    positions kept by ``mask`` (``[B, T]``; all positions when None)."""
    if hidden.dim() == 2:
        return hidden
    if mask is None:
        return hidden.mean(1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
