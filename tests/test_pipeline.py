"""Recipes, the accuracy-driven compress loop, sensitivity, auto search and reports."""

from __future__ import annotations

import json

import pytest
import torch

import modelzip as mz
from modelzip.cli import main
from modelzip.pipeline import builtin_recipes
from modelzip.pipeline.sensitivity import allocate_bits, allocate_sparsity

BUILTINS = sorted(builtin_recipes())


@pytest.fixture(scope="module")
def small_digits():
    return mz.data.digits(train_limit=256, test_limit=120)


@pytest.fixture(scope="module")
def lenet5_state(small_digits):
    torch.manual_seed(0)
    m = mz.zoo.lenet5(image_size=8)
    mz.train(m, small_digits.train, epochs=4, lr=3e-3, progress=False)
    return m.state_dict()


def _lenet5(state):
    m = mz.zoo.lenet5(image_size=8)
    m.load_state_dict(state)
    return m


def _gpt_data():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 12, (40, 17), generator=g)
    return [(seq[i:i + 8, :-1], seq[i:i + 8, 1:]) for i in range(0, 40, 8)]


def test_builtin_recipes_exist_and_parse():
    for name in ("deep-compression", "int8-dynamic", "int8-static", "w4-gptq", "w4-awq",
                 "sparse-2of4", "structured-50", "seed-mnist"):
        assert name in BUILTINS
        assert mz.Recipe.load(name).stages


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_recipe_runs_on_a_tiny_model(name, small_digits, lenet5_state):
    recipe = mz.Recipe.load(name)
    if recipe.model == "tiny_gpt":
        model = mz.zoo.tiny_gpt(vocab_size=12, d_model=32, n_layer=2, n_head=2, seq_len=16)
        data = _gpt_data()
        res = mz.compress(model, recipe, evaluate=lambda m: -mz.perplexity(m, data),
                          train_data=data, calib_data=data, max_drop=10.0, progress=False)
    else:
        model = _lenet5(lenet5_state)
        res = mz.compress(model, recipe, evaluate=lambda m: mz.accuracy(m, small_digits.test),
                          train_data=small_digits.train, calib_data=small_digits.train,
                          max_drop=1.0, max_tries=1, progress=False)
    assert res.met and res.metrics["skipped_units"] == []
    assert res.metrics["file_bytes"] < res.metrics["fp32_bytes"]


@pytest.mark.parametrize("text,match", [
    ("stages: [{Bogus: {}}]", "unknown stage 'Bogus'; valid: .*Magnitude"),
    ("stages: [{Magnitude: {sparsity: 0.5, spars: 1}}]", "unknown key"),
    ("stages: [{finetune: {epochs: 1}}]", "needs 'lr'"),
    ("stages: [{finetune: {epochs: 1, lr: 0.1, momentum: 0.9}}]", "unknown key"),
    ("stages: []", "non-empty"),
    ("steps: [{Magnitude: {}}]", "unknown key"),
    ("stages: [Magnitude]", "one-key mapping"),
    ("stages: [{Magnitude: {sparsity: 2}}]", "outside"),
    ("stages: [{: : :", "not valid YAML"),
])
def test_recipe_validation_names_the_problem(text, match):
    with pytest.raises(mz.ConfigError, match=match):
        mz.Recipe.from_yaml(text)


def test_unknown_recipe_reference():
    with pytest.raises(mz.ConfigError, match="unknown recipe"):
        mz.Recipe.load("no-such-recipe")


def test_yaml_and_python_recipes_give_the_same_result(trained_mlp, digits):
    yaml_text = """
stages:
  - Magnitude: {sparsity: 0.7, scope: global}
  - WeightOnly: {bits: 8, group_size: null}
"""
    py = mz.Recipe([mz.Magnitude(sparsity=0.7, scope="global"),
                    mz.WeightOnly(bits=8, group_size=None)])
    assert mz.Recipe.from_yaml(py.to_yaml()).to_dict()["stages"] == py.to_dict()["stages"]

    def evaluate(m):
        return mz.accuracy(m, digits.test)

    a = mz.compress(trained_mlp, mz.Recipe.from_yaml(yaml_text), evaluate=evaluate,
                    max_drop=0.05, progress=False)
    b = mz.compress(trained_mlp, py, evaluate=evaluate, max_drop=0.05, progress=False)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(a.model(x), b.model(x))
    assert a.metrics["file_bytes"] == b.metrics["file_bytes"]


def test_impossible_budget_backs_off_and_reports(trained_mlp, digits, tmp_path):
    def evaluate(m):
        return mz.accuracy(m, digits.test)

    base = evaluate(trained_mlp)
    res = mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.97, scope="global")],
                      evaluate=evaluate, max_drop=0.0, save_best=tmp_path / "best.mzip",
                      progress=False)
    assert res.met and res.metrics["metric"] >= base
    assert not res.metrics["complete"]
    assert res.metrics["changed_units"] or res.metrics["skipped_units"]
    assert "closest_failing" in res.metrics
    assert len(res.history) > 2 and any(not h["passed"] for h in res.history)
    assert (tmp_path / "best.mzip").exists() or res.metrics["skipped_units"]
    assert evaluate(trained_mlp) == base  # the input model is untouched


def test_mode_max_pushes_past_the_recipe(trained_mlp, digits):
    def evaluate(m):
        return mz.accuracy(m, digits.test)

    meet = mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.3)], evaluate=evaluate,
                       max_drop=0.02, progress=False)
    more = mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.3)], evaluate=evaluate,
                       max_drop=0.02, mode="max", progress=False)
    assert more.metrics["nonzeros"] < meet.metrics["nonzeros"]
    assert more.metrics["metric"] >= more.metrics["threshold"]


