"""Neural architecture search: spaces, builder, strategies, constraints, storage, CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch

import modelzip as mz
from modelzip.cli import main
from modelzip.nas import evaluators as nas_evaluators
from modelzip.nas import workers as nas_workers

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {"depth": [1, 2], "width": [8, 16, 32], "activation": ["relu", "tanh"]}


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    split = mz.data.digits(batch_size=64, train_limit=600)
    train, val = mz.nas.holdout(split.train, 0.25)
    return split, train, val


@pytest.fixture(scope="module")
def tiny_space(data):
    return mz.nas.space("mlp", data[0], **TINY)


def run(space, data, **kw):
    _, train, val = data
    kw.setdefault("trials", 3)
    kw.setdefault("epochs", 2)
    kw.setdefault("lr", 1e-2)
    return mz.search_architecture(space, evaluate=mz.nas.accuracy_on(val), train_data=train,
                                  progress=False, threads=1, **kw)


# ------------------------------------------------------------------ spaces and builder
def test_space_validation_names_the_bad_key(tmp_path):
    with pytest.raises(mz.ConfigError, match="choices.depht"):
        mz.SearchSpace.from_dict({"family": "mlp", "choices": {"depht": [1]}})
    with pytest.raises(mz.ConfigError, match="colour"):
        mz.SearchSpace.from_dict({"family": "mlp", "colour": 1})
    with pytest.raises(mz.ConfigError, match="family"):
        mz.SearchSpace.from_dict({"family": "rnn"})
    with pytest.raises(mz.ConfigError, match="activation"):
        mz.nas.space("mlp", activation=["swishy"])
    with pytest.raises(mz.ConfigError, match="odd"):
        mz.nas.space("cnn", kernel=[2, 3])
    with pytest.raises(mz.ConfigError, match="n_head"):
        mz.nas.space("tiny_gpt", d_model=[30], n_head=[4])
    with pytest.raises(mz.ConfigError, match="unknown search space"):
        mz.nas.space("bogus")
    sp = mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10, per_layer=["channels"])
    path = tmp_path / "space.yaml"
    path.write_text(sp.to_yaml())
    assert mz.nas.space(str(path)).to_dict() == sp.to_dict()


def test_normalise_drops_unused_layers(tiny_space):
    s = tiny_space.normalise({"depth": 1, "width_0": 8, "width_1": 32, "activation": "relu"})
    assert s == {"depth": 1, "width_0": 8, "activation": "relu"}
    with pytest.raises(mz.ConfigError, match="width_0"):
        tiny_space.normalise({"depth": 1, "width_0": 7, "width_1": 8, "activation": "relu"})
    assert tiny_space.size() == 2 * (3 + 9)


@pytest.mark.parametrize("family,fixed,x", [
    ("mlp", {"input_shape": [1, 8, 8], "num_classes": 10}, torch.randn(2, 1, 8, 8)),
    ("cnn", {"input_shape": [1, 8, 8], "num_classes": 10}, torch.randn(2, 1, 8, 8)),
    ("tiny_gpt", {"vocab_size": 20, "seq_len": 16}, torch.randint(0, 20, (2, 16))),
])
def test_every_family_builds_saves_and_loads(tmp_path, family, fixed, x):
    sp = mz.nas.space(family, **fixed)
    sample = {k: v[-1] for k, v in sp.params().items()}
    model = mz.nas.build(sp, sample).eval()
    assert model._mz_arch["kind"] == "nas"
    with torch.no_grad():
        y = model(x)
    assert y.shape[0] == 2 and y.shape[-1] == fixed.get("num_classes", fixed.get("vocab_size"))
    mz.save(model, tmp_path / "m.mzip")
    back = mz.load(tmp_path / "m.mzip")
    with torch.no_grad():
        assert torch.equal(back(x), y)


def test_bad_arch_record_is_a_format_error():
    from modelzip.io.arch import build as from_arch

    sp = mz.nas.space("mlp", input_shape=[1, 8, 8], num_classes=10).to_dict()
    with pytest.raises(mz.FormatError):
        from_arch({"kind": "nas", "space": sp, "sample": {"depth": 99}})
    with pytest.raises(mz.FormatError):
        from_arch({"kind": "nas", "space": {"family": "x"}, "sample": {}})
    with pytest.raises(mz.FormatError):
        from_arch({"kind": "nas", "space": sp})


# ------------------------------------------------------------------ strategies
@pytest.mark.parametrize("strategy", mz.nas.STRATEGIES)
def test_every_strategy_runs_on_digits(data, tiny_space, strategy, tmp_path):
    opts = {"population": 2, "sample_size": 2} if strategy == "evolution" else None
    opts = {"epochs": 0.5} if strategy == "darts" else opts
    r = run(tiny_space, data, strategy=strategy, trials=4, strategy_options=opts,
            constraints={"params": 1500}, save=tmp_path / "best.mzip")
    assert r.metrics["trials"] == 4 and len(r.history) == 4
    assert r.metrics["params"] <= 1500 and mz.count_params(r.model)[0] <= 1500
    assert 0.2 < r.metrics["metric"] <= 1.0  # 10 classes: chance is 0.1
    loaded = mz.load(r.path)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), r.model.eval()(x))


def test_darts_supernet_learns_a_distribution(data, tiny_space):
    info = mz.nas.train_supernet(tiny_space, data[1], epochs=1, lr=3e-3, arch_lr=3e-2,
                                 progress=False)
    assert set(info["probs"]) == set(tiny_space.params())
    for p in info["probs"].values():
        assert abs(sum(p) - 1) < 1e-5
    assert any(max(p) > min(p) + 1e-4 for p in info["probs"].values())  # alphas moved


def test_cnn_and_gpt_supernets_run():
    from modelzip.nas.supernet import SUPERNETS

    cnn = mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10, per_layer=["kernel"])
    assert SUPERNETS["cnn"](cnn)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    gpt = mz.nas.space("tiny_gpt", vocab_size=11, seq_len=8)
    net = SUPERNETS["tiny_gpt"](gpt)
    assert net(torch.randint(0, 11, (2, 8))).shape == (2, 8, 11)
    assert "d_model" not in net.alpha and "n_layer" in net.alpha


def test_cnn_batchnorm_and_gap_head(tmp_path):
    sp = mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10, depth=[2], channels=[4],
                      kernel=[3], hidden=[8], batchnorm=[False, True], head=["flatten", "gap"])
    sample = {"depth": 2, "channels_0": 4, "channels_1": 4, "kernel": 3, "hidden": 8,
              "activation": "relu", "batchnorm": True, "head": "gap"}
    model = mz.nas.build(sp, sample)
    kinds = [type(m).__name__ for m in model]
    assert kinds.count("BatchNorm2d") == 2 and "AdaptiveAvgPool2d" in kinds
    assert model[-3].in_features == 4  # gap: one feature a channel
    flat = mz.nas.build(sp, {**sample, "batchnorm": False, "head": "flatten"})
    assert "BatchNorm2d" not in [type(m).__name__ for m in flat]
    assert flat[-3].in_features == 4 * 2 * 2
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    mz.save(model, tmp_path / "n.mzip")
    assert torch.equal(mz.load(tmp_path / "n.mzip")(x), model(x))
    from modelzip.nas.supernet import SUPERNETS
    assert SUPERNETS["cnn"](sp)(x).shape == (3, 10)
    with pytest.raises(mz.ConfigError, match="head"):
        mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10, head=["avg"])
    with pytest.raises(mz.ConfigError, match="batchnorm"):
        mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10, batchnorm=[1])


def test_single_choice_dimension_may_be_left_out_of_a_sample():
    sp = mz.nas.space("cnn", input_shape=[1, 8, 8], num_classes=10)
    s = sp.normalise({"depth": 1, "channels_0": 4, "kernel": 3, "hidden": 16,
                      "activation": "relu"})
    assert s["batchnorm"] is False and s["head"] == "flatten"
    two = mz.nas.space(sp, batchnorm=[False, True])
    with pytest.raises(mz.ConfigError, match="missing 'batchnorm'"):
        two.normalise({"depth": 1, "channels_0": 4, "kernel": 3, "hidden": 16,
                       "activation": "relu"})


def test_reinforce_policy_moves_towards_rewarded_choices(tiny_space):
    from modelzip.nas.samplers import ReinforceSampler

    study = optuna.create_study(direction="maximize")
    dists = {k: optuna.distributions.CategoricalDistribution(v)
             for k, v in tiny_space.params().items()}
    for i in range(12):
        act = "tanh" if i % 2 else "relu"
        params = {"depth": 1, "width_0": 8, "width_1": 8, "activation": act}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=0.9 if act == "tanh" else 0.2))
    logits = ReinforceSampler(tiny_space, seed=0).policy(study)["activation"]
    assert logits[tiny_space.choices["activation"].index("tanh")] > logits[0]


# ------------------------------------------------------------------ constraints, objectives
def test_constraints_are_never_violated(data, tiny_space):
    r = run(tiny_space, data, strategy="random", trials=5, constraints={"params": 700})
    assert r.metrics["params"] <= 700
    for row in r.history:
        if row["state"] == "complete":
            assert row["params"] <= 700
        else:  # rejected before training, or stopped early by the pruner
            assert row["violation"] or row["pruned_at_epoch"]
    with pytest.raises(mz.BudgetError):
        run(tiny_space, data, strategy="random", trials=2, constraints={"macs": 10})


def test_latency_constraint_is_measured_and_enforced(data, tiny_space):
    r = run(tiny_space, data, strategy="random", trials=2, constraints={"latency_ms": 1e4})
    assert all(row["latency_ms"] > 0 for row in r.history)
    with pytest.raises(mz.BudgetError):
        run(tiny_space, data, strategy="random", trials=2, constraints={"latency_ms": 1e-6})


def test_multi_objective_returns_a_pareto_front(data, tiny_space):
    r = run(tiny_space, data, strategy="evolution", trials=5, objectives=["metric", "params"],
            strategy_options={"population": 2, "sample_size": 2})
    front = r.pareto
    assert front and [p["params"] for p in front] == sorted(p["params"] for p in front)
    for p in front:
        for q in r.history:
            if q["state"] == "complete":
                assert not (q["metric"] > p["metric"] and q["params"] < p["params"])


def test_pruner_stops_poor_trials(data, tiny_space):
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # every report is "poor"
    with pytest.raises(mz.BudgetError):
        run(tiny_space, data, strategy="random", trials=2, epochs=2, pruner=always)
    r = run(tiny_space, data, strategy="random", trials=2, epochs=2, pruner="median")
    assert r.metrics["trials"] == 2


def test_bad_settings_raise_config_errors(data, tiny_space):
    for kw in ({"strategy": "grid"}, {"trials": 0}, {"constraints": {"flops": 3}},
               {"objectives": ["params"]}, {"strategy_options": {"population": 2}},
               {"workers": 2}, {"pruner": "sometimes"}, {"storage": "not a url"}):
        with pytest.raises(mz.ConfigError):
            run(tiny_space, data, **kw)


def test_teacher_distils_every_trial_and_the_winner(data, tiny_space, monkeypatch):
    calls = []

    def recording(student, teacher, train_data, cfg, **kw):
        calls.append((teacher, cfg, kw))
        return mz.distill(student, teacher, train_data, cfg, **kw)

    monkeypatch.setattr(nas_evaluators, "distill", recording)
    teacher = mz.zoo.lenet300(in_features=64)
    r = run(tiny_space, data, strategy="random", trials=2, epochs=1, teacher=teacher,
            retrain_epochs=0.5)
    assert r.metrics["trials"] == 2 and 0 <= r.metrics["metric"] <= 1
    assert len(calls) == 3 and all(t is teacher for t, _, _ in calls)  # 2 trials + winner
    assert isinstance(calls[0][1], mz.Distillation)
    assert [kw["epochs"] for _, _, kw in calls] == [1, 1, 0.5]
    with pytest.raises(mz.ConfigError, match="train_data"):
        mz.search_architecture(tiny_space, evaluate=mz.nas.accuracy_on(data[2]), trials=1,
                               teacher=teacher, progress=False)


def test_options_dataclass_and_keywords_agree(data, tiny_space):
    opts = mz.nas.SearchOptions(epochs=1, lr=1e-2, constraints={"params": 700}, seed=3,
                                progress=False, threads=1)
    _, train, val = data
    a = mz.search_architecture(tiny_space, evaluate=mz.nas.accuracy_on(val), trials=2,
                               strategy="random", train_data=train, options=opts)
    b = run(tiny_space, data, strategy="random", trials=2, epochs=1, constraints={"params": 700},
            seed=3)
    assert a.sample == b.sample and a.metrics["params"] <= 700
    assert [r["sample"] for r in a.history] == [r["sample"] for r in b.history]
    c = mz.search_architecture(tiny_space, evaluate=mz.nas.accuracy_on(val), trials=1,
                               strategy="random", train_data=train, options=opts, seed=4)
    assert opts.seed == 3 and c.metrics["trials"] == 1  # keywords override, options unchanged
    with pytest.raises(mz.ConfigError, match="unknown option.*epochz"):
        run(tiny_space, data, epochz=2)


# ------------------------------------------------------------------ storage, resume, workers
def _db_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("select state, count(*) from trials group by state").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return dict(rows)


SCRIPT = textwrap.dedent("""
    import sys, time, torch, modelzip as mz
    torch.set_num_threads(1)
    split = mz.data.digits(batch_size=64, train_limit=600)
    train, val = mz.nas.holdout(split.train, 0.25)
    space = mz.nas.space("mlp", split, depth=[1, 2], width=[8, 16, 32],
                         activation=["relu", "tanh"])
    accuracy = mz.nas.accuracy_on(val)

    def slow_accuracy(model):  # trials long enough that a second worker gets some
        time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
        return accuracy(model)

    if __name__ == "__main__":
        mz.search_architecture(space, evaluate=slow_accuracy, train_data=train,
                               trials=int(sys.argv[2]), epochs=float(sys.argv[3]),
                               strategy="tpe", storage=sys.argv[1], study="s", progress=False,
                               threads=1, workers=int(sys.argv[4]))
