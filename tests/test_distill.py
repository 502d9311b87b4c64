"""Distillation: the loss math, feature matching across widths, language models, student
builders, early stopping and the named running losses of the training loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import modelzip as mz
from modelzip.distill import _build_projections
from modelzip.ops import kd
from modelzip.train import fit, task_loss


def _data(limit: int = 256, seed: int = 0):
    return mz.data.digits(batch_size=64, seed=seed, train_limit=limit, test_limit=256)


# ------------------------------------------------------------------------- loss math
def test_kl_gradient_is_hinton_with_t_squared():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 10, generator=g, requires_grad=True)
    t = torch.randn(8, 10, generator=g)
    for temp in (1.0, 4.0):
        s.grad = None
        kd.soft_target_loss(s, t, temp).backward()
        # d/ds [T^2 KL(p_T || q_T)] = T (q_T - p_T), averaged over the rows
        expect = temp * (F.softmax(s.detach() / temp, -1) - F.softmax(t / temp, -1)) / 8
        torch.testing.assert_close(s.grad, expect)
    assert kd.soft_target_loss(t, t, 4.0).abs().item() < 1e-6


def test_high_temperature_limit_is_logit_matching():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    kl = kd.soft_target_loss(s, t, 200.0)
    mse = kd.soft_target_loss(s, t, 200.0, loss="mse")
    # Hinton 2015 sec. 2.1: T^2 KL -> sum (z - v)^2 / (2N) = mse / 2 for zero-mean logits
    assert kl.item() == pytest.approx(mse.item() / 2, rel=1e-2)
    assert mse.item() == pytest.approx(kd.soft_target_loss(s, t, 1.0, loss="mse").item())
    assert kl.item() != pytest.approx(kd.soft_target_loss(s, t, 1.0).item(), rel=1e-2)


def test_per_token_kl_and_mask():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    flat = kd.soft_target_loss(s.reshape(10, 7), t.reshape(10, 7), 2.0)
    torch.testing.assert_close(kd.soft_target_loss(s, t, 2.0), flat)
    mask = torch.zeros(2, 5)
    mask[0, :3] = 1
    only = kd.soft_target_loss(s[0, :3], t[0, :3], 2.0)
    torch.testing.assert_close(kd.soft_target_loss(s, t, 2.0, weight=mask), only)
    with pytest.raises(ValueError):
        kd.soft_target_loss(s, t[:, :4], 2.0)


def test_mix_endpoints():
    hard, soft = torch.tensor(2.0), torch.tensor(6.0)
    assert kd.mix(hard, soft, 0.0) is hard
    assert kd.mix(hard, soft, 1.0) is soft
    assert kd.mix(hard, soft, 0.25).item() == pytest.approx(3.0)


# ---------------------------------------------------------------- distillation runs
@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    t = mz.zoo.lenet5(image_size=8, channels=(8, 16), hidden=64)
    mz.train(t, _data(limit=None).train, epochs=3, lr=3e-3, progress=False)
    return t.eval()


def _agreement(a, b, data) -> float:
    with torch.no_grad():
        x = torch.cat([batch[0] for batch in data])
        return (a(x).argmax(-1) == b(x).argmax(-1)).float().mean().item()


def test_soft_targets_need_no_labels(teacher):
    data = _data(limit=None)
    unlabelled = [batch[0] for batch in data.train]  # alpha=1: a transfer set of inputs
    torch.manual_seed(0)
    student = mz.zoo.student(teacher, width=0.5)
    before = _agreement(student, teacher, data.test)
    mz.distill(student, teacher, unlabelled, mz.Distillation(alpha=1.0, temperature=2.0),
               epochs=4, lr=3e-3, progress=False)
    assert _agreement(student, teacher, data.test) > max(before + 0.3, 0.5)
    with pytest.raises(mz.ModelzipError, match="target"):
        mz.distill(student, teacher, unlabelled, mz.Distillation(alpha=0.5), epochs=1,
                   lr=1e-3, progress=False)


@pytest.mark.parametrize("pair,kind", [({"3": "3"}, torch.nn.Conv2d),
                                       ({"7": "7"}, torch.nn.Linear),
                                       ({"4": "4"}, torch.nn.Identity)])
def test_feature_projections_across_widths(teacher, pair, kind):
    student = mz.zoo.student(teacher, width=0.5) if kind is not torch.nn.Identity else \
        mz.zoo.student(teacher)
    cfg = mz.Distillation(features=pair)
    (proj,) = _build_projections(student, teacher, cfg, next(iter(_data().train)))
    assert isinstance(proj, kind)


def test_feature_matching_across_widths(teacher, monkeypatch):
    """The projected feature distance (student 32 wide, teacher 64) falls only when the
    feature term is trained; the student's own parameters are all that is left after."""
    record: list[float] = []
    real = kd.feature_loss
    monkeypatch.setattr(kd, "feature_loss",
                        lambda s, t: record.append(real(s, t).item()) or real(s, t))
    torch.manual_seed(0)
    init = mz.zoo.student(teacher, width=0.5)
    finals = {}
    for weight in (0.0, 1.0):
        record.clear()
        student = copy.deepcopy(init)
        cfg = mz.Distillation(alpha=0.5, features={"3": "3", "7": "7"}, feature_weight=weight)
        mz.distill(student, teacher, _data(limit=None, seed=1).train, cfg, epochs=2, lr=3e-3,
                   progress=False)
        finals[weight] = sum(record[-10:]) / 10
        assert [n for n, _ in student.named_parameters()] == \
            [n for n, _ in init.named_parameters()]
    assert finals[1.0] < 0.5 * finals[0.0]
    with pytest.raises(mz.ConfigError, match="no module 'nope'"):
        mz.distill(student, teacher, _data().train, mz.Distillation(features={"nope": "3"}),
                   epochs=1, lr=1e-3, progress=False)


