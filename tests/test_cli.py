"""The command line: help on every command, JSON output, exit code 2 on bad input."""

from __future__ import annotations

import json

import pytest

from modelzip.cli import COMMANDS, main


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: modelzip" in capsys.readouterr().out


def test_demo_meets_its_promise(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    base, comp = res["baseline"], res["compressed"]
    assert comp["accuracy"] >= base["accuracy"] - 0.01
    assert res["ratio"] >= 8
    assert comp["bytes"] == (tmp_path / "lenet300.mzip").stat().st_size
    assert comp["nonzeros"] <= 0.15 * comp["params"]  # ~90% pruned unless it backed off
    assert main(["inspect", str(tmp_path / "lenet300.mzip"), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["total"]["weights"] == 64 * 300 + 300 * 100 + 100 * 10
    assert main(["eval", str(tmp_path / "lenet300.mzip"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == pytest.approx(comp["accuracy"])


@pytest.mark.parametrize("argv", [
    ["inspect", "no/such/file.mzip"],
    ["eval", "no/such/file.mzip"],
    ["train", "--model", "nope", "--out", "x.mzip"],
    ["train", "--data", "nope", "--out", "x.mzip"],
    ["train", "--epochs", "0", "--out", "x.mzip"],
])
def test_bad_input_exits_2_with_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("modelzip ") and "error:" in err[0]


def test_train_then_eval_roundtrip(tmp_path, capsys):
    out = tmp_path / "m.mzip"
    assert main(["train", "--model", "mlp128", "--epochs", "2", "--out", str(out), "--json",
                 "--no-progress"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(trained["accuracy"])
