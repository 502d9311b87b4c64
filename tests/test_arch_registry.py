"""Architecture records without import order: files from zoo, NAS, Hugging Face and user
factories load in a fresh process and through every file command; factory code runs only
with trust_code; the bytes API; built-in registries resolve lazily; the format layer
imports no method package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import modelzip as mz
from modelzip import state
from modelzip.cli import main
from modelzip.cli.workflow import embedding_fidelity
from modelzip.io import arch as arch_records
from modelzip.io import hf
from modelzip.io import safetensors_io as stio

from .conftest import data_root, text_path

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
FACTORY = "tests.factory_models:digits_mlp"
REFUSAL = (f"this file's model is built by code `{FACTORY}`; pass trust_code=True / "
           "--trust-code to import and run it")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    if data_root() is not None:
        env["MODELZIP_DATA"] = str(data_root())
    return env


needs_text = pytest.mark.skipif(text_path() is None, reason="Tiny Shakespeare not found")


def _fresh(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a new interpreter (nothing imported beforehand)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=65, n_positions=128, n_embd=32, n_layer=2,
                                  n_head=2, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def bert(vocab: int = 100) -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    return transformers.BertModel(cfg).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """GPT-2, BERT and factory models saved, with reference outputs (a safetensors file)."""
    d = tmp_path_factory.mktemp("arch")
    x = torch.randint(0, 65, (2, 16))
    img = torch.randn(3, 1, 8, 8)
    g, b, f = gpt2(), bert(), arch_records.from_factory(FACTORY)
    mz.save(g, d / "gpt2.mzip")
    mz.save(b, d / "bert.mzip")
    mz.save(f, d / "factory.mzip")
    with torch.no_grad():
        refs = {"x": x, "img": img, "gpt2": g(x).logits, "bert": b(x).last_hidden_state,
                "factory": f(img)}
    save_file({k: v.contiguous() for k, v in refs.items()}, str(d / "refs.safetensors"))
    return d, {"gpt2": g, "bert": b, "factory": f}


FRESH_LOAD = """
import sys, torch, modelzip as mz
from safetensors.torch import load_file
d = sys.argv[1]
r = load_file(d + "/refs.safetensors")
with torch.no_grad():
    g = mz.load(d + "/gpt2.mzip")
    assert type(g).__name__ == "GPT2LMHeadModel" and torch.equal(g(r["x"]).logits, r["gpt2"])
    b = mz.load(d + "/bert.mzip")
    assert type(b).__name__ == "BertModel"
    assert torch.equal(b(r["x"]).last_hidden_state, r["bert"])
    try:
        mz.load(d + "/factory.mzip")
        raise SystemExit("factory file loaded without trust_code")
    except mz.ModelzipError as exc:
        print("REFUSED", exc)
    assert "tests.factory_models" not in sys.modules  # refused before any import
    f = mz.load(d + "/factory.mzip", trust_code=True)
    assert torch.equal(f(r["img"]), r["factory"])
