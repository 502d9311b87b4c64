"""The recipe steps are registered configs with handlers like every method: they build
from YAML, round-trip, validate, and do their job through the same apply()."""

from __future__ import annotations

import copy

import pytest
import torch

import modelzip as mz
from modelzip.pipeline.requirement import NoRequirement
from modelzip.pipeline.runner import RunContext, apply_actions

from .cases import mlp, mlp_calib

STEP_CASES = {
    "finetune": {"epochs": 1, "lr": 1e-3},
    "distill": {"epochs": 1, "lr": 1e-3, "temperature": 2.0},
    "evaluate": {},
    "convert": {},
}


def _ctx(teacher=None):
    return RunContext(None, NoRequirement(), train_data=mlp_calib(), teacher=teacher,
                      progress=False)


@pytest.mark.parametrize("name", sorted(STEP_CASES))
def test_step_round_trips_and_has_no_knob(name):
    cfg = mz.from_dict({name: STEP_CASES[name]})
    assert cfg.kind == "step" and cfg.knob() is None
    assert mz.from_dict(cfg.to_dict()) == cfg
    recipe = mz.Recipe([{name: STEP_CASES[name]}])
    assert mz.Recipe.from_yaml(recipe.to_yaml()).stages == recipe.stages


@pytest.mark.parametrize("bad", [{"epochs": float("nan"), "lr": 1e-3},
                                 {"epochs": 1e300, "lr": 1e-3}, {"epochs": 1, "lr": -1},
                                 {"epochs": 1}, {"epochs": 1, "lr": 1e-3, "momentum": 0.9}])
def test_training_steps_refuse_bad_numbers(bad):
    for name in ("finetune", "distill"):
        with pytest.raises(mz.ConfigError):
            mz.from_dict({name: bad})


def test_yaml_exponent_is_a_number():
    recipe = mz.Recipe.from_yaml("stages: [{finetune: {epochs: 1, lr: 1e-4}}]")
    assert recipe.stages[0].lr == pytest.approx(1e-4)


def test_finetune_and_distill_train_evaluate_does_not():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    apply_actions(model, [mz.from_dict({"evaluate": {}})], _ctx())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    apply_actions(model, [mz.from_dict({"finetune": STEP_CASES["finetune"]})], _ctx())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    student, teacher = mlp(), mlp()
    apply_actions(student, [mz.from_dict({"distill": STEP_CASES["distill"]})],
                  _ctx(teacher=teacher))
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_distill_step_needs_a_teacher_and_data():
    with pytest.raises(mz.ConfigError, match="teacher"):
        apply_actions(mlp(), [mz.from_dict({"distill": STEP_CASES["distill"]})], _ctx())
    ctx = RunContext(None, NoRequirement(), progress=False)
    with pytest.raises(mz.ConfigError, match="train_data"):
        apply_actions(mlp(), [mz.from_dict({"finetune": STEP_CASES["finetune"]})], ctx)


def test_convert_step_makes_qat_layers_integer():
    model = mlp()
    mz.quantize(model, mz.QAT(bits=8, activations="dynamic", group_size=None))
    apply_actions(model, [mz.from_dict({"convert": {}})], _ctx())
    assert any(type(m).__name__ == "Int8Linear" for m in model.modules())
