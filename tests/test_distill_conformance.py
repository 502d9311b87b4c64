"""Conformance-style checks of mz.distill (a training step, so not a conformance Case):
the teacher is never modified, alpha=0 is plain training, masks and codes survive,
the config round-trips and validates, and distillation is a drop-in recovery step."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

import modelzip as mz
from modelzip.pruning import iterative_prune
from modelzip.state import iter_masks


def _data(limit: int = 256, seed: int = 0):
    return mz.data.digits(batch_size=64, seed=seed, train_limit=limit, test_limit=256)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    t = mz.zoo.lenet300(in_features=64)
    mz.train(t, _data(limit=None).train, epochs=3, lr=3e-3, progress=False)
    t.zero_grad(set_to_none=True)
    return t


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cfg", [
    mz.Distillation(),
    mz.Distillation(temperature=1.0, alpha=1.0, loss="mse"),
    mz.Distillation(alpha=0.5, features={"1": "1"}),
])
def test_teacher_bitwise_unchanged(teacher, cfg):
    teacher.train()  # a teacher left in train mode is run in eval mode and restored
    before = _snapshot(teacher)
    flags = [p.requires_grad for p in teacher.parameters()]
    student = mz.zoo.student(teacher, width=0.5)
    mz.distill(student, teacher, _data().train, cfg, epochs=1, lr=1e-3, progress=False)
    assert _equal(before, _snapshot(teacher))
    assert all(p.grad is None for p in teacher.parameters())
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert teacher.training
    teacher.eval()


def test_alpha_zero_is_plain_training(teacher):
    torch.manual_seed(1)
    init = mz.zoo.lenet300(in_features=64, hidden=(32, 16))
    a, b = copy.deepcopy(init), copy.deepcopy(init)
    mz.train(a, _data(seed=3).train, epochs=2, lr=2e-3, progress=False)
    mz.distill(b, teacher, _data(seed=3).train, mz.Distillation(alpha=0.0), epochs=2,
               lr=2e-3, progress=False)
    assert _equal(_snapshot(a), _snapshot(b))
    c = copy.deepcopy(init)  # any alpha > 0 differs
    mz.distill(c, teacher, _data(seed=3).train, mz.Distillation(alpha=0.5), epochs=2,
               lr=2e-3, progress=False)
    assert not _equal(_snapshot(a), _snapshot(c))


def test_masks_survive_distillation(teacher):
    student = mz.zoo.student(teacher, init="copy")
    mz.prune(student, mz.Magnitude(sparsity=0.8))
    masks = {id(m): (n, k.clone()) for m, n, k in iter_masks(student)}
    assert masks
    mz.distill(student, teacher, _data().train, mz.Distillation(), epochs=2, lr=1e-3,
               progress=False)
    for module, name, mask in iter_masks(student):
        assert torch.equal(mask, masks[id(module)][1])
        assert (getattr(module, name)[~mask] == 0).all()


def test_quantization_codes_stay_fixed(teacher):
    student = mz.zoo.student(teacher, init="copy")
    mz.quantize(student, mz.WeightOnly(bits=4, group_size=None))
    codes = {k: v.clone() for k, v in student.state_dict().items() if k.endswith("_codes")}
    assert codes
    mz.distill(student, teacher, _data().train, mz.Distillation(), epochs=1, lr=1e-3,
               progress=False)
    now = student.state_dict()
    assert all(torch.equal(now[k], v) for k, v in codes.items())


def test_distill_is_a_recovery_step(teacher):
    data = _data()
    model = mz.zoo.student(teacher, init="copy")
    hist = iterative_prune(model, mz.Magnitude(sparsity=0.9), data.train, steps=2,
                           epochs_per_step=1, lr=1e-3, progress=False,
                           recover=mz.distill_recovery(teacher, mz.Distillation(alpha=0.7)),
                           evaluate=lambda m: mz.accuracy(m, data.test))
    assert [round(h["sparsity"], 3) for h in hist][-1] == 0.9
    w = model[1].weight
    assert (w == 0).float().mean().item() == pytest.approx(0.9, abs=0.01)
    assert hist[-1]["metric"] > 0.5


def test_config_roundtrip():
    cfg = mz.Distillation(temperature=2.0, alpha=0.3, features={"3": "3"}, loss="mse")
    assert mz.from_dict(cfg.to_dict()) == cfg
    assert mz.from_json(cfg.to_json()) == cfg
    assert mz.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert mz.from_dict({"Distillation": {"temperature": 2}}).temperature == 2.0
    assert cfg.kind == "distill"


@pytest.mark.parametrize("bad", [{"temperature": 0}, {"temperature": -1.0}, {"alpha": 1.5},
                                 {"alpha": -0.1}, {"loss": "l1"}, {"features": {"a": 1}},
                                 {"features": ["a"]}, {"feature_weight": -1.0},
                                 {"targets": ["Linear"]}])
def test_invalid_settings_raise(bad):
    with pytest.raises(mz.ConfigError):
        mz.Distillation(**bad)
    with pytest.raises(mz.ConfigError, match="no_such_key"):
        mz.from_dict({"type": "Distillation", "no_such_key": 1})


def test_not_a_layer_transform(teacher):
    with pytest.raises(mz.ConfigError, match="mz.distill"):
        mz.apply(copy.deepcopy(teacher), mz.Distillation())
