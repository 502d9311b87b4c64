"""mz.deep_compression: prune -> recover -> cluster -> fine-tune -> Huffman-coded save."""

from __future__ import annotations

import pytest
import torch

import modelzip as mz


def test_pipeline_stages_sparsity_codes_and_file(digits, tmp_path):
    torch.manual_seed(0)
    m = mz.zoo.lenet5(image_size=8)
    train = list(digits.train)[:4]
    seen = []
    res = mz.deep_compression(m, train, evaluate=lambda x: mz.accuracy(x, train),
                              sparsity={"3": 0.8, "7": 0.9}, steps=2, prune_epochs=0.5,
                              recover_epochs=0.5, conv_bits=5, fc_bits=3,
                              cluster_epochs=0.5, progress=False, path=tmp_path / "m.mzip",
                              on_stage=lambda s, _m: seen.append(s))
    stages = [h["stage"] for h in res["history"]]
    assert stages == ["baseline", "prune 1/2", "prune 2/2", "recover", "cluster",
                      "cluster + fine-tune"]
    assert seen == ["pruned", "clustered"]
    assert abs(float((m[7].weight == 0).float().mean()) - 0.9) < 0.01
    assert m[3].weight_codebook.numel() == 32 and m[7].weight_codebook.numel() == 8
    assert res["history"][-1]["file_bytes"] == (tmp_path / "m.mzip").stat().st_size
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(mz.load(tmp_path / "m.mzip", model=mz.zoo.lenet5(image_size=8))(x), m(x))


@pytest.mark.parametrize("kw", [{"sparsity": 1.0}, {"sparsity": {"3": -0.1}}, {"steps": 0},
                                {"fc_bits": 17}, {"conv_bits": True}])
def test_pipeline_rejects_bad_settings(kw):
    with pytest.raises(mz.ConfigError):
        mz.deep_compression(mz.zoo.lenet5(image_size=8), [], progress=False, **kw)


def test_distillation_recovery_trains_and_keeps_masks(digits):
    torch.manual_seed(0)
    m = mz.zoo.lenet300(in_features=64)
    teacher = mz.zoo.lenet300(in_features=64)
    train = list(digits.train)[:4]
    before = m[1].weight.detach().clone()
    mz.deep_compression(m, train, sparsity=0.8, steps=1, prune_epochs=1, fc_bits=3,
                        cluster_epochs=1, teacher=teacher, progress=False)
    kept = m[1].weight_mask
    ws = [m[i].weight for i in (1, 3, 5)]
    zeros = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    assert abs(zeros - 0.8) < 0.01  # global ranking: 80% over all layers
    assert kept.any() and not torch.allclose(m[1].weight[kept], before[kept])
    assert (m[1].weight[~kept] == 0).all() and len(torch.unique(m[1].weight[kept])) <= 8
