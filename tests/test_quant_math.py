"""Property tests of the quantization math: round-trip bounds, packing, binary/ternary,
rounding modes, MSE clipping, observers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelzip.ops import observers as obs
from modelzip.ops.pack import pack, pack_rows, unpack, unpack_rows
from modelzip.ops.quant import (
    QSpec,
    dequantize,
    fake_quantize,
    grouped,
    mse_threshold,
    qparams,
    quantize,
    round_values,
    search_clip,
)

specs = st.builds(QSpec, bits=st.integers(2, 8), symmetric=st.booleans(),
                  group_size=st.sampled_from([None, -1, 4, 7, 16]))


@settings(max_examples=60, deadline=None)
@given(spec=specs, rows=st.integers(1, 6), cols=st.integers(1, 40), seed=st.integers(0, 99))
def test_roundtrip_error_is_at_most_half_a_step(spec, rows, cols, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    scale, zero = qparams(w, spec)
    codes = quantize(w, scale, zero, spec)
    assert codes.shape == w.shape
    assert codes.min() >= spec.qmin and codes.max() <= spec.qmax
    err = grouped(dequantize(codes, scale, zero, spec.group_size) - w, spec.group_size)
    assert (err.abs() <= scale.unsqueeze(-1) / 2 * (1 + 1e-5) + 1e-7).all()
    # dequantization is exact: re-quantizing the dequantized tensor gives the same codes
    d = dequantize(codes, scale, zero, spec.group_size)
    assert torch.equal(quantize(d, scale, zero, spec), codes)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 16), signed=st.booleans(), n=st.integers(0, 67),
       seed=st.integers(0, 99))
def test_packing_is_exact_for_every_width(bits, signed, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1))) if signed else (0, 1 << bits)
    codes = rng.integers(lo, hi, size=n)
    data = pack(codes, bits, signed)
    assert len(data) == (n * bits + 7) // 8
    assert np.array_equal(unpack(data, bits, n, signed), codes)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_row_packing_roundtrip(bits):
    codes = torch.randint(0, 1 << bits, (5, 13), dtype=torch.uint8)
    packed = pack_rows(codes, bits)
    assert packed.shape == (5, -(-13 * bits // 8))
    assert torch.equal(unpack_rows(packed, bits, 13), codes)


def test_binary_is_sign_times_mean_abs():
    w = torch.randn(4, 10)
    spec = QSpec(1, True, None)
    scale, zero = qparams(w, spec)
    assert torch.allclose(scale[:, 0], w.abs().mean(1))
    d = dequantize(quantize(w, scale, zero, spec), scale, zero, None, binary=True)
    assert torch.allclose(d, torch.sign(w) * w.abs().mean(1, keepdim=True))


def test_binary_mean_excludes_group_padding():
    w = torch.ones(2, 10)
    scale, _ = qparams(w, QSpec(1, True, 4))  # groups of 4, 4, 2
    assert torch.allclose(scale, torch.ones(2, 3))


def test_symmetric_two_bit_is_ternary():
    w = torch.randn(8, 32)
    fq = fake_quantize(w, QSpec(2, True, None))
    levels = torch.unique(torch.round(fq / fq.abs().amax(1, keepdim=True) * 1e4))
    assert set(levels.tolist()) <= {-1e4, 0.0, 1e4}


def test_rounding_modes():
    x = torch.full((20000,), 0.25)
    assert torch.equal(round_values(x, "floor"), torch.zeros_like(x))
    assert torch.equal(round_values(x, "nearest"), torch.zeros_like(x))
    st_mean = round_values(x, "stochastic", torch.Generator().manual_seed(0)).mean()
    assert abs(float(st_mean) - 0.25) < 0.02  # unbiased
    with pytest.raises(ValueError):
        round_values(x, "up")


def test_mse_clip_never_worse_than_minmax():
    w = torch.randn(16, 64)
    w[0, 0] = 25.0  # an outlier
    spec = QSpec(3, True, 32)
    ratio = search_clip(w, spec)
    assert ratio.min() < 1.0
    assert ((fake_quantize(w, spec, ratio) - w) ** 2).sum() <= \
        ((fake_quantize(w, spec) - w) ** 2).sum()
    assert 0 < mse_threshold(w, 4) < 25.0


def test_observers_ranges():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 8, generator=g)
    x[0, 0] = 40.0
    stats = obs.RangeStats(8)
    for chunk in x.split(500):
        stats.add(chunk)
    lo, hi = obs.choose_range(stats, "minmax")
    assert hi == pytest.approx(40.0) and lo == pytest.approx(float(x.min()))
    for name in ("percentile", "mse", "entropy"):
        lo2, hi2 = obs.choose_range(stats, name)
        assert lo2 < 0 < hi2 < 40.0, name
    scale, zero = obs.affine_qparams(0.0, 6.0)
    assert zero == -128 and scale == pytest.approx(6 / 255)


def test_smooth_scales_balance_maxima():
    act = torch.tensor([100.0, 1.0])
    w = torch.tensor([[1.0, 1.0]])
    s = obs.smooth_scales(act, w, 0.5)
    assert torch.allclose(act / s, w.abs().amax(0) * s)