print("OK")
"""


def test_files_load_in_a_fresh_process(files):
    d, _ = files
    res = _fresh(["-c", FRESH_LOAD, str(d)])
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[-1] == "OK"
    assert f"REFUSED {REFUSAL}" in lines


@needs_text
def test_cli_eval_of_hf_file_in_a_fresh_process(files):
    d, models = files
    res = _fresh(["-m", "modelzip", "eval", str(d / "gpt2.mzip"), "--data", "shakespeare",
                  "--json"])
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    split = mz.data.text(text_path())
    assert got["perplexity"] == pytest.approx(mz.perplexity(models["gpt2"], split.test),
                                              rel=1e-6)
    assert got["params"] == mz.count_params(models["gpt2"])[0]


def test_factory_needs_trust_code(files, capsys):
    d, models = files
    with pytest.raises(arch_records.UntrustedCodeError) as exc:
        mz.load(d / "factory.mzip")
    assert str(exc.value) == REFUSAL
    with pytest.raises(arch_records.UntrustedCodeError):
        mz.loads((d / "factory.mzip").read_bytes())
    for cmd in (["eval"], ["report", "--out", str(d / "r.html")],
                ["export", "--out", str(d / "f.onnx"), "--data", "digits"]):
        assert main([cmd[0], str(d / "factory.mzip"), *cmd[1:]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--trust-code" in err[0] and FACTORY in err[0]
    back = mz.load(d / "factory.mzip", trust_code=True)
    assert mz.read_manifest(d / "factory.mzip")["arch"] == {"kind": "factory",
                                                             "factory": FACTORY}
    img = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(img), models["factory"](img))


@pytest.mark.parametrize("bad", [
    {"kind": "factory", "factory": "os:system; rm"},
    {"kind": "factory", "factory": "tests.factory_models:digits_mlp", "kwargs": [1]},
    {"kind": "factory", "factory": "tests.factory_models:digits_mlp", "extra": 1},
    {"kind": "hf", "class": "AutoTokenizer", "config": {"model_type": "bert"}},
    {"kind": "hf", "class": "GPT2LMHeadModel", "config": {"model_type": "bert"}},
    {"kind": "elsewhere"},
])
def test_bad_records_are_format_errors(bad):
    with pytest.raises(mz.FormatError):
        arch_records.build(bad, trust_code=True)


def test_factory_kwargs_are_recorded(tmp_path):
    m = arch_records.from_factory(FACTORY, hidden=7)
    mz.save(m, tmp_path / "k.mzip")
    back = mz.load(tmp_path / "k.mzip", trust_code=True)
    assert back[1].out_features == 7
    with pytest.raises(mz.ConfigError):
        arch_records.from_factory("not a spec")


def _nas_model() -> torch.nn.Module:
    sp = mz.nas.space("mlp", input_shape=[1, 8, 8], num_classes=10)
    return mz.nas.build(sp, {k: v[0] for k, v in sp.params().items()})


KINDS = {
    "zoo": (lambda: mz.zoo.lenet300(in_features=64, num_classes=10), "digits", "accuracy"),
    "nas": (_nas_model, "digits", "accuracy"),
    "factory": (lambda: arch_records.from_factory(FACTORY), "digits", "accuracy"),
    "hf": (gpt2, "shakespeare", "perplexity"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_file_commands_work_on_every_kind(kind, tmp_path, capsys):
    make, data, metric = KINDS[kind]
    if data == "shakespeare" and text_path() is None:
        pytest.skip("Tiny Shakespeare not found")
    model = make().eval()
    path = tmp_path / f"{kind}.mzip"
    mz.save(model, path)
    assert mz.read_manifest(path)["arch"]["kind"] == kind
    trust = ["--trust-code"] if kind == "factory" else []
    assert main(["eval", str(path), "--data", data, "--json", *trust]) == 0
    ev = json.loads(capsys.readouterr().out)
    split = mz.data.digits() if data == "digits" else mz.data.text(None)
    want = mz.accuracy(model, split.test) if metric == "accuracy" else \
        mz.perplexity(model, split.test)
    assert ev[metric] == pytest.approx(want, rel=1e-6)
    html = tmp_path / "r.html"
    assert main(["report", str(path), "--data", data, "--out", str(html), "--json",
                 *trust]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert html.stat().st_size > 0 and rep["layers"]
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"]["kind"] == kind
    if kind != "hf":  # HF export is the ONNX exporter's business (not the file's)
        onnx = tmp_path / "m.onnx"
        assert main(["export", str(path), "--out", str(onnx), "--data", data, "--json",
                     *trust]) == 0
        assert json.loads(capsys.readouterr().out)["bytes"] == onnx.stat().st_size


@needs_text
def test_eval_of_an_encoder_measures_fidelity_to_its_baseline(tmp_path, capsys):
    tok = hf.tokenizer(hf.minilm_path())
    original = bert(vocab=tok.vocab_size)
    compressed = bert(vocab=tok.vocab_size)
    mz.quantize(compressed, mz.WeightOnly(bits=4, group_size=16))
    mz.save(original, tmp_path / "orig.mzip", entropy="none")  # a 1M-float embedding
    mz.save(compressed, tmp_path / "q.mzip", entropy="none")
    argv = ["eval", str(tmp_path / "q.mzip"), "--data", "sentences", "--json"]
    assert main(argv) == 2 and "--baseline" in capsys.readouterr().err
    assert main([*argv, "--baseline", str(tmp_path / "orig.mzip")]) == 0
    got = json.loads(capsys.readouterr().out)["cosine"]
    want = embedding_fidelity(original, hf.encode_batches(tok, mz.data.sentences(512)))
    assert got == pytest.approx(want(compressed), abs=1e-5)
    assert 0.5 < got < 1.0


def test_compress_records_the_factory_and_eval_needs_trust(tmp_path, capsys):
    out = tmp_path / "c.mzip"
    assert main(["compress", "--model", FACTORY, "--recipe", "int8-dynamic", "--max-drop",
                 "1", "--out", str(out), "--no-progress", "--json"]) == 0
    capsys.readouterr()
    assert mz.read_manifest(out)["arch"] == {"kind": "factory", "factory": FACTORY}
    assert main(["eval", str(out)]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert main(["eval", str(out), "--trust-code", "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    # a .mzip is itself a --model: compressing it again rebuilds it only when trusted
    argv = ["compress", "--model", str(out), "--recipe", "int8-dynamic", "--max-drop", "1",
            "--out", str(tmp_path / "d.mzip"), "--no-progress", "--json"]
    assert main(argv) == 2
    capsys.readouterr()
    assert main([*argv, "--trust-code"]) == 0


# ----------------------------------------------------------------------- bytes API
def test_dumps_loads_round_trip(tmp_path):
    model = mz.zoo.lenet300(in_features=64, num_classes=10)
    mz.prune(model, mz.Magnitude(sparsity=0.8))
    mz.cluster(model, mz.Cluster(clusters=8))
    data = mz.dumps(model, entropy="huffman")
    assert isinstance(data, bytes)
    size = mz.save(model, tmp_path / "m.mzip", entropy="huffman")
    assert size == len(data)
    # same tensors and metadata (safetensors may order the metadata keys differently)
    assert stio.loads(data) == stio.loads((tmp_path / "m.mzip").read_bytes())
    back = mz.loads(data)
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert mz.loads(bytearray(data), model=mz.zoo.lenet300(in_features=64, num_classes=10))
    with pytest.raises(mz.FormatError):
        mz.loads(data[:-3])
    with pytest.raises(mz.FormatError):
        mz.loads("not bytes")  # type: ignore[arg-type]


def test_file_bytes_writes_no_file(monkeypatch):
    model = mz.zoo.lenet300(in_features=64, num_classes=10)
    expected = len(mz.dumps(model, entropy="huffman"))

    def refuse(*a, **k):
        raise AssertionError("file_bytes touched the file system")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(stio, "write_atomic", refuse)
    from modelzip.measure import file_bytes

    assert file_bytes(model, entropy="huffman") == expected


# ------------------------------------------------------------------ lazy registries
def test_builtin_names_resolve_to_what_their_module_registers():
    for name in state.BUILTIN_MODULES:
        assert state.module_class(name).__name__ == name
    for kind in state.BUILTIN_REPARAMS:
        assert state.is_reparam_kind(kind)
    assert set(state.BUILTIN_REPARAMS) <= set(state.reparam_kinds())
    with pytest.raises(mz.FormatError):
        state.module_class("Linear")
    assert not state.is_reparam_kind(["codebook"])
    for kind in arch_records.KINDS:
        assert callable(arch_records.builder_module(kind).from_record)


FORMAT_LAYER = ("manifest", "writer", "reader", "restore", "arch", "mzip", "legacy_v1",
                "streams", "sparse", "safetensors_io", "inspect", "fuzz")
METHODS = ("pruning", "quantization", "clustering", "distill", "nas", "pipeline",
           "deep_compression", "cli", "report")


@pytest.mark.parametrize("name", FORMAT_LAYER)
def test_format_layer_imports_no_method_package(name):
    tree = ast.parse((ROOT / "src" / "modelzip" / "io" / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mods = [node.module or ""] + [a.name for a in node.names if not node.module]
            if node.level == 0:
                mods = [m.removeprefix("modelzip.") for m in mods if m.startswith("modelzip")]
            elif node.level == 1:
                continue  # io's own modules
        elif isinstance(node, ast.Import):
            mods = [a.name.removeprefix("modelzip.") for a in node.names
                    if a.name.startswith("modelzip")]
        else:
            continue
        for m in mods:
            assert m.split(".")[0] not in METHODS, f"io/{name}.py imports {m}"


def test_recorded_architecture_is_bounded_by_the_file():
    from modelzip.io.restore import build_model

    big = hf.record(gpt2())
    big["config"]["vocab_size"] = 10 ** 8  # 3.2e9 floats from a tiny file
    with pytest.raises(mz.FormatError, match="does not match"):
        build_model(big, stored=1000)
    sp = mz.nas.space("mlp", input_shape=[1, 512, 512], num_classes=10)
    with torch.device("meta"):  # the record only: nothing allocated here
        nas = mz.nas.build(sp, {k: v[-1] for k, v in sp.params().items()})._mz_arch
    with pytest.raises(mz.FormatError, match="does not match"):
        build_model(nas, stored=10)
