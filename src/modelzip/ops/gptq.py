"""GPTQ (Frantar et al. 2023): quantize a weight column by column, spreading each column's
rounding error over the not yet quantized columns through the inverse Hessian of the
layer's inputs, with blocked lazy batch updates, damping and optional activation order.

Pure tensor code: ``w`` is ``[rows, cols]``, ``h`` the ``[cols, cols]`` input Hessian.
"""

from __future__ import annotations

import torch

from .hessian import inverse_cholesky_upper
from .quant import QSpec, qparams, search_clip


def _params(w: torch.Tensor, spec: QSpec, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ratio = search_clip(w, spec) if clip else 1.0
    return qparams(w, spec, ratio)


def _qcol(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QSpec
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and dequantized values of one column given per-row scale/zero."""
    if spec.binary:
        q = (w >= 0).to(w.dtype)
        return q, (2 * q - 1) * s
    q = (torch.round(w / s) + z).clamp(spec.qmin, spec.qmax)
    return q, (q - z) * s


def gptq(w: torch.Tensor, h: torch.Tensor, spec: QSpec, *, blocksize: int = 128,
         percdamp: float = 0.01, actorder: bool = False, clip: bool = False
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int32 ``[rows, cols]``, scale, zero ``[rows, groups]``) of weight ``w``.

    Groups follow the original column order (with ``actorder`` their parameters are fixed
    up front - "static groups" - so that a group's columns may be visited in any order).
    ``clip`` searches each group's clipping ratio (MSE) before quantizing.
    """
    W = w.detach().float().clone()
    rows, cols = W.shape
    H = h.detach().float().clone()  # float32 as the reference; the inverse retries damping
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0
    g = cols if spec.group_size in (None, -1) else min(spec.group_size, cols)
    n_groups = -(-cols // g)
    scale = torch.ones(rows, n_groups, device=W.device)
    zero = torch.zeros(rows, n_groups, device=W.device)
    static = actorder or spec.group_size in (None, -1) or g == cols
    if static:
        gs = spec.group_size if g < cols else None
        scale, zero = _params(W, QSpec(spec.bits, spec.symmetric, gs), clip)
        if spec.group_size == -1:
            scale, zero = scale.expand(rows, 1).clone(), zero.expand(rows, 1).clone()
    perm = (torch.argsort(torch.diag(H), descending=True) if actorder
            else torch.arange(cols, device=W.device))
    if actorder:
        W, H = W[:, perm], H[perm][:, perm]
    Q = torch.zeros(rows, cols, device=W.device)
    col_spec = QSpec(spec.bits, spec.symmetric, None)
    # one thread: the column loop is many tiny ops, and torch.cholesky_inverse with two
    # threads on a loaded CPU was measured 200x slower (22 s vs 0.1 s at d=1536)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        U = inverse_cholesky_upper(H, percdamp)  # fp32, as in the reference code
        del H
        _columns(W, U, Q, scale, zero, perm, g, static, spec, col_spec, blocksize, clip)
    finally:
        torch.set_num_threads(threads)
    if actorder:
        codes = torch.empty_like(Q)
        codes[:, perm] = Q
    else:
        codes = Q
    if spec.group_size == -1:
        scale, zero = scale[:1, :1], zero[:1, :1]
    return codes.to(torch.int32), scale, zero


def _columns(W: torch.Tensor, U: torch.Tensor, Q: torch.Tensor, scale: torch.Tensor,
             zero: torch.Tensor, perm: torch.Tensor, g: int, static: bool, spec: QSpec,
             col_spec: QSpec, blocksize: int, clip: bool) -> None:
    """The GPTQ sweep, in place: quantize columns into ``Q`` (and lazily fill group
    parameters), spreading errors within a block, then onto later blocks at once."""
    cols = W.shape[1]
    order = perm.tolist()
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = order[i1 + i]
            grp = col // g
            if not static and col % g == 0:
                window = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :g]
                s, z = _params(window, col_spec, clip)
                scale[:, grp], zero[:, grp] = s[:, 0], z[:, 0]
            q, dq = _qcol(W1[:, i], scale[:, grp], zero[:, grp], spec)
            Q[:, i1 + i] = q
            err = (W1[:, i] - dq) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
