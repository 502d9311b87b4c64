"""Malformed command lines: every one exits 2 with exactly one line on stderr, no traceback,
no hang. Built systematically: each subcommand x missing / unknown / badly typed /
NaN / inf / out-of-range options, missing files, folders and binary files where files go,
broken recipes, foreign --model factories, bad --data, --storage and unwritable outputs.

Run in-process through ``modelzip.cli.main`` (a SIGALRM guard per case) and a handful
through a real ``python -m modelzip`` subprocess (with a timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import modelzip as mz
from modelzip.cli import main

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60  # per case; a hang fails the case instead of the suite


def not_a_model() -> int:
    """A zero-argument function that returns no model (for --model)."""
    return 42


def needs_args(width: int) -> torch.nn.Module:
    """A factory with a required argument (for --model)."""
    return torch.nn.Linear(width, 10)


@pytest.fixture(scope="session")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny fixture files, made once: no training anywhere."""
    d = tmp_path_factory.mktemp("malformed")
    plain = mz.zoo.lenet300(in_features=64)
    mz.save(plain, d / "plain.mzip")
    mz.save(mz.zoo.lenet5(in_channels=1, image_size=8), d / "conv.mzip")
    small = mz.zoo.lenet300(in_features=64)
    mz.prune(small, mz.Magnitude(sparsity=0.5))
    mz.quantize(small, mz.WeightOnly(bits=8, group_size=64))
    mz.save(small, d / "small.mzip")
    files = {
        "bin.mzip": os.urandom(3000), "empty.mzip": b"", "text.mzip": b"hello world\n",
        "bin.yaml": b"\x00\x01\xff\xfe" * 50, "broken.yaml": b"stages: [\n  - a: {",
        "s5.yaml": b"stages: 5\n", "empty.yaml": b"", "list.yaml": b"- Magnitude: {}\n",
        "nostages.yaml": b"name: x\n", "zero.yaml": b"stages: []\n",
        "unknown.yaml": b"stages:\n  - Frobnicate: {x: 1}\n",
        "badkey.yaml": b"stages:\n  - Magnitude: {sparsity: 0.5, colour: red}\n",
        "range.yaml": b"stages:\n  - Magnitude: {sparsity: 2}\n",
        "stagestr.yaml": b"stages:\n  - just-a-string\n",
        "recipe.txt": b"stages:\n  - Magnitude: {sparsity: 0.5}\n",
        "bin.txt": os.urandom(2000), "bad.safetensors": os.urandom(500),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    save_file({"nope": torch.zeros(3)}, str(d / "wrong.safetensors"))
    (d / "folder").mkdir()
    (d / "hf").mkdir()
    (d / "hf" / "config.json").write_text("{not json")
    (d / "hf2").mkdir()
    (d / "hf2" / "config.json").write_text('{"model_type": "bert"}')
    out = {k: str(d / k) for k in [*files, "plain.mzip", "conv.mzip", "small.mzip",
                                   "wrong.safetensors", "folder", "hf", "hf2"]}
    out["dir"] = str(d)
    return out


W = ["--weights", "{plain.mzip}"]
COMPRESS = ["compress", "--model", "lenet300", *W, "--recipe", "int8-dynamic",
            "--out", "{dir}/o.mzip"]
AUTO = ["auto", "--model", "lenet300", *W, "--out", "{dir}/o.mzip", "--trials", "1"]
TRAIN = ["train", "--out", "{dir}/t.mzip", "--epochs", "1"]
SEARCH = ["search", "--trials", "1", "--storage", "sqlite:///{dir}/s.db"]
FILE_COMMANDS = [["eval"], ["inspect"], ["report", "--out", "{dir}/r.html"],
                 ["export", "--out", "{dir}/x.onnx"]]


def _options(base: list[str], name: str, values: list[str]) -> list[list[str]]:
    return [[*base, name, v] for v in values]


def _cases() -> list[tuple[str, list[str]]]:
    c: list[tuple[str, list[str]]] = []

    def add(family: str, argv_list: list[list[str]]) -> None:
        c.extend((family, a) for a in argv_list)

    # argparse: missing required, unknown option, bad type, bad choice
    add("usage", [[], ["frobnicate"], ["--frobnicate"], ["compress"], ["auto"], ["train"],
                  ["eval"], ["inspect"], ["export", "{plain.mzip}"], ["report"],
                  ["compress", "--model", "lenet300"], ["eval", "{plain.mzip}", "extra"]])
    add("unknown option", [[*cmd, "--frobnicate"] for cmd in
                           [["demo"], TRAIN, ["eval", "{plain.mzip}"], ["inspect", "{plain.mzip}"],
                            COMPRESS, AUTO, ["report", "{plain.mzip}"],
                            ["export", "{plain.mzip}", "--out", "{dir}/x.onnx"], SEARCH]])
    add("bad type", [[*TRAIN[:-1], "abc"], [*TRAIN, "--seed", "1.5"], [*TRAIN, "--lr", "x"],
                     [*COMPRESS, "--max-drop", "lots"], [*COMPRESS, "--time-budget", "soon"],
                     [*AUTO[:-1], "many"], [*SEARCH, "--workers", "two"],
                     ["export", "{plain.mzip}", "--out", "{dir}/x.onnx", "--opset", "x"]])
    add("bad choice", [["demo", "--dataset", "imagenet"], [*COMPRESS, "--mode", "fast"],
                       [*AUTO, "--objective", "beauty"], [*SEARCH, "--strategy", "luck"]])
    # NaN / infinity in every kind of numeric option
    for v in ("nan", "inf", "-inf"):
        add("nan/inf", [[*TRAIN[:-2], f"--epochs={v}"], [*TRAIN, f"--lr={v}"],
                        [*COMPRESS, f"--max-drop={v}"], [*COMPRESS, f"--time-budget={v}"],
                        [*AUTO, f"--max-drop={v}"], [*SEARCH, f"--epochs={v}"]])
    add("nan/inf", [[*SEARCH, "--val-fraction", "nan"], [*SEARCH, "--max-latency-ms", "inf"],
                    [*COMPRESS, "--train-epochs", "inf"]])
    # out of range: negative, zero, absurdly large
    add("range", [[*TRAIN[:-1], "0"], [*TRAIN[:-1], "-1"], [*TRAIN[:-1], "1e308"],
                  [*TRAIN, "--lr", "-1"], [*TRAIN, "--seed", "-1"],
                  [*TRAIN, "--seed", str(2**80)], [*COMPRESS, "--max-drop", "-0.1"],
                  [*COMPRESS, "--time-budget", "-5"], [*COMPRESS, "--train-epochs", "0"],
                  [*AUTO[:-1], "0"], [*SEARCH, "--workers", "0"], [*SEARCH, "--threads", "-1"],
                  [*SEARCH, "--val-fraction", "1.5"], [*SEARCH, "--train-limit", "0"],
                  [*SEARCH, "--max-params", "-5"], [*SEARCH[:2], "-3", *SEARCH[3:]],
                  ["export", "{plain.mzip}", "--out", "{dir}/x.onnx", "--opset", "3"]])
    # input files: missing, a folder, garbage bytes, empty, text
    for name in ("{dir}/missing.mzip", "{folder}", "{bin.mzip}", "{empty.mzip}",
                 "{text.mzip}"):
        add("input file", [[*cmd[:1], name, *cmd[1:]] for cmd in FILE_COMMANDS])
    add("input file", [["report", "{plain.mzip}", "--baseline", b, "--out", "{dir}/r.html"]
                       for b in ("{dir}/missing.mzip", "{folder}", "{bin.mzip}")])
    add("--weights", [["compress", "--model", "lenet300", "--weights", w, "--recipe",
                       "int8-dynamic", "--out", "{dir}/o.mzip"]
                      for w in ("{dir}/missing.mzip", "{folder}", "{bin.mzip}",
                                "{small.mzip}", "{bad.safetensors}", "{wrong.safetensors}")])
    add("--weights", [["auto", "--model", "lenet300", "--weights", "{small.mzip}",
                       "--out", "{dir}/o.mzip"]])
    # recipes
    recipes = ["{bin.yaml}", "{broken.yaml}", "{s5.yaml}", "{empty.yaml}", "{list.yaml}",
               "{nostages.yaml}", "{zero.yaml}", "{unknown.yaml}", "{badkey.yaml}",
               "{range.yaml}", "{stagestr.yaml}", "{recipe.txt}", "{folder}",
               "{dir}/missing.yaml", "no-such-recipe"]
    add("recipe", [[*COMPRESS[:5], "--recipe", r, *COMPRESS[7:]] for r in recipes])
    # --model
    models = ["os:system", "subprocess:run", "builtins:print", "os.path:join",
              "nosuchmodule:factory", "tests.factory_models:missing",
              "tests.test_cli_malformed:not_a_model", "tests.test_cli_malformed:needs_args",
              "bad::spec", "resnet_huge", "{folder}", "{dir}/missing.mzip", "{bin.mzip}",
              "{hf}"]
    add("--model", [["compress", "--model", h, "--data", "sentences", "--recipe",
                     "int8-dynamic", "--out", "{dir}/o.mzip"] for h in ("{hf}", "{hf2}")])
    add("--model", [["compress", "--model", m, "--recipe", "int8-dynamic",
                     "--out", "{dir}/o.mzip"] for m in models])
    add("--model", [["auto", "--model", m, "--out", "{dir}/o.mzip"]
                    for m in ("os:system", "{folder}")])
    # --data / --data-root / --tokenizer
    add("--data", [["eval", "{plain.mzip}", "--data", d] for d in
                   ("imagenet", "{folder}", "{bin.txt}", "shakespeare")])
    add("--data", [["eval", "{conv.mzip}", "--data", "shakespeare"],
                   ["report", "{plain.mzip}", "--data", "shakespeare", "--out", "{dir}/r.html"],
                   [*COMPRESS, "--data", "{folder}"], [*COMPRESS, "--data", "shakespeare"],
                   ["eval", "{plain.mzip}", "--data-root", "{bin.txt}"],
                   ["eval", "{plain.mzip}", "--data-root", "{dir}/nowhere"],
                   ["eval", "{plain.mzip}", "--data", "sentences"],
                   ["eval", "{plain.mzip}", "--data", "sentences", "--tokenizer", "{bin.txt}"],
                   [*TRAIN, "--data", "imagenet"], [*TRAIN, "--model", "nosuchnet"],
                   ["search", "--data", "imagenet", "--storage", "sqlite:///{dir}/s.db"]])
    # --device: unknown, or a CUDA device this machine does not have
    add("--device", [[*COMPRESS, "--device", "tpu9"], [*COMPRESS, "--device", "cuda:99"],
                     [*AUTO, "--device", "quantum"], [*TRAIN, "--device", "cuda:99"]])
    # --storage
    add("--storage", [[*AUTO, "--storage", s] for s in
                      ("foo://x", "sqlite:///{dir}/nowhere/x.db", "just-a-path",
                       "sqlite:///", "journal:///{dir}/nowhere/j.log", "sqlite:///{folder}")])
    add("--storage", [["search", "--storage", "redis://x"]])
    # outputs: missing folder, unwritable (/proc refuses even root), a folder, empty
    for out in ("{dir}/nowhere/x", "/proc/modelzip-x", "{folder}", ""):
        add("--out", [[*TRAIN[:1], "--out", out, *TRAIN[3:]], [*COMPRESS[:-1], out],
                      [*AUTO[:5], "--out", out, *AUTO[7:]],
                      ["export", "{plain.mzip}", "--out", out],
                      ["report", "{plain.mzip}", "--out", out]])
    add("--out", [[*COMPRESS, "--report", "{dir}/nowhere/r.html"],
                  [*COMPRESS, "--report", "{folder}"], [*SEARCH, "--out", "/proc/x.mzip"],
                  ["demo", "--out", "/proc/modelzip-demo"], ["demo", "--out", "{bin.txt}"]])
    return c


CASES = _cases()


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no answer within {LIMIT_S} s")


def _fill(argv: list[str], fx: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for key, value in fx.items():
            a = a.replace("{" + key + "}", value)
        assert "{" not in a, a
        out.append(a)
    return out


def run_main(argv: list[str]) -> int:
    """main(argv) with a per-case alarm; argparse's SystemExit counts as its exit code."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_at_least_100_cases() -> None:
    assert len(CASES) >= 100
    assert len({tuple(a) for _, a in CASES}) == len(CASES)  # no duplicates


@pytest.mark.parametrize("family,argv", CASES,
                         ids=[f"{f}:{' '.join(a)[:70]}" for f, a in CASES])
def test_malformed_in_process(family: str, argv: list[str], fx: dict[str, str],
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELZIP_NO_PROGRESS", raising=False)  # status lines are on
    monkeypatch.chdir(ROOT)  # so tests.* factories import as they would for a user here
    monkeypatch.delenv("MODELZIP_DEBUG", raising=False)
    rc = run_main(_fill(argv, fx))
    out, err = capsys.readouterr()
    lines = err.strip("\n").split("\n")
    assert rc == 2, f"exit {rc}: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("modelzip"), err
    assert "Traceback" not in err and "internal error" not in err
    assert out == ""
    assert not list(Path(fx["dir"]).glob("o.mzip*")), "a refused command wrote output"


SUBPROCESS = [  # a few through a real process: the installed entry point, no traceback
    ["eval", "{plain.mzip}", "--data", "shakespeare"],
    ["export", "{plain.mzip}", "--out", "/missing/dir/x.onnx"],
    [*COMPRESS[:5], "--recipe", "{bin.yaml}", *COMPRESS[7:]],
    ["compress", "--model", "os:system", "--recipe", "int8-dynamic", "--out", "{dir}/o.mzip"],
    ["compress"],
]


@pytest.mark.parametrize("argv", SUBPROCESS, ids=[" ".join(a)[:60] for a in SUBPROCESS])
def test_malformed_subprocess(argv: list[str], fx: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MODELZIP_DEBUG", None)
    env.pop("MODELZIP_NO_PROGRESS", None)
    p = subprocess.run([sys.executable, "-m", "modelzip", *_fill(argv, fx)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip("\n").split("\n")
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""


def test_json_stdout_status_stderr_one_size(fx: dict[str, str],
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--json stdout is only JSON; status lines go to stderr; every size shown is the
    written file's bytes (CLI figures and the HTML summary), attempt sizes are labelled."""
    import json

    monkeypatch.delenv("MODELZIP_NO_PROGRESS", raising=False)
    out, rep = f"{fx['dir']}/ok.mzip", f"{fx['dir']}/ok.html"
    rc = run_main(["compress", "--model", "lenet300", "--weights", fx["plain.mzip"],
                   "--recipe", "int8-dynamic", "--max-drop", "1", "--out", out,
                   "--report", rep, "--json"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    payload = json.loads(stdout)
    size = Path(out).stat().st_size
    assert payload["file_bytes"] == size
    assert payload["ratio"] == pytest.approx(payload["fp32_bytes"] / size)
    assert "estimate" in payload["bytes_note"]
    for phase in ("loaded data", "compressing with recipe", "attempt 1", "saving"):
        assert phase in stderr
    page = Path(rep).read_text()
    assert f"file bytes</td><td>{size:,}<" in page
    assert "est. bytes" in page and "run: file_bytes" not in page