""")


def test_killed_search_resumes_without_losing_trials(tmp_path, data, tiny_space, monkeypatch):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), url, "6", "8", "1"],
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    deadline = time.time() + 60
    while _db_counts(db).get("COMPLETE", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    before = {t.number: t.values for t in optuna.load_study(study_name="s", storage=url)
              .get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert 2 <= len(before) < 6
    monkeypatch.setitem(nas_workers.HEARTBEAT, "grace", 2)
    r = run(tiny_space, data, strategy="tpe", trials=6, epochs=1, storage=url, study="s")
    after = optuna.load_study(study_name="s", storage=url).get_trials()
    done = {t.number: t.values for t in after if t.state.is_finished()
            and t.state != optuna.trial.TrialState.FAIL}
    assert len(done) == 6 and r.metrics["trials"] == 6
    assert all(done[n] == v for n, v in before.items())  # nothing finished was lost


def test_trial_orphaned_before_its_first_heartbeat_is_replaced(tmp_path, data, tiny_space,
                                                               monkeypatch):
    """A worker killed between creating its trial and the trial's first heartbeat leaves a
    RUNNING trial without a heartbeat, which Optuna never fails by itself."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    monkeypatch.setitem(nas_workers.HEARTBEAT, "grace", 2)
    run(tiny_space, data, strategy="random", trials=1, epochs=1, storage=url, study="o")
    storage = nas_workers.open_storage(url)
    orphan = storage.create_new_trial(storage.get_study_id_from_name("o"))

    def hung(*_):
        raise TimeoutError("the search waited forever for the orphaned trial")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        r = run(tiny_space, data, strategy="random", trials=2, epochs=1, storage=url, study="o")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert storage.get_trial(orphan).state == optuna.trial.TrialState.FAIL
    assert r.metrics["trials"] == 2
    assert [row["state"] for row in r.history] == ["complete", "fail", "complete"]


