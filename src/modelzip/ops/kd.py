"""Knowledge-distillation losses (pure tensor math, no nn.Module knowledge).

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network":
the student matches the teacher's softened distribution p_T = softmax(t / T) through
KL(p_T || softmax(s / T)); the gradient of that term scales as 1 / T^2, so it is
multiplied by T^2 to keep its size independent of the temperature. The soft term is
mixed with the ordinary hard-label loss: ``alpha * soft + (1 - alpha) * hard``.

Logits of shape (batch, tokens, vocab) are treated per token (language models): the
KL is averaged over every (optionally masked) token position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("kl", "mse")


def _rows(logits: torch.Tensor) -> torch.Tensor:
    """(N, classes): 2-D logits as they are, 3-D per-token logits flattened."""
    if logits.dim() < 2:
        raise ValueError(f"logits need a class dimension, got shape {tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1])


def _mean(per_row: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_row.mean()
    w = weight.reshape(-1).to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp_min(1.0)


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     loss: str = "kl", weight: torch.Tensor | None = None) -> torch.Tensor:
    """Distillation loss between student and teacher logits, averaged over rows/tokens.

    ``"kl"``: T^2 * KL(softmax(teacher/T) || softmax(student/T)) per row (Hinton 2015).
    ``"mse"``: mean squared difference of the logits per row (Ba & Caruana 2014); this
    is the high-temperature limit of the KL term (T^2 * mse of logits/T = mse of logits),
    so the temperature does not change it. ``weight`` (0/1 per row or token) masks out
    padding. The teacher side never receives gradients.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits "
                         f"{tuple(teacher.shape)} differ in shape")
    s, t = _rows(student), _rows(teacher).detach().to(student.dtype)
    if loss == "mse":
        return _mean((s - t).pow(2).mean(-1), weight)
    if loss != "kl":
        raise ValueError(f"unknown distillation loss {loss!r}; choose one of {LOSSES}")
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return _mean(kl, weight) * temperature**2


def mix(hard: torch.Tensor, soft: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * soft + (1 - alpha) * hard``; exact endpoints (alpha 0 is the hard loss)."""
    if alpha == 0:
        return hard
    if alpha == 1:
        return soft
    return alpha * soft + (1 - alpha) * hard


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between (projected) student and teacher features (FitNets)."""
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    return F.mse_loss(student, teacher.detach().to(student.dtype))
