"""Structured pruning: models shrink physically, outputs keep their shape, files round-trip."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modelzip as mz
from modelzip.measure import count_macs


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: 3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU, and a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn1 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.bn2 = nn.BatchNorm2d(24)
        self.side = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn2(self.pw(F.relu(self.bn1(self.dw(x))))))
        z = torch.cat([y, self.side(x)], dim=1)
        return self.head(F.max_pool2d(z, 2).view(z.shape[0], -1))


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
            m.num_batches_tracked.fill_(123_456)  # an int64 buffer the .mzip must keep
    return model.eval()


MODELS = {
    "mlp": (lambda: mz.zoo.lenet300(in_features=64), (8, 1, 8, 8)),
    "lenet5": (lambda: mz.zoo.lenet5(image_size=8), (8, 1, 8, 8)),
    "resnet": (lambda: _randomize_bn(mz.zoo.resnet_small(channels=(8, 16, 32))), (8, 1, 8, 8)),
    "depthwise": (lambda: _randomize_bn(DepthwiseSeparable()), (8, 1, 8, 8)),
}


def _gpt() -> nn.Module:
    return mz.zoo.tiny_gpt(vocab_size=17, d_model=32, n_layer=2, n_head=4, seq_len=32)


@pytest.mark.parametrize("name", list(MODELS))
def test_structured_shrinks_and_runs(name, tmp_path):
    build, shape = MODELS[name]
    model = build()
    x = torch.randn(*shape)
    out0, p0, mac0 = model(x), mz.count_params(model)[0], count_macs(model, x)
    assert mz.prune(model, mz.Structured(0.5), example_inputs=x) is model
    out = model(x)
    p1, mac1 = mz.count_params(model)[0], count_macs(model, x)
    assert out.shape == out0.shape and torch.isfinite(out).all()
    assert p1 < 0.6 * p0 and mac1 < 0.6 * mac0, (p0, p1, mac0, mac1)
    size = mz.save(model, tmp_path / "m.mzip")
    again = mz.load(tmp_path / "m.mzip", model=build())
    torch.testing.assert_close(again(x), out, atol=0, rtol=0)
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys()  # BatchNorm counters (int64) included
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert size < mz.measure(build())["fp32_bytes"]


def test_structured_tiny_gpt_heads_and_mlp(tmp_path):
    model = _gpt()
    idx = torch.randint(0, 17, (2, 24))
    p0 = mz.count_params(model)[0]
    mz.prune(model, mz.Structured(0.5), example_inputs=idx)
    att = model.blocks[0].attn
    assert att.n_head == 2 and att.q.out_features == 16 and att.proj.in_features == 16
    assert model.blocks[0].mlp.fc.out_features == 64
    assert model.blocks[0].ln1.normalized_shape == (32,)  # the residual stream is kept
    assert model(idx).shape == (2, 24, 17)
    assert mz.count_params(model)[0] < 0.7 * p0
    mz.save(model, tmp_path / "g.mzip")
    loaded = mz.load(tmp_path / "g.mzip")
    assert loaded.blocks[0].attn.n_head == 2
    torch.testing.assert_close(loaded(idx), model(idx), atol=0, rtol=0)


def _kill_channels(model: nn.Module, frac: float) -> None:
    """Zero the last ``frac`` of every conv/linear output (weights, bias, BN affine)."""
    last = list(model.modules())[-1]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not last:
                n = m.weight.shape[0]
                m.weight[n - int(frac * n):] = 0
                if m.bias is not None:
                    m.bias[n - int(frac * n):] = 0
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight[n - int(frac * n):] = 0
                m.bias[n - int(frac * n):] = 0


@pytest.mark.parametrize("name", ["mlp", "resnet", "depthwise"])
def test_removing_dead_channels_is_exact(name):
    """Channels that carry only zeros are the ones removed, and outputs do not change."""
    build, shape = MODELS[name]
    model = build()
    _kill_channels(model, 0.5)
    x = torch.randn(*shape)
    ref = model(x)
    mz.prune(model, mz.Structured(0.5), example_inputs=x)
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-4)


def test_residual_channels_pruned_together():
    model = _randomize_bn(mz.zoo.resnet_small(channels=(8, 16, 32)))
    x = torch.randn(2, 1, 8, 8)
    mz.prune(model, mz.Structured(0.5), example_inputs=x)
    block = model.stages[1]
    assert block.conv2.out_channels == block.shortcut[0].out_channels == 8
    assert block.bn2.num_features == 8 and model.fc.in_features == 16


def test_targets_and_criteria():
    for crit in ("l1", "l2"):
        model = mz.zoo.lenet300(in_features=64)
        mz.prune(model, mz.Structured(0.25, criterion=crit, targets=["re:3"]),
                 example_inputs=torch.randn(2, 64))
        assert model[1].out_features == 300 and model[3].out_features == 75
        assert model[5].in_features == 75


def test_taylor_uses_labelled_calibration(digits):
    model = mz.zoo.lenet300(in_features=64)
    mz.train(model, digits.train, epochs=1, lr=3e-3, progress=False)
    mz.prune(model, mz.Structured(0.5, criterion="taylor", max_batches=2),
             calib_data=digits.train)
    assert model[1].out_features == 150
    with pytest.raises(mz.ModelzipError, match="calib_data"):
        mz.prune(mz.zoo.lenet300(in_features=64), mz.Structured(0.5, criterion="taylor"),
                 example_inputs=torch.randn(2, 64))


class Weird(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)
        self.c = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(torch.roll(h, 1, dims=-1)) + self.c(h)


def test_unsupported_op_raises_or_skips():
    x = torch.randn(2, 8)
    with pytest.raises(mz.ModelzipError, match=r"'a'.*roll"):
        mz.prune(Weird(), mz.Structured(0.5), example_inputs=x)
    model = Weird()
    with pytest.warns(UserWarning, match="roll"):
        mz.prune(model, mz.Structured(0.5, on_unsupported="skip"), example_inputs=x)
    assert model.a.out_features == 16


def test_needs_example_inputs():
    with pytest.raises(mz.ModelzipError, match="example_inputs"):
        mz.prune(mz.zoo.lenet300(in_features=64), mz.Structured(0.5))


class Untraceable(nn.Module):
    """Data-dependent control flow in the root: the parts are analysed separately."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e9:
            return x
        return self.body(x)


def test_untraceable_root_falls_back_to_children():
    model = Untraceable()
    x = torch.randn(3, 8)
    mz.prune(model, mz.Structured(0.5), example_inputs=x)
    assert model.body[0].out_features == 16 and model.body[2].out_features == 8
    assert model(x).shape == (3, 8)


def test_module_called_twice_and_finetune_keeps_shape(digits):
    model = copy.deepcopy(mz.zoo.lenet300(in_features=64))
    mz.prune(model, mz.Structured(0.5), calib_data=digits.train)
    mz.finetune(model, digits.train, epochs=0.2, lr=1e-3, progress=False)
    assert model[1].weight.shape == (150, 64)


def test_warns_when_nothing_can_be_pruned():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.warns(UserWarning, match="nothing could be pruned"):
        mz.prune(model, mz.Structured(0.5), example_inputs=torch.randn(2, 4))
    assert model[0].out_features == 3


def test_attention_state_from_older_files():
    """Files written before the attention state became a tensor stored it as a dict."""
    att = _gpt().blocks[0].attn
    att.set_extra_state({"n_head": 2, "head_dim": 16})
    assert (att.n_head, att.head_dim) == (2, 16)
    with pytest.raises(mz.errors.FormatError):
        att.set_extra_state({"n_head": 0})
