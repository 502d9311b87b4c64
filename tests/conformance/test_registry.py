"""The registry keeps itself honest: every registered config has a conformance case (or,
for training steps, a step case), declares its strength knob, and a knob moves its
config between the declared ends."""

from __future__ import annotations

import dataclasses

import pytest

import modelzip as mz
from modelzip.config import Config

from .cases import all_cases
from .test_steps import STEP_CASES

# configs the shared Case cannot express, each tested by its own suite
NOT_TRANSFORMS = {
    "Distillation": "tests/test_distill_conformance.py",  # a training step, no layers
    # removes whole blocks: the shared suite reloads into an unpruned model of the same
    # architecture, which cannot hold a shallower one
    "Depth": "tests/test_transformer_pruning.py",
}


def _covered() -> set[str]:
    names = {type(c.make_cfg()).config_name() for c in all_cases()}
    return names | set(STEP_CASES) | set(NOT_TRANSFORMS)


def test_every_registered_config_has_a_conformance_case():
    missing = sorted(set(mz.registered()) - _covered())
    assert not missing, f"registered configs without a conformance case: {missing}"


@pytest.mark.parametrize("name", sorted(mz.registered()))
def test_every_config_declares_its_knob(name):
    cls = mz.registered()[name]
    owner = next(k for k in cls.__mro__ if "knob" in k.__dict__)
    assert owner is not Config, f"{name} does not declare knob() (return None if it has none)"


def _default(cls):
    try:
        return cls()
    except TypeError:  # steps need epochs/lr
        return None


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_knob_moves_the_config(case):
    cfg = case.make_cfg()
    knob = cfg.knob()
    if knob is None:
        return
    assert knob.field in {f.name for f in dataclasses.fields(cfg)}
    for end in (knob.gentlest, knob.harshest):
        moved = cfg.at(end)
        assert type(moved) is type(cfg) and getattr(moved, knob.field) == end
        assert moved.knob().field == knob.field
    mid = knob.between(None, None)
    assert mid is not None and 0 <= knob.harshness(mid) <= 1
