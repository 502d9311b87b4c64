"""Weight-only solvers, integer layers, QAT and clipping on small models."""

import copy

import pytest
import torch

import modelzip as mz
from modelzip.ops.awq import output_error, search_scales
from modelzip.ops.gptq import gptq
from modelzip.ops.quant import QSpec, dequantize, fake_quantize
from modelzip.quantization import Int8Conv2d, Int8Linear, PackedLinear
from modelzip.quantization.int8 import int_mm


def _correlated(n=512, d=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)
    x[:, :3] *= 8  # a few salient channels
    return x, 2 * x.T @ x / n


@pytest.mark.parametrize("group,actorder", [(None, False), (16, False), (16, True), (20, False)])
def test_gptq_beats_rtn_on_output_error(group, actorder):
    x, h = _correlated()
    w = torch.randn(24, 48, generator=torch.Generator().manual_seed(1))
    spec = QSpec(3, True, group)
    codes, scale, zero = gptq(w, h, spec, blocksize=16, actorder=actorder)
    assert codes.min() >= spec.qmin and codes.max() <= spec.qmax
    dq = dequantize(codes, scale, zero, group)
    assert output_error(dq - w, h) < output_error(fake_quantize(w, spec) - w, h)


def test_awq_scales_not_worse_than_rtn():
    x, h = _correlated()
    w = torch.randn(24, 48, generator=torch.Generator().manual_seed(2))
    spec = QSpec(3, True, 16)
    s = search_scales(w, x.abs().mean(0), h, spec)
    err = output_error(fake_quantize(w * s, spec) / s - w, h)
    assert err <= output_error(fake_quantize(w, spec) - w, h)


def test_weight_only_methods_on_tiny_gpt_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = mz.zoo.tiny_gpt(vocab_size=17, d_model=32, n_layer=2, n_head=2, seq_len=32)
    calib = [torch.randint(0, 17, (4, 32)) for _ in range(3)]
    x = calib[0]
    for method in ("gptq", "awq"):
        m = copy.deepcopy(model)
        mz.quantize(m, mz.WeightOnly(bits=4, group_size=24, method=method,
                                     targets=["re:blocks.*"]), calib_data=calib)
        assert "weight_codes" in m.blocks[0].mlp.fc.state_dict()  # packed by default
        assert isinstance(m.head.weight, torch.nn.Parameter)  # outside the targets
        mz.save(m, tmp_path / f"{method}.mzip")
        loaded = mz.load(tmp_path / f"{method}.mzip")
        assert torch.equal(loaded(x), m(x))


def test_packed_linear_matches_reparam_and_is_small():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(40, 8))
    ref = copy.deepcopy(lin)
    mz.quantize(ref, mz.WeightOnly(bits=4, group_size=16))
    mz.quantize(lin, mz.WeightOnly(bits=4, group_size=16, packed=True))
    assert isinstance(lin[0], PackedLinear)
    assert lin[0].codes.dtype == torch.uint8 and lin[0].codes.shape == (8, 20)
    assert not any(p.dtype.is_floating_point and p.numel() >= 320 for p in lin[0].buffers())
    x = torch.randn(3, 40)
    torch.testing.assert_close(lin(x), ref(x))


def test_int8_linear_matches_dequantized_reference():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = Int8Linear.from_float(lin)
    x = torch.randn(37, 64)
    ref = torch.nn.functional.linear(x, q.dequantized(), lin.bias)
    # error of per-token int8 activations: at most half a step per product, summed
    sx = x.abs().amax(1, keepdim=True) / 127
    bound = (sx / 2 * q.dequantized().abs().sum(1)).max()
    assert (q(x) - ref).abs().max() <= bound
    assert (q(x) - lin(x)).abs().max() < 0.05 * lin(x).abs().max()
    assert q.weight_codes.dtype == torch.int8


def test_int8_static_zero_point_is_exact_for_codes():
    lin = torch.nn.Linear(16, 8)
    q = Int8Linear.from_float(lin, static=True)
    q.set_activation(1 / 255, -128)  # inputs in [0, 1]
    x = torch.randint(0, 256, (20, 16)).float() / 255  # exactly representable
    ref = torch.nn.functional.linear(x, q.dequantized(), lin.bias)
    torch.testing.assert_close(q(x), ref, atol=1e-5, rtol=1e-5)


def test_int_mm_fallback_and_shapes():
    a = torch.randint(-127, 128, (3, 5), dtype=torch.int8)
    b = torch.randint(-127, 128, (5, 7), dtype=torch.int8)
    assert torch.equal(int_mm(a, b), a.int() @ b.int())


def test_int8_conv_matches_float_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
    q = Int8Conv2d.from_float(conv)
    x = torch.randn(2, 3, 9, 9)
    y = conv(x)
    assert q(x).shape == y.shape
    assert (q(x) - y).abs().max() < 0.03 * y.abs().max()


def test_int8_ignore_keeps_layer_float():
    model = mz.zoo.lenet300(in_features=64)
    mz.quantize(model, mz.Int8(ignore=["re:5"]))
    assert isinstance(model[1], Int8Linear) and type(model[5]) is torch.nn.Linear


def test_int8_static_needs_calibration():
    with pytest.raises(mz.DataError):
        mz.quantize(mz.zoo.lenet300(in_features=64), mz.Int8(activations="static"))


