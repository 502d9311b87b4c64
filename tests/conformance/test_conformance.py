"""Every method: applies in place, respects targets/ignore, round-trips through save/load,
really shrinks the file, and its config round-trips and validates."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

import modelzip as mz
from modelzip.measure import fp32_bytes
from modelzip.state import logical_weights

from .cases import Case, all_cases

CASES = all_cases()
ids = [c.name for c in CASES]


def _layer_state(model, fqn):
    prefix = f"{fqn}."
    return {k: v.clone() for k, v in logical_weights(model) if k.startswith(prefix)}


def _same(a, b):
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _outputs(model, case):
    with torch.no_grad():
        out = model(case.inputs())
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_applies_in_place(case: Case):
    model = case.model()
    before = {k: v.clone() for k, v in logical_weights(model)}
    result = case.apply(model, case.make_cfg())
    assert result is model
    after = dict(logical_weights(model))
    assert not _same(before, after), "the method changed nothing"
    out = _outputs(model, case)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_respects_ignore(case: Case):
    model = case.model()
    first = _layer_state(model, case.first)
    case.apply(model, case.make_cfg(ignore=[f"re:{case.first}"]))
    assert _same(first, _layer_state(model, case.first))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_respects_targets(case: Case):
    model = case.model()
    first, middle = _layer_state(model, case.first), _layer_state(model, case.middle)
    case.apply(model, case.make_cfg(targets=[f"re:{case.middle}"]))
    assert _same(first, _layer_state(model, case.first))
    assert not _same(middle, _layer_state(model, case.middle))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_save_load_roundtrip_and_shrinks(case: Case, tmp_path):
    model = case.model()
    baseline = fp32_bytes(model)
    case.apply(model, case.make_cfg())
    path = tmp_path / "m.mzip"
    size = mz.save(model, path)
    assert size == path.stat().st_size
    assert size < baseline, f"file {size} B is not smaller than fp32 {baseline} B"
    loaded = mz.load(path)
    assert type(loaded) is type(model)
    torch.testing.assert_close(_outputs(loaded, case), _outputs(model, case),
                               atol=case.atol, rtol=0)
    fresh = case.model()
    mz.load(path, model=fresh)
    torch.testing.assert_close(_outputs(fresh, case), _outputs(model, case),
                               atol=case.atol, rtol=0)
    again = tmp_path / "again.mzip"
    assert mz.save(copy.deepcopy(loaded), again) == size


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_config_roundtrip(case: Case):
    cfg = case.make_cfg(ignore=["re:5"])
    assert mz.from_dict(cfg.to_dict()) == cfg
    assert mz.from_json(cfg.to_json()) == cfg
    assert mz.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_invalid_settings_raise(case: Case):
    for bad in case.invalid:
        with pytest.raises(mz.ConfigError):
            case.make_cfg(**bad)
    data = case.make_cfg().to_dict()
    data["no_such_key"] = 1
    with pytest.raises(mz.ConfigError, match="no_such_key"):
        mz.from_dict(data)
