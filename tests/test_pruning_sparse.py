"""N:M, Wanda and SparseGPT: exact patterns, compact storage, better than magnitude."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import modelzip as mz
from modelzip.calib import collect
from modelzip.io.nm_pattern import nm_decode, nm_encode
from modelzip.io.sparse import decode_pattern, encode_pattern
from modelzip.ops.sparsegpt import sparsegpt
from modelzip.ops.sparsity import nm_mask, rowwise_mask


def _gpt() -> torch.nn.Module:
    torch.manual_seed(0)
    return mz.zoo.tiny_gpt(vocab_size=17, d_model=32, n_layer=2, n_head=2, seq_len=32)


def _tokens(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 17, (4, 32), generator=g) for _ in range(n)]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_pattern(n, m):
    mask = nm_mask(torch.randn(6, 32), n, m)
    assert (mask.reshape(6, -1, m).sum(-1) == n).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 16)])
def test_nm_storage_is_compact_and_exact(n, m):
    keep = nm_mask(torch.randn(64, 64), n, m).numpy().ravel()
    meta, data = encode_pattern(keep)
    assert meta["layout"] == "nm" and meta["m"] == m and meta["n"] == n
    assert len(data) == math.ceil(keep.size // m * meta["bits"] / 8)
    assert len(data) < keep.size // 8  # smaller than a bitmask
    assert np.array_equal(decode_pattern(meta, data, keep.size), keep)


def test_nm_decode_rejects_malformed():
    keep = nm_mask(torch.randn(8, 16), 2, 4).numpy().ravel()
    meta, data = nm_encode(keep)
    bad = [({**meta, "m": 5}, data), ({**meta, "n": 4}, data), ({**meta, "bits": 9}, data),
           (meta, data[:-1]), (meta, b"\xff" * len(data)), ({**meta, "n": True}, data)]
    for bm, bd in bad:
        with pytest.raises(mz.FormatError):
            decode_pattern(bm, bd, keep.size)
    with pytest.raises(mz.FormatError):
        nm_decode(meta, data, keep.size + 4)
    assert nm_encode(np.ones(16, bool)) is None and nm_encode(keep[:-1]) is None


def test_nm_prune_file_uses_nm_layout(tmp_path):
    model = mz.zoo.lenet300(in_features=64)
    mz.prune(model, mz.NM(2, 4))
    for i in (1, 3, 5):
        w = model[i].weight.reshape(model[i].weight.shape[0], -1, 4)
        assert ((w != 0).sum(-1) <= 2).all()
    mz.save(model, tmp_path / "m.mzip")
    layouts = [e["pattern"]["layout"] for e in mz.read_manifest(tmp_path / "m.mzip")["tensors"]
               if e.get("codec") == "pattern"]
    assert layouts == ["nm", "nm", "nm"]


def test_nm_pads_short_rows():
    mask = nm_mask(torch.arange(12.0).reshape(2, 6), 2, 4)
    assert mask.tolist()[0] == [False, False, True, True, True, True]
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 4))
    mz.prune(model, mz.NM(2, 4))
    assert model[0].weight_mask.sum().item() == 8 * 4


def test_rowwise_mask_exact():
    mask = rowwise_mask(torch.randn(5, 10), 0.3)
    assert (mask.sum(1) == 7).all()


def _layer_error(w, keep, x):
    return ((x @ w.T - x @ (w * keep).T) ** 2).sum().item()


def test_sparsegpt_beats_magnitude_on_a_layer():
    torch.manual_seed(0)
    x = torch.randn(512, 64) @ torch.randn(64, 64)  # correlated inputs
    w = torch.randn(32, 64)
    h = 2 * x.T.double() @ x.double() / x.shape[0]
    for n, m in ((None, None), (2, 4)):
        new, keep = sparsegpt(w, h, 0.5, n=n, m=m, blocksize=16)
        assert (new[~keep] == 0).all()
        assert abs(keep.float().mean().item() - 0.5) < 0.02
        mag = nm_mask(w.abs(), 2, 4) if n else rowwise_mask(w.abs(), 0.5)
        err_sgpt = ((x @ w.T - x @ new.T) ** 2).sum().item()
        assert err_sgpt < 0.7 * _layer_error(w, mag, x)


@pytest.mark.parametrize("cfg", [mz.Wanda(sparsity=0.5), mz.SparseGPT(sparsity=0.5),
                                 mz.Wanda(n=2, m=4), mz.SparseGPT(n=2, m=4)])
def test_calibrated_on_tiny_gpt(cfg, tmp_path):
    model = _gpt()
    mz.prune(model, cfg, calib_data=_tokens())
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            assert hasattr(mod, "weight_mask"), name
            assert abs((mod.weight != 0).float().mean().item() - 0.5) < 0.03
    x = _tokens(1, seed=9)[0]
    mz.save(model, tmp_path / "g.mzip")
    torch.testing.assert_close(mz.load(tmp_path / "g.mzip")(x), model(x), atol=0, rtol=0)


def test_calibration_is_sequential_and_needs_data():
    """SparseGPT's later blocks see the pruned earlier blocks' outputs."""
    model = _gpt()
    with pytest.raises(mz.ModelzipError, match="calib_data"):
        mz.prune(model, mz.SparseGPT())
    data = _tokens()
    dense = collect(model, {"b1": model.blocks[1].attn.q}, data, hessian=False)["b1"]
    mz.prune(model, mz.Wanda(sparsity=0.5, ignore=["re:blocks\\.1\\..*", "head"]),
             calib_data=data)
    after = collect(model, {"b1": model.blocks[1].attn.q}, data, hessian=False)["b1"]
    assert not torch.allclose(dense.l2_norm, after.l2_norm)
    assert not hasattr(model.blocks[1].attn.q, "weight_mask")


def test_hf_bert_wanda_and_sparsegpt():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    for method in (mz.Wanda(sparsity=0.5), mz.SparseGPT(n=2, m=4)):
        torch.manual_seed(0)
        model = transformers.BertModel(cfg).eval()
        g = torch.Generator().manual_seed(1)
        data = [{"input_ids": torch.randint(0, 50, (4, 12), generator=g),
                 "attention_mask": torch.ones(4, 12, dtype=torch.long)} for _ in range(3)]
        mz.prune(model, method, calib_data=data)
        q = model.encoder.layer[1].attention.self.query
        assert abs((q.weight != 0).float().mean().item() - 0.5) < 0.03
        assert torch.isfinite(model(**data[0]).last_hidden_state).all()


def test_prune_until_stops_at_requirement(digits, trained_mlp):
    from modelzip.pipeline import prune_until

    def evaluate(m):
        return mz.accuracy(m, digits.test)

    hist = prune_until(trained_mlp, mz.Magnitude(scope="global"), digits.train,
                       evaluate=evaluate, levels=[0.5, 0.9, 0.999], max_drop=0.05,
                       epochs_per_step=0.5, lr=1e-3, progress=False)
    assert hist[-1]["accepted"] is False and hist[-2]["accepted"] is True
    sparsity = 1 - mz.count_params(trained_mlp)[1] / mz.count_params(trained_mlp)[0]
    assert abs(sparsity - hist[-2]["sparsity"]) < 0.01
    assert evaluate(trained_mlp) >= hist[0]["metric"] - 0.05


def test_hf_gpt2_conv1d_layers():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2,
                                  n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2Model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 50, (4, 16), generator=g) for _ in range(3)]
    mz.prune(model, mz.SparseGPT(n=2, m=4), calib_data=data)
    w = model.h[1].mlp.c_fc.weight  # (in, out): groups run along the input dim
    assert ((w.t().reshape(w.shape[1], -1, 4) != 0).sum(-1) <= 2).all()
    assert hasattr(model.h[0].attn.c_attn, "weight_mask")
    assert torch.isfinite(model(data[0]).last_hidden_state).all()


def test_wanda_layer_group_ranks_the_whole_layer():
    """group='layer': one threshold per layer on |W|*||X||, so rows differ but the layer
    loses exactly half; group='row' prunes exactly half of every row."""
    data = _tokens()
    model, ref = _gpt(), _gpt()
    q = ref.blocks[0].attn.q
    norm = collect(ref, {"q": q}, data, hessian=False)["q"].l2_norm
    scores = q.weight.detach().abs() * norm
    mz.prune(model, mz.Wanda(sparsity=0.5, group="layer"), calib_data=data)
    kept = model.blocks[0].attn.q.weight_mask.bool()
    assert kept.sum().item() == scores.numel() // 2
    assert scores[kept].min() >= scores[~kept].max()  # the top half of the whole layer
    assert kept.float().mean(1).std() > 0  # rows are not all cut equally
    rows = _gpt()
    mz.prune(rows, mz.Wanda(sparsity=0.5), calib_data=data)
    assert torch.all(rows.blocks[0].attn.q.weight_mask.float().mean(1) == 0.5)
