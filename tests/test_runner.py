"""The one loop: a new config with an unusually named strength is backed off by
compress without any pipeline change; the requirement's threshold is right for
negative metrics; a bad evaluate() gets a clear error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import modelzip as mz
from modelzip.config import register, unregister
from modelzip.select import weight_layers


def _keep_largest(model: nn.Module, cfg: Any, **_: Any) -> None:
    for _, m in weight_layers(model, cfg):
        w = m.weight.data
        k = max(1, int(round(cfg.keep * w.numel())))
        cut = w.abs().flatten().kthvalue(w.numel() - k + 1).values
        w.mul_((w.abs() >= cut).to(w.dtype))


@dataclass
class KeepLargest(mz.Config):
    """Toy method: keep the ``keep`` fraction of largest weights (1.0 keeps all)."""

    keep: float = 0.5
    kind = "prune"

    def knob(self, model: nn.Module | None = None) -> mz.Knob:
        return mz.Knob("keep", 1.0, 0.0)  # gentlest end is the high one


@pytest.fixture
def toy_method():
    register(_keep_largest)(KeepLargest)
    yield KeepLargest
    unregister(KeepLargest)


def test_new_config_with_unusual_knob_is_backed_off(toy_method, trained_mlp, digits):
    def evaluate(m):
        return mz.accuracy(m, digits.test)

    res = mz.compress(trained_mlp, [toy_method(keep=0.002)], evaluate=evaluate,
                      max_drop=0.02, max_tries=6, progress=False)
    assert res.met and res.metrics["drop"] <= 0.02
    assert res.metrics["changed_units"] and "keep 0.002 ->" in res.metrics["changed_units"][0]
    kept = float(res.history[-1]["config"]["keep"]) if res.history[-1]["passed"] else None
    assert kept is None or kept > 0.002
    assert not res.metrics["complete"] and res.metrics["incomplete_because"]


def test_relative_threshold_for_negative_metric():
    req = mz.Requirement(baseline=-10.0, max_drop=0.1, relative=True)
    assert req.threshold == pytest.approx(-11.0)
    assert req.met_by(-10.5) and not req.met_by(-11.5)


@pytest.mark.parametrize("value,match", [("0.87", "str"), (None, "NoneType"),
                                         (torch.tensor([1.0, 2.0]), "2 values"),
                                         (math.nan, "finite")])
def test_evaluate_must_return_one_finite_number(value, match, trained_mlp):
    with pytest.raises(mz.BudgetError, match=match):
        mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.5)], evaluate=lambda m: value,
                    progress=False)


@pytest.mark.parametrize("kw", [{"max_drop": math.nan}, {"max_drop": -1},
                                {"time_budget": -5}, {"mode": "fast"}])
def test_bad_loop_options_are_refused(kw, trained_mlp):
    with pytest.raises(mz.ConfigError):
        mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.5)], evaluate=lambda m: 1.0,
                    progress=False, **kw)


def test_prune_until_relative_budget_on_negative_metric(trained_mlp, digits):
    hist = mz.prune_until(trained_mlp, mz.Magnitude(scope="global"), digits.train,
                          evaluate=lambda m: -1.0 - mz.accuracy(m, digits.test) * 0,
                          levels=[0.5], max_drop=0.01, relative=True, progress=False)
    assert hist[-1]["accepted"]  # the metric never moves: -1 >= -1.01


def test_attempt_sizes_are_quick_estimates_and_exact_for_large_models():
    """Attempts are sized with Huffman only up to 16 MiB of tensors (an upper bound of the
    default "best" search) and with the fast path above it, which is what mz.save
    writes by default for such models: the estimate is then the file's exact size."""
    from modelzip.measure import file_bytes
    from modelzip.pipeline.runner import attempt_bytes

    torch.manual_seed(0)
    small = torch.nn.Linear(64, 32)
    assert attempt_bytes(small) == file_bytes(small, entropy="huffman")
    assert attempt_bytes(small) >= file_bytes(small)
    large = torch.nn.Linear(2048, 2100)  # 17.2 MB of fp32 weights
    assert attempt_bytes(large) == file_bytes(large) == file_bytes(large, entropy="fast")