def test_time_budget_stops_with_best_so_far(trained_mlp, digits):
    res = mz.compress(trained_mlp, "demo", evaluate=lambda m: mz.accuracy(m, digits.test),
                      train_data=digits.train, max_drop=0.05, time_budget=1e-9,
                      progress=False)
    assert res.stopped == "time budget" and res.met


def test_bad_compress_arguments(trained_mlp):
    with pytest.raises(mz.ConfigError):
        mz.compress(trained_mlp, "demo", evaluate=lambda m: 1.0, max_drop=-1)
    with pytest.raises(mz.ConfigError):
        mz.compress(trained_mlp, "demo", evaluate=None)
    with pytest.raises(mz.ConfigError, match="train_data"):
        mz.compress(trained_mlp, "demo", evaluate=lambda m: 1.0, progress=False)


def test_sensitivity_and_allocation(trained_mlp, digits):
    sens = mz.sensitivity(trained_mlp, mz.Magnitude(sparsity=0.95),
                          lambda m: mz.accuracy(m, digits.test))
    assert set(sens) == {"1", "3", "5"}
    sizes = {"1": 19200, "3": 30000, "5": 1000}
    alloc = allocate_sparsity(sens, sizes, 0.8)
    mean = sum(alloc[k] * sizes[k] for k in sizes) / sum(sizes.values())
    assert mean == pytest.approx(0.8, abs=1e-3)
    robust = min(sens, key=sens.get)
    assert alloc[robust] == max(alloc.values())
    bits = allocate_bits({"a": 0.0, "b": 0.1, "c": 0.5}, 4)
    assert bits == {"a": 3, "b": 4, "c": 5}


def test_per_layer_compress_meets_budget(trained_mlp, digits):
    res = mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.8)], per_layer=True,
                      evaluate=lambda m: mz.accuracy(m, digits.test), max_drop=0.03,
                      progress=False)
    assert res.met and "per layer" in res.history[1]["stage"]


def test_auto_compress_resumes_from_storage(trained_mlp, digits, tmp_path):
    url = f"sqlite:///{tmp_path / 'auto.db'}"

    def evaluate(m):
        return mz.accuracy(m, digits.test)

    a = mz.auto_compress(trained_mlp, evaluate=evaluate, max_drop=0.03, trials=3,
                         storage=url, progress=False)
    b = mz.auto_compress(trained_mlp, evaluate=evaluate, max_drop=0.03, trials=2,
                         storage=url, progress=False)
    assert a.metrics["trials"] == 3 and b.metrics["trials"] == 5
    assert b.met and b.pareto


def test_report_html_and_plots(trained_mlp, digits, tmp_path):
    base = mz.zoo.lenet300(in_features=64)
    base.load_state_dict(trained_mlp.state_dict())
    res = mz.compress(trained_mlp, [mz.Magnitude(sparsity=0.8)],
                      evaluate=lambda m: mz.accuracy(m, digits.test), max_drop=0.05,
                      progress=False)
    rep = mz.report(res.model, base, result=res, example_inputs=torch.randn(1, 1, 8, 8),
                    sensitivity={"1": 0.01, "3": 0.0})
    html = rep.to_html(tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert html.count("data:image/png;base64,") == 3
    assert rep.summary["size ratio"] > 2
    png = rep.plot(tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_compress_report_export(tmp_path, capsys):
    out, html, onnx = tmp_path / "m.mzip", tmp_path / "r.html", tmp_path / "m.onnx"
    assert main(["compress", "--model", "mlp128", "--data", "digits", "--recipe", "demo",
                 "--train-epochs", "3", "--max-drop", "0.05", "--out", str(out),
                 "--report", str(html), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)  # stdout is only JSON; status lines on stderr
    assert res["file_bytes"] == out.stat().st_size and html.exists()
    assert res["metric"] >= res["threshold"]
    assert main(["report", str(out), "--data", "digits", "--out", str(tmp_path / "x.html"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["weights"] > 0
    assert main(["export", str(out), "--out", str(onnx), "--json"]) == 0
    assert onnx.stat().st_size > 0


@pytest.mark.parametrize("argv", [
    ["compress", "--model", "mlp128", "--recipe", "nope", "--out", "x.mzip"],
    ["compress", "--model", "nope", "--recipe", "demo", "--out", "x.mzip"],
    ["compress", "--model", "mlp128", "--recipe", "demo", "--max-drop", "-1", "--out", "x"],
    ["export", "missing.mzip", "--out", "x.onnx"],
    ["report", "missing.mzip"],
    ["auto", "--model", "mlp128", "--trials", "0", "--out", "x.mzip"],
])
def test_cli_bad_input_exits_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_relative_budget_on_a_negative_metric():
    """-perplexity is negative: a 5% relative budget allows perplexity 5% worse."""
    model = mz.zoo.mlp128(in_features=4, num_classes=2)
    scores = iter([-10.0, -10.4, -10.4, -10.4])
    res = mz.compress(model, [mz.Magnitude(sparsity=0.5)], evaluate=lambda m: next(scores),
                      max_drop=0.05, relative=True, progress=False)
    assert res.metrics["threshold"] == pytest.approx(-10.5)
    assert res.metrics["skipped_units"] == [] and res.metrics["changed_units"] == []
