"""Configs, selection, compression state and the .mzip basics of the foundation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modelzip as mz
from modelzip.select import select
from modelzip.state import get_mask


def test_registry_rejects_unknown_names_and_keys():
    with pytest.raises(mz.ConfigError, match="unknown config 'Bogus'"):
        mz.from_dict({"type": "Bogus"})
    with pytest.raises(mz.ConfigError, match="valid"):
        mz.from_dict({"Magnitude": {"sparsity": 0.5, "spars": 1}})
    assert mz.from_dict({"Magnitude": {"sparsity": 0}}) == mz.Magnitude(sparsity=0.0)


def test_sparsity_one_is_invalid():
    with pytest.raises(mz.ConfigError):
        mz.Magnitude(sparsity=1.0)


def test_select_by_type_name_regex_and_ignore():
    model = mz.zoo.lenet5(image_size=8)
    cfg = mz.Magnitude(targets=["Conv2d"], ignore=["re:0"])
    assert [n for n, _ in select(model, cfg)] == ["3"]
    cfg = mz.Magnitude(targets=[nn.Linear, "re:0"])
    assert [n for n, _ in select(model, cfg)] == ["0", "7", "9"]
    with pytest.raises(mz.ConfigError):
        select(model, mz.Magnitude(targets=["re:("]))


def test_global_magnitude_prunes_exact_count_and_keeps_largest(trained_mlp):
    before = [m.weight.detach().clone() for m in trained_mlp.modules()
              if isinstance(m, nn.Linear)]
    mz.prune(trained_mlp, mz.Magnitude(sparsity=0.75, scope="global"))
    ws = [m.weight for m in trained_mlp.modules() if isinstance(m, nn.Linear)]
    total = sum(w.numel() for w in ws)
    assert sum(int((w == 0).sum()) for w in ws) == round(0.75 * total)
    kept_min = min(float(b[w != 0].abs().min()) for b, w in zip(before, ws))
    pruned_max = max(float(b[w == 0].abs().max()) for b, w in zip(before, ws))
    assert kept_min >= pruned_max


def test_masks_survive_finetuning(trained_mlp, digits):
    mz.prune(trained_mlp, mz.Magnitude(sparsity=0.8))
    layer = trained_mlp[1]
    mask = get_mask(layer, "weight").clone()
    mz.finetune(trained_mlp, digits.train, epochs=1, lr=1e-3, progress=False)
    assert torch.equal(layer.weight != 0, mask & (layer.weight != 0))
    assert int((layer.weight[~mask] != 0).sum()) == 0


def test_pruning_is_monotonic(trained_mlp):
    mz.prune(trained_mlp, mz.Magnitude(sparsity=0.5))
    first = get_mask(trained_mlp[1], "weight").clone()
    mz.prune(trained_mlp, mz.Magnitude(sparsity=0.7))
    assert not (get_mask(trained_mlp[1], "weight") & ~first).any()


def test_weight_only_codes_are_integers_and_close(trained_mlp):
    ref = copy.deepcopy(trained_mlp)
    mz.quantize(trained_mlp, mz.WeightOnly(bits=8, group_size=None))
    layer = trained_mlp[1]
    assert "weight" not in dict(layer.named_parameters())
    assert layer.weight_codes.dtype == torch.int8
    err = (layer.weight - ref[1].weight).abs().max()
    assert err <= layer.weight_scale.max() / 2 + 1e-6


def test_prune_then_quantize_keeps_zeros_and_shrinks(trained_mlp, tmp_path):
    mz.prune(trained_mlp, mz.Magnitude(sparsity=0.9, scope="global"))
    mz.quantize(trained_mlp, mz.WeightOnly(bits=8, group_size=None))
    m = mz.measure(trained_mlp)
    assert m["sparsity"] > 0.85 and m["ratio"] > 8
    path = tmp_path / "m.mzip"
    mz.save(trained_mlp, path)
    loaded = mz.load(path)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), trained_mlp(x))


def test_measure_reports_macs_and_latency(trained_mlp):
    m = mz.measure(trained_mlp, example_inputs=torch.randn(2, 1, 8, 8), repeats=3)
    assert m["macs"] == 64 * 300 + 300 * 100 + 100 * 10
    assert m["latency_s"] > 0 and m["params"] == 50610


def test_tiny_gpt_roundtrip_rebuilds_without_model(tmp_path):
    model = mz.zoo.tiny_gpt(vocab_size=11, d_model=32, n_layer=2, n_head=2, seq_len=16)
    path = tmp_path / "g.mzip"
    mz.save(model, path)
    loaded = mz.load(path)
    idx = torch.randint(0, 11, (2, 16))
    assert torch.equal(loaded(idx), model(idx))


def test_zoo_weight_counts_match_the_papers():
    def weights(m):
        return sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight"))

    assert weights(mz.zoo.lenet300()) == 266_200
    assert weights(mz.zoo.lenet5()) == 430_500
    assert weights(mz.zoo.mlp128()) == 784 * 128 + 1280
    assert 1e6 < sum(p.numel() for p in mz.zoo.tiny_gpt().parameters()) < 5e6
