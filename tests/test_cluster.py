"""Weight clustering: k-means, codes + codebook, centroid fine-tuning, with pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import modelzip as mz
from modelzip.clustering import cluster_tensor, code_bits
from modelzip.ops.kmeans import assign, init_centroids, kmeans1d


def test_kmeans_linear_init_spans_range():
    x = np.array([-2.0, 0.1, 0.2, 5.0])
    c = init_centroids(x, 3, "linear")
    assert c[0] == -2.0 and c[-1] == 5.0 and np.allclose(np.diff(c), 3.5)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.01, 200) for m in (-1.0, 0.0, 2.0)])
    for init in ("linear", "kmeans++"):
        cents, labels = kmeans1d(x, 3, init)
        assert np.allclose(cents, [-1, 0, 2], atol=0.01)
        assert np.array_equal(labels, assign(x, cents))
        assert np.all(np.diff(cents) >= 0)


def test_kmeans_is_a_local_optimum():
    x = np.random.default_rng(1).standard_normal(5000)
    cents, labels = kmeans1d(x, 8)
    for j in range(8):
        if np.any(labels == j):
            assert abs(x[labels == j].mean() - cents[j]) < 1e-6


def test_kmeans_edge_cases():
    cents, labels = kmeans1d(np.zeros(0), 4)
    assert labels.size == 0 and cents.size == 4
    cents, labels = kmeans1d(np.full(10, 3.0), 4)
    assert np.all(cents[labels] == 3.0)
    with pytest.raises(ValueError):
        init_centroids(np.ones(3), 2, "bogus")


def test_code_bits():
    assert [code_bits(k) for k in (2, 3, 4, 16, 17, 256, 65536)] == [1, 2, 2, 4, 5, 8, 16]


def test_cluster_only_kept_weights():
    w = torch.tensor([[0.0, 1.0, 1.1], [5.0, -3.0, 0.0]])
    mask = w != 0
    codes, book = cluster_tensor(w, mask, 3)
    shared = book[codes.long()] * mask
    assert torch.equal(shared == 0, ~mask)
    assert set(book.tolist()) >= {5.0, -3.0}


def _clustered(k=8, sparsity=0.8):
    torch.manual_seed(0)
    m = mz.zoo.lenet300(in_features=64)
    mz.prune(m, mz.Magnitude(sparsity=sparsity))
    mz.cluster(m, mz.Cluster(clusters=k))
    return m


def test_cluster_layer_state():
    m = _clustered(k=8)
    layer = m[1]
    assert "weight" not in layer._parameters
    assert isinstance(layer.weight_codebook, torch.nn.Parameter)
    assert layer.weight_codes.dtype == torch.uint8 and layer.weight_codes.max() < 8
    assert layer._mz_bits["weight_codes"] == (3, False)
    assert len(torch.unique(layer.weight)) <= 9  # 8 centroids + the pruned zeros
    assert torch.equal(layer.weight == 0, ~layer.weight_mask | (layer.weight == 0))
    assert (layer.weight[~layer.weight_mask] == 0).all()


def test_centroid_gradient_is_sum_of_weight_gradients():
    m = _clustered(k=4)
    layer = m[3]
    x = torch.randn(5, layer.in_features)
    out = layer(x)
    out.pow(2).sum().backward()
    # the same loss on a free copy of the shared weight gives dL/dW
    w = layer.weight.detach().clone().requires_grad_(True)
    F.linear(x, w, layer.bias.detach()).pow(2).sum().backward()
    g = w.grad * layer.weight_mask
    expected = torch.zeros(4).index_add_(0, layer.weight_codes.long().ravel(), g.ravel())
    torch.testing.assert_close(layer.weight_codebook.grad, expected, rtol=1e-4, atol=1e-5)


def test_finetune_trains_codebook_keeps_codes_and_zeros(digits):
    m = _clustered(k=8, sparsity=0.7)
    codes = m[1].weight_codes.clone()
    book = m[1].weight_codebook.detach().clone()
    mz.finetune(m, list(digits.train)[:5], epochs=1, lr=1e-2, progress=False)
    assert torch.equal(m[1].weight_codes, codes)
    assert not torch.equal(m[1].weight_codebook.detach(), book)
    w = m[1].weight
    assert (w[~m[1].weight_mask] == 0).all()
    assert len(torch.unique(w[m[1].weight_mask])) <= 8


def test_recluster_and_quantized_layer_refused():
    m = _clustered(k=16)
    mz.cluster(m, mz.Cluster(clusters=4, targets=["re:1"]))
    assert m[1].weight_codebook.numel() == 4
    q = mz.zoo.lenet300(in_features=64)
    mz.quantize(q, mz.WeightOnly(bits=8, group_size=None, packed=False))
    with pytest.raises(mz.UnsupportedModelError):
        mz.cluster(q, mz.Cluster(clusters=4))
    p = mz.zoo.lenet300(in_features=64)  # packed layers (the default) are not "Linear"
    mz.quantize(p, mz.WeightOnly(bits=8, group_size=None))
    codes = p[1].weight_codes
    mz.cluster(p, mz.Cluster(clusters=4))
    assert torch.equal(p[1].weight_codes, codes)


def test_clustered_file_roundtrip_exact(tmp_path):
    m = _clustered(k=32, sparsity=0.9)
    p = tmp_path / "c.mzip"
    mz.save(m, p)
    loaded = mz.load(p)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded(x), m(x))
    assert isinstance(loaded[1].weight_codebook, torch.nn.Parameter)
    assert loaded[1]._mz_bits["weight_codes"] == (5, False)


def test_kmeans_on_tensors_matches_numpy_and_cluster_takes_a_device():
    """Tensors in, tensors out on their device (the CUDA path is the same code); the
    cluster verb refuses a device that is not here with one clear error."""
    x = np.random.default_rng(2).standard_normal(3000)
    c_np, l_np = kmeans1d(x, 16)
    c_t, l_t = kmeans1d(torch.from_numpy(x), 16)
    assert isinstance(c_t, torch.Tensor) and np.allclose(c_t.numpy(), c_np, rtol=0, atol=1e-12)
    assert np.array_equal(l_t.numpy(), l_np)
    m = mz.zoo.lenet300(in_features=64)
    mz.cluster(m, mz.Cluster(clusters=8), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(mz.ConfigError, match="CUDA"):
            mz.cluster(mz.zoo.lenet300(in_features=64), mz.Cluster(clusters=8),
                       device="cuda")
