"""Device plumbing of the training verbs: ``device=`` moves the model for the run and back,
gives the same result as no device on CPU, and a device that is not there is refused."""

from __future__ import annotations

import copy

import pytest
import torch

import modelzip as mz
from modelzip.devices import module_device, placed


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_train_on_cpu_device_equals_no_device() -> None:
    a, b = _net(), _net()
    mz.train(a, _data(), epochs=2, lr=1e-2, progress=False)
    mz.train(b, _data(), epochs=2, lr=1e-2, progress=False, device="cpu")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert module_device(b).type == "cpu"
    assert mz.accuracy(b, _data(), device="cpu") == mz.accuracy(a, _data())


def test_masks_survive_a_device_run() -> None:
    model = _net()
    mz.prune(model, mz.Magnitude(sparsity=0.5))
    zeros = [(m.weight == 0) for m in model if isinstance(m, torch.nn.Linear)]
    mz.finetune(model, _data(), epochs=1, lr=1e-2, progress=False, device="cpu")
    after = [(m.weight == 0) for m in model if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(z & a, z) for z, a in zip(zeros, after, strict=True))


def test_distill_with_device_leaves_the_teacher_where_it_was() -> None:
    teacher = _net()
    mz.train(teacher, _data(), epochs=1, lr=1e-2, progress=False)
    before = copy.deepcopy(teacher.state_dict())
    student = _net()
    mz.distill(student, teacher, _data(), epochs=1, lr=1e-2, progress=False, device="cpu")
    assert module_device(teacher).type == "cpu" and module_device(student).type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_a_finetune_step_inside_compress_takes_the_device() -> None:
    model = _net()
    mz.train(model, _data(), epochs=3, lr=1e-2, progress=False)
    recipe = mz.Recipe([mz.Magnitude(sparsity=0.5), {"finetune": {"epochs": 1, "lr": 1e-3}}])
    res = mz.compress(model, recipe, evaluate=lambda m: mz.accuracy(m, _data()),
                      train_data=_data(), max_drop=1.0, progress=False, device="cpu")
    assert res.met and module_device(res.model).type == "cpu"


def test_missing_devices_are_refused_before_any_work() -> None:
    model = _net()
    with pytest.raises(mz.ModelzipError, match="unknown device|not supported"):
        mz.train(model, _data(), epochs=1, lr=1e-2, progress=False, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(mz.ModelzipError, match="CUDA is not available"):
            mz.train(model, _data(), epochs=1, lr=1e-2, progress=False, device="cuda")
        with pytest.raises(mz.ModelzipError, match="CUDA is not available"):
            mz.accuracy(model, _data(), device="cuda")


def test_placed_moves_back_on_error() -> None:
    model = _net()
    with pytest.raises(RuntimeError, match="boom"), placed("cpu", model) as dev:
        assert dev == torch.device("cpu")
        raise RuntimeError("boom")
    assert module_device(model).type == "cpu"
    with placed(None, model) as dev:
        assert dev is None