def test_language_model_per_token_distillation():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 12, (1, 33), generator=g).repeat(64, 1)
    shift = torch.randint(0, 32, (64,), generator=g)
    tokens = torch.stack([row.roll(int(k)) for row, k in zip(seq, shift)])
    data = [(tokens[i:i + 16, :-1], tokens[i:i + 16, 1:]) for i in range(0, 64, 16)]
    torch.manual_seed(0)
    teacher = mz.zoo.tiny_gpt(vocab_size=12, d_model=32, n_layer=2, n_head=2, seq_len=32)
    mz.train(teacher, data, epochs=15, lr=3e-3, progress=False)
    student = mz.zoo.student(teacher, depth=0.5)
    assert len(student.blocks) == 1

    def kl(model):
        with torch.no_grad():
            return kd.soft_target_loss(model(tokens[:, :-1]), teacher(tokens[:, :-1]), 1.0)

    before = kl(student)
    mz.distill(student, teacher, data, mz.Distillation(temperature=1.0, alpha=0.5),
               epochs=10, lr=3e-3, progress=False)
    assert kl(student) < 0.5 * before


def test_student_and_teacher_must_be_distinct(teacher):
    with pytest.raises(mz.ConfigError, match="deepcopy"):
        mz.distill(teacher, teacher, _data().train, epochs=1, lr=1e-3, progress=False)
    shared = torch.nn.Sequential(teacher[0], torch.nn.Flatten())
    with pytest.raises(mz.ConfigError, match="shares"):
        mz.distill(shared, teacher, _data().train, epochs=1, lr=1e-3, progress=False)


# ------------------------------------------------------------------------ students
def test_student_builders(tmp_path):
    t = mz.zoo.lenet5(image_size=8)
    s = mz.zoo.student(t, width=0.5)
    assert s._mz_arch["kwargs"]["channels"] == [10, 25] and s._mz_arch["kwargs"]["hidden"] == 250
    assert mz.zoo.student("lenet300", width=0.5)[1].out_features == 150
    gpt = mz.zoo.tiny_gpt(vocab_size=10, d_model=48, n_layer=4, n_head=4, seq_len=16)
    thin = mz.zoo.student(gpt, width=0.5, depth=0.5)
    assert (thin.tok_emb.embedding_dim, len(thin.blocks)) == (24, 2)
    path = tmp_path / "s.mzip"
    mz.save(thin, path)
    assert len(mz.load(path).blocks) == 2
    with pytest.raises(mz.ConfigError, match="fixed depth"):
        mz.zoo.student(t, depth=0.5)
    with pytest.raises(mz.ConfigError):
        mz.zoo.student(t, width=0)
    with pytest.raises(mz.UnsupportedModelError):
        mz.zoo.student(torch.nn.Linear(2, 2))