def test_qat_trains_scales_and_converts(digits):
    torch.manual_seed(0)
    model = mz.zoo.lenet300(in_features=64)
    mz.quantize(model, mz.QAT(bits=4))
    s0 = model[1].weight_scale.detach().clone()
    assert model[1].weight_scale.requires_grad
    mz.train(model, digits.train, epochs=1, lr=1e-2, progress=False)
    assert not torch.equal(s0, model[1].weight_scale.detach())
    before = mz.accuracy(model, digits.test)
    mz.convert(model)
    assert model[1]._mz_reparam["weight"]["kind"] == "affine"
    assert model[1].weight_codes.abs().max() <= 7
    assert mz.accuracy(model, digits.test) == pytest.approx(before, abs=1e-9)
    assert before > 0.8


def test_clip_fixed_is_exactly_the_seed_rule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.9, 0.5, 2.0], [-0.2, 0.3, -3.0, 0.0]]))
    mz.clip(model, mz.Clip(threshold=0.4, value=0.25))
    expect = torch.tensor([[0.1, 0.25, 0.25, 0.25], [-0.2, 0.3, 0.25, 0.0]])
    assert torch.equal(model[0].weight.detach(), expect)
    mz.clip(model, mz.Clip(threshold=0.2))  # no value: saturate, keeping the sign
    assert model[0].weight.abs().max() <= 0.2 and model[0].weight[1, 0] == -0.2


def test_clip_percentile_and_mse():
    torch.manual_seed(0)
    model = mz.zoo.lenet300(in_features=64)
    top = model[1].weight.abs().max().item()
    mz.clip(model, mz.Clip(method="percentile", percentile=99.0))
    assert model[1].weight.abs().max() < top
    assert (model[1].weight.abs() >= model[1].weight.abs().max() - 1e-7).float().mean() > 0.005
    mz.clip(model, mz.Clip(method="mse", bits=2))
    assert model[1].weight.abs().max() < top


def test_int8_quantizes_embedding_tables_per_row(tmp_path):
    torch.manual_seed(0)
    model = mz.zoo.tiny_gpt(vocab_size=17, d_model=32, n_layer=1, n_head=2, seq_len=16)
    x = torch.randint(0, 17, (2, 16))
    ref = model(x)
    mz.quantize(model, mz.Int8(ignore=["head"]))
    assert model.tok_emb.weight_codes.dtype == torch.int8
    assert type(model.head) is torch.nn.Linear
    assert isinstance(model.blocks[0].mlp.fc, Int8Linear)
    assert (model(x) - ref).abs().max() < 0.05 * ref.abs().max()
    mz.save(model, tmp_path / "m.mzip")
    assert torch.equal(mz.load(tmp_path / "m.mzip")(x), model(x))


def test_int8_model_measures_like_fp32():
    torch.manual_seed(0)
    model = mz.zoo.lenet5(image_size=8)
    x = torch.randn(2, 1, 8, 8)
    before = mz.count_macs(model, x)
    mz.quantize(model, mz.Int8())
    assert isinstance(model[0], Int8Conv2d)
    assert mz.count_macs(model, x) == before


def test_packed_layer_runs_after_an_inference_mode_call() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    mz.quantize(model, mz.WeightOnly(bits=4, group_size=32))  # packed by default
    x = torch.randn(2, 64)
    with torch.inference_mode():
        a = model(x)
    with torch.no_grad():
        b = model(x)  # the thread's scratch buffer was first made in inference mode
    assert torch.equal(a, b)


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (3, True), (2, False)])
def test_packed_set_codes_round_trips_and_refuses_codes_out_of_range(bits, symmetric):
    """Codes go in as the state dict holds them (int8 signed or uint8); one outside the
    width (either side, including int8 wrap-around) is a FormatError, never packed."""
    torch.manual_seed(0)
    lin = PackedLinear(256, 16, True, bits, 128, symmetric)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if symmetric else (0, 1 << bits)
    dtype = torch.int8 if symmetric else torch.uint8
    codes = torch.randint(lo, hi, (16, 256)).to(dtype)
    lin.set_codes(codes)
    assert torch.equal(lin.codes_tensor(), codes)
    bad = [hi] + ([lo - 1, -128] if symmetric else [255])
    for value in bad:
        wrong = codes.clone()
        wrong[3, 7] = value
        with pytest.raises(mz.FormatError, match="outside"):
            lin.set_codes(wrong)
    assert torch.equal(lin.codes_tensor(), codes)


@pytest.mark.parametrize("symmetric", [True, False])
def test_packed_bf16_forward_is_as_precise_as_a_dense_bf16_weight(symmetric):
    """In bf16 the packed layer dequantizes (code - shift) * scale: no cancellation
    between two large terms, so its error is that of a dense bf16 weight."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(512, 256))
    ref = copy.deepcopy(lin)
    mz.quantize(lin, mz.WeightOnly(bits=4, group_size=128, symmetric=symmetric, packed=True))
    mz.quantize(ref, mz.WeightOnly(bits=4, group_size=128, symmetric=symmetric,
                                   packed=False))
    x = torch.randn(4, 512) * 3
    exact = ref(x).detach()
    w, b = ref[0].weight.detach(), ref[0].bias.detach()
    dense = torch.nn.functional.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()).float()
    packed = lin.to(torch.bfloat16)(x.bfloat16()).float()
    assert (packed - exact).abs().max() <= 1.5 * (dense - exact).abs().max() + 1e-3