def test_two_workers_share_one_sqlite_study(tmp_path):
    db = tmp_path / "w.db"
    url = f"sqlite:///{db}"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), url, "10", "1", "2", "0.8"],
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(counted) == 10
    assert all(t.state.is_finished() for t in counted)
    assert len({t.user_attrs["worker"] for t in counted}) == 2  # both processes worked


def test_study_with_other_space_is_refused(tmp_path, data, tiny_space):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    run(tiny_space, data, strategy="random", trials=1, storage=url, study="x")
    other = mz.nas.space(tiny_space, width=[8, 64])
    with pytest.raises(mz.ConfigError, match="another search space"):
        run(other, data, strategy="random", trials=1, storage=url, study="x")


# ------------------------------------------------------------------ CLI
def test_cli_search_json(tmp_path, capsys):
    out = tmp_path / "best.mzip"
    rc = main(["search", "--data", "digits", "--train-limit", "400", "--strategy", "random",
               "--trials", "2", "--epochs", "0.5", "--storage", f"sqlite:///{tmp_path}/c.db",
               "--max-params", "3000", "--out", str(out), "--no-progress", "--json"])
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["trials"] == 2 and payload["params"] <= 3000
    assert 0 <= payload["test_accuracy"] <= 1 and out.exists()
    assert mz.count_params(mz.load(out))[0] == payload["params"]


def test_cli_bad_input_exits_2(capsys, tmp_path):
    assert main(["search", "--space", "bogus", "--storage", f"sqlite:///{tmp_path}/d.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown search space" in err[0]
    assert main(["search", "--strategy-option", "population", "--strategy", "evolution",
                 "--storage", f"sqlite:///{tmp_path}/d.db"]) == 2