def test_student_inits_from_teacher():
    t = mz.zoo.lenet300(in_features=64)
    same = mz.zoo.student(t, init="copy")
    assert same is not t and torch.equal(same[1].weight, t[1].weight)
    same[1].weight.data.zero_()
    assert t[1].weight.abs().sum() > 0
    gpt = mz.zoo.tiny_gpt(vocab_size=10, d_model=16, n_layer=4, n_head=2, seq_len=16)
    half = mz.zoo.student(gpt, depth=0.5, init="teacher")
    assert torch.equal(half.blocks[1].mlp.fc.weight, gpt.blocks[2].mlp.fc.weight)
    assert torch.equal(half.head.weight, gpt.head.weight)
    with pytest.raises(mz.ConfigError):
        mz.zoo.student(t, width=0.5, init="copy")


# --------------------------------------------------------------- the training loop
def test_early_stopping_restores_best():
    torch.manual_seed(0)
    model = mz.zoo.lenet300(in_features=64, hidden=(16, 8))
    scores, states = iter([0.5, 0.4, 0.3, 0.9]), []

    def evaluate(m):
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    mz.train(model, _data().train, epochs=4, lr=1e-3, progress=False, evaluate=evaluate,
             patience=2)
    assert len(states) == 3  # stopped after two epochs without improvement
    assert all(torch.equal(v, states[0][k]) for k, v in model.state_dict().items())
    assert not model.training
    with pytest.raises(mz.ConfigError):
        mz.train(model, _data().train, epochs=1, lr=1e-3, evaluate=evaluate, patience=0)


def test_distill_early_stopping_sees_the_student(teacher):
    seen = []
    student = mz.zoo.student(teacher, width=0.5)
    mz.distill(student, teacher, _data().train, epochs=3, lr=1e-3, progress=False,
               evaluate=lambda m: seen.append(m) or 0.0, patience=1)
    assert seen == [student, student]


def test_fit_named_losses():
    model = mz.zoo.lenet300(in_features=64, hidden=(16, 8))

    def step(m, batch):
        loss = task_loss(m(batch[0]), batch[1])
        return {"loss": loss, "half": loss / 2}

    before = model[1].weight.clone()
    fit(model, _data().train, epochs=1, lr=1e-3, step_loss=step, progress=False)
    assert not torch.equal(before, model[1].weight)
    with pytest.raises(mz.ModelzipError, match="'loss'"):
        fit(model, _data().train, epochs=1, lr=1e-3, progress=False,
            step_loss=lambda m, b: {"half": task_loss(m(b[0]), b[1])})


class _TokenModel(torch.nn.Module):
    """A Hugging Face-style model: keyword inputs, an output object with .logits."""

    def __init__(self, width: int):
        super().__init__()
        self.emb, self.head = torch.nn.Embedding(9, width), torch.nn.Linear(width, 9)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.head(self.emb(input_ids)), "loss": None})()


def test_dict_batches_with_attention_mask():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (16, 6), generator=g)
    mask = torch.ones(16, 6, dtype=torch.long)
    mask[:, 4:] = 0
    data = [{"input_ids": ids, "attention_mask": mask, "labels": ids}]
    torch.manual_seed(0)
    teacher, student = _TokenModel(16), _TokenModel(4)
    before = student.head.weight.clone()
    mz.distill(student, teacher, data, mz.Distillation(alpha=0.5), epochs=2, lr=1e-2,
               progress=False)
    assert not torch.equal(before, student.head.weight)
    # only the unmasked positions feed the soft term: a teacher differing only at padded
    # positions gives the same student
    torch.manual_seed(0)
    a, b = _TokenModel(4), _TokenModel(4)
    other = copy.deepcopy(teacher)
    other.forward = lambda input_ids, attention_mask=None: type("Out", (), {
        "logits": teacher(input_ids).logits + 5 * (1 - attention_mask)[..., None] *
        torch.arange(9.0), "loss": None})()
    b.load_state_dict(a.state_dict())
    soft = mz.Distillation(alpha=1.0)
    mz.distill(a, teacher, data, soft, epochs=2, lr=1e-2, progress=False)
    mz.distill(b, other, data, soft, epochs=2, lr=1e-2, progress=False)
    torch.testing.assert_close(a.head.weight, b.head.weight)
