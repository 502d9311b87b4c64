"""Constraints in the compress loop: a trust budget forces a back-off the overall budget
would not, and the result says which constraint decided it."""

from __future__ import annotations

import pytest

import modelzip as mz
from modelzip.errors import ConfigError


def test_constraint_forces_a_back_off(trained_mlp, digits):
    recipe = mz.Recipe([mz.WeightOnly(bits=2, group_size=None)], name="w2")

    def evaluate(m):
        return mz.accuracy(m, digits.test)

    common = {"evaluate": evaluate, "max_drop": 1.0, "progress": False}
    plain = mz.compress(trained_mlp, recipe, **common)
    assert plain.metrics["changed_units"] == []          # the overall budget lets 2 bits pass
    before = mz.trust(trained_mlp, plain.model, digits.test, robustness=False)
    assert before["agreement"] < 0.97
    held = mz.compress(trained_mlp, recipe, **common, constraints={"min_agreement": 0.97},
                       eval_data=digits.test)
    assert held.met and held.metrics["failed"] == []
    changed = held.metrics["changed_units"]
    assert len(changed) == 1 and "bits 2 ->" in changed[0] and "min_agreement" in changed[0]
    first = held.history[1]
    assert first["failed"] and first["failed"][0].startswith("min_agreement=")
    assert held.metrics["backoff_reasons"]["1:WeightOnly"][0].startswith("min_agreement=")
    after = mz.trust(trained_mlp, held.model, digits.test, robustness=False)
    assert after["agreement"] >= 0.97


def test_constraint_errors(trained_mlp, digits):
    recipe = mz.Recipe([mz.WeightOnly(bits=4, group_size=None)], name="w4")
    kw = {"evaluate": lambda m: mz.accuracy(m, digits.test), "progress": False}
    with pytest.raises(ConfigError, match="unknown constraint"):
        mz.compress(trained_mlp, recipe, **kw, constraints={"max_clas_drop": 0.02},
                    eval_data=digits.test)
    with pytest.raises(ConfigError, match="eval_data"):
        mz.compress(trained_mlp, recipe, **kw, constraints={"max_class_drop": 0.02})
