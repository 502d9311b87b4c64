"""mz.train inside torch.autocast (bf16 on CPU) learns: autocast's weight cache would
otherwise keep step 0's bf16 weights for the whole run (found by the Llama benchmark)."""

from __future__ import annotations

import torch

import modelzip as mz


def _loss_after(autocast: bool) -> float:
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = (x @ torch.randn(16, 1)).squeeze(-1)
    data = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def mse(out, target):
        return torch.nn.functional.mse_loss(out.squeeze(-1).float(), target)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mz.train(model, data, epochs=15, lr=1e-2, loss=mse, progress=False)
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x).squeeze(-1), y))


def test_training_under_autocast_learns_like_fp32():
    start = float(torch.var(torch.randn(256, 16) @ torch.randn(16, 1)))
    fp32, bf16 = _loss_after(False), _loss_after(True)
    assert fp32 < 0.2 * start
    assert bf16 < 2 * fp32 + 0.05
