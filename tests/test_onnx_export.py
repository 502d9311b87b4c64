"""ONNX export keeps integer weights and matches modelzip's outputs in ONNX Runtime."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

import modelzip as mz
from modelzip.export import ExportError
from modelzip.export.onnx_runtime import OrtModule

pytest.importorskip("onnxruntime")


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return mz.zoo.lenet5(image_size=12).eval()


def _gpt() -> torch.nn.Module:
    torch.manual_seed(0)
    return mz.zoo.tiny_gpt(vocab_size=11, d_model=32, n_layer=1, n_head=2, seq_len=16).eval()


def _init_dtypes(path) -> dict[str, set[int]]:
    g = onnx.load(str(path)).graph
    out: dict[str, set[int]] = {}
    for t in g.initializer:
        out.setdefault(t.name, set()).add(t.data_type)
    return out


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _ort_matches(model, path, x, tol) -> None:
    got = OrtModule(path)(x).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= tol


X_IMG = torch.randn(3, 1, 12, 12)
IDX = torch.randint(0, 11, (2, 9))
CASES = {
    "int8-dynamic": (lambda: mz.quantize(_lenet(), mz.Int8()), X_IMG,
                     {"MatMulIntegerToFloat", "ConvInteger"}, onnx.TensorProto.INT8, 0.05),
    "int8-static": (lambda: mz.quantize(_lenet(), mz.Int8(activations="static"),
                                        calib_data=[torch.randn(8, 1, 12, 12)]), X_IMG,
                    {"QuantizeLinear", "DequantizeLinear"}, onnx.TensorProto.INT8, 0.02),
    "w4-rtn": (lambda: mz.quantize(_gpt(), mz.WeightOnly(bits=4, group_size=16)), IDX,
               {"MatMulNBits", "GatherBlockQuantized"}, onnx.TensorProto.UINT8, 0.05),
    "w3-asym": (lambda: mz.quantize(_gpt(), mz.WeightOnly(bits=3, group_size=16,
                                                          symmetric=False)), IDX,
                {"MatMulNBits"}, onnx.TensorProto.UINT8, 0.05),
    "w2-packed": (lambda: mz.quantize(_gpt(), mz.WeightOnly(bits=2, group_size=None,
                                                            packed=True)), IDX,
                  {"MatMulNBits"}, onnx.TensorProto.UINT8, 0.05),
    "w8-conv": (lambda: mz.quantize(_lenet(), mz.WeightOnly(bits=8, group_size=None)), X_IMG,
                {"DequantizeLinear", "MatMulNBits"}, onnx.TensorProto.INT8, 0.05),
    "awq": (lambda: mz.quantize(_gpt(), mz.WeightOnly(bits=4, group_size=16, method="awq",
                                                      targets=["re:blocks\\..*"]),
                                calib_data=[torch.randint(0, 11, (4, 16))]), IDX,
            {"MatMulNBits", "Mul"}, onnx.TensorProto.UINT8, 0.05),
}


@pytest.mark.parametrize("name", list(CASES))
def test_integer_forms(name, tmp_path):
    build, x, ops, dtype, tol = CASES[name]
    model = build()
    path = tmp_path / f"{name}.onnx"
    summary = mz.export_onnx(model, path, x)
    assert summary.path == path and path.stat().st_size == summary.file_bytes
    assert ops <= {o.split(".")[-1] for o in summary.operators}, summary.operators
    assert ops <= _ops(path)
    assert any(dtype in d for d in _init_dtypes(path).values())
    assert summary.integer_layers and summary.check["rel"] <= summary.check["tol"]
    assert summary.fp32_onnx_bytes and summary.mzip_bytes
    _ort_matches(model, path, x, tol)


def test_weights_smaller_than_dense(tmp_path):
    model = mz.quantize(_gpt(), mz.WeightOnly(bits=4, group_size=16))
    s = mz.export_onnx(model, tmp_path / "m.onnx", IDX)
    quant = sum(v for k, v in s.initializer_bytes.items() if k != "float32")
    assert s.initializer_bytes.get("float32", 0) < quant
    assert s.file_bytes < 0.6 * s.fp32_onnx_bytes


def test_dense_methods_say_so_and_fp16(tmp_path):
    model = mz.prune(_lenet(), mz.Magnitude(sparsity=0.8))
    mz.cluster(model, mz.Cluster(clusters=8, targets=["re:7"]))
    s = mz.export_onnx(model, tmp_path / "d.onnx", X_IMG, fp16=True)
    assert "sparse" in s.dense_layers["0"] and "clustered" in s.dense_layers["7"]
    assert s.fp16_tensors > 0 and s.initializer_bytes.get("float16", 0) > 0
    assert "dense" in str(s)
    _ort_matches(model, tmp_path / "d.onnx", X_IMG, 0.01)


def test_structured_pruning_exports_smaller_graph(tmp_path):
    base = _lenet()
    small = mz.prune(copy.deepcopy(base), mz.Structured(ratio=0.5), example_inputs=X_IMG)
    a = mz.export_onnx(base, tmp_path / "a.onnx", X_IMG, sizes=False)
    b = mz.export_onnx(small, tmp_path / "b.onnx", X_IMG, sizes=False)
    assert b.file_bytes < 0.7 * a.file_bytes


def test_dynamic_batch_and_sequence(tmp_path):
    model = mz.quantize(_gpt(), mz.WeightOnly(bits=4, group_size=16))
    s = mz.export_onnx(model, tmp_path / "g.onnx", IDX, accuracy_level=0)
    assert s.accuracy_level == 0
    _ort_matches(model, tmp_path / "g.onnx", torch.randint(0, 11, (5, 4)), 2e-3)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_hugging_face(arch, tmp_path):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "bert":
        model = tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=64))
    elif arch == "gpt2":
        from modelzip.export.onnx_hf import linear_from_conv1d

        model = linear_from_conv1d(tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=32)))
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    model.eval()
    mz.quantize(model, mz.Int8(targets=["Linear"]) if arch == "bert" else
                mz.WeightOnly(bits=4, group_size=16, targets=["Linear"]))
    ids = torch.randint(0, 50, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    s = mz.export_onnx(model, tmp_path / "hf.onnx", batch, sizes=False)
    assert s.integer_layers
    ids2 = torch.randint(0, 50, (3, 9))
    got = OrtModule(tmp_path / "hf.onnx")(input_ids=ids2, attention_mask=torch.ones_like(ids2))
    with torch.no_grad():
        out = model(input_ids=ids2, attention_mask=torch.ones_like(ids2))
    ref = out.logits if hasattr(out, "logits") else out.last_hidden_state
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.05


def _bert_int8():
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64)).eval()
    return mz.quantize(model, mz.Int8(targets=["Linear"]))


def _ids(n, s, seed):
    ids = torch.randint(0, 50, (n, s), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("mode", ["token", "tensor", "auto"])
def test_int8_activation_forms(mode, tmp_path):
    from modelzip.export.onnx_granularity import per_tensor
    from modelzip.export.onnx_hf import normalize_inputs, reference_output

    model, x = _bert_int8(), _ids(2, 7, 0)
    calib = [_ids(4, 9, 1), _ids(4, 9, 2)] if mode == "auto" else None
    s = mz.export_onnx(model, tmp_path / "b.onnx", x, calib_inputs=calib, sizes=False,
                       int8_activations=None if mode == "auto" else mode)
    assert s.int8_activations == mode and s.check["rel"] <= s.check["tol"]
    ops = _ops(tmp_path / "b.onnx")
    forms = list(s.integer_layers.values())
    n_tensor = sum("per-tensor" in f for f in forms)
    assert n_tensor == s.int8["tensor_layers"]
    if mode == "token":
        assert n_tensor == 0 and {"QuantizeLinear", "MatMulIntegerToFloat"} <= ops
        # Q/K/V read one tensor: quantized once (4 distinct inputs per layer, not 6)
        n_q = sum(n.op_type == "QuantizeLinear" for n in onnx.load(
            str(tmp_path / "b.onnx")).graph.node)
        assert n_q == 4 * 2 and sum("once for its group" in f for f in forms) == 6
    if mode == "tensor":
        assert n_tensor == len(forms)
        assert {"DynamicQuantizeLinear", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul"} <= ops
    if mode == "auto":
        assert {"error_per_token", "error_chosen", "budget"} <= set(s.int8)
        assert s.int8["error_chosen"] <= (1 + s.int8["budget"]) * s.int8["error_per_token"]
    if n_tensor:  # reported beside the check: the distance from all-per-token modelzip
        assert "all-per-token" in str(s) and 0 < s.int8["agreement"] <= 1
    # ORT matches modelzip with the exported granularity on other inputs too
    x2 = _ids(3, 5, 3)
    names = {k for k, f in s.integer_layers.items() if "per-tensor" in f}
    with per_tensor(model, names):
        ref = reference_output(model, normalize_inputs(x2))
    got = OrtModule(tmp_path / "b.onnx")(**x2)
    assert float((got - ref).norm() / ref.norm()) < 0.02


def test_int8_auto_budget_orders_choices(tmp_path):
    model, x = _bert_int8(), _ids(2, 7, 0)
    calib = [_ids(4, 9, 1)]
    strict = mz.export_onnx(model, tmp_path / "a.onnx", x, calib_inputs=calib,
                            int8_budget=0.0, sizes=False)
    loose = mz.export_onnx(model, tmp_path / "b.onnx", x, calib_inputs=calib,
                           int8_budget=50.0, sizes=False)
    assert strict.int8["tensor_layers"] <= loose.int8["tensor_layers"]
    assert loose.int8["tensor_layers"] == len(loose.integer_layers)


def test_bad_inputs(tmp_path):
    model = _lenet()
    with pytest.raises(mz.ModelzipError, match="does not exist"):
        mz.export_onnx(model, tmp_path / "missing" / "m.onnx", X_IMG)
    with pytest.raises(mz.ModelzipError, match="example inputs"):
        mz.export_onnx(model, tmp_path / "m.onnx", "not a tensor")
    with pytest.raises(ExportError):
        mz.export_onnx(model, tmp_path / "m.onnx", torch.randn(2, 3, 12, 12))
    with pytest.raises(mz.ModelzipError, match="accuracy_level"):
        mz.export_onnx(model, tmp_path / "m.onnx", X_IMG, accuracy_level=7)
    with pytest.raises(mz.ModelzipError, match="int8_activations"):
        mz.export_onnx(model, tmp_path / "m.onnx", X_IMG, int8_activations="row")
    with pytest.raises(mz.ModelzipError, match="decode"):
        mz.export_onnx(model, tmp_path / "m.onnx", X_IMG, decode=True)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_verification_runs_in_a_fresh_process(tmp_path, monkeypatch):
    import subprocess
    import sys

    calls = []
    real = subprocess.run

    def spy(cmd, *a, **kw):
        calls.append(cmd)
        return real(cmd, *a, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    s = mz.export_onnx(_lenet(), tmp_path / "m.onnx", X_IMG, sizes=False)
    assert len(calls) == 1 and calls[0][0] == sys.executable and calls[0][1] == "-c"
    script = calls[0][2]
    assert "import onnxruntime" in script and "torch" not in script
    assert "modelzip" not in script and s.check["rel"] <= s.check["tol"]


def test_measure_and_cli_in_onnxruntime(tmp_path):
    model = mz.quantize(_lenet(), mz.Int8())
    m = mz.measure(model, example_inputs=X_IMG, runtime="onnxruntime", repeats=2,
                   evaluate=lambda mm: float(mm(X_IMG).shape[0]))
    assert m["runtime"] == "onnxruntime" and m["onnx_bytes"] > 0 and m["latency_s"] > 0
    assert m["metric"] == 3.0
    with pytest.raises(mz.ModelzipError):
        mz.measure(model, example_inputs=X_IMG, runtime="tvm")


def test_cli_export_and_eval_onnx(tmp_path, capsys):
    from modelzip.cli import main

    model = mz.quantize(mz.zoo.lenet5(image_size=8), mz.Int8())
    mz.save(model, tmp_path / "m.mzip")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.mzip"), "--format", "onnx", "--out", str(out),
                 "--json"]) == 0
    assert '"integer_layers"' in capsys.readouterr().out
    assert main(["eval", str(out), "--data", "digits", "--json"]) == 0
    text = capsys.readouterr().out
    assert '"runtime": "onnxruntime"' in text and '"accuracy"' in text


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decode_step_with_past_key_values(arch, tmp_path):
    """The decode graph takes and returns past keys/values (dynamic batch, new-token and
    past lengths) and reproduces transformers' own cached decode, step after step."""
    tf = pytest.importorskip("transformers")
    from modelzip.export.onnx_decode import cache_kwarg, output_cache
    from modelzip.export.onnx_hf import linear_from_conv1d

    torch.manual_seed(0)
    if arch == "gpt2":
        model = linear_from_conv1d(tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64)))
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    model = mz.quantize(model.eval(), mz.WeightOnly(bits=4, group_size=16,
                                                    targets=["Linear"]))
    s = mz.export_onnx(model, tmp_path / "d.onnx", _ids(2, 5, 0), decode=True, sizes=False)
    assert "MatMulNBits" in _ops(tmp_path / "d.onnx")
    assert s.check["rel"] <= s.check["tol"]
    sess = OrtModule(tmp_path / "d.onnx").sess
    names = [i.name for i in sess.get_inputs()]
    assert names[:3] == ["input_ids", "attention_mask", "past_key_0"]
    assert [o.name for o in sess.get_outputs()][:2] == ["logits", "present_key_0"]
    prompt = _ids(3, 7, 1)  # other batch size and prompt length than the export's
    with torch.no_grad():
        out = model(**prompt, use_cache=True)
    cache, mask = output_cache(out), prompt["attention_mask"]
    # the prompt itself through the same graph, with an empty past
    empty = [np.zeros((3, *t.shape[1:2], 0, t.shape[3]), np.float32)
             for layer in cache.layers for t in (layer.keys, layer.values)]
    got = sess.run(None, dict(zip(names, [prompt["input_ids"].numpy(), mask.numpy(),
                                          *empty], strict=True)))
    assert np.linalg.norm(got[0] - out.logits.numpy()) <= 0.05 * np.linalg.norm(
        out.logits.numpy())
    past = got[1:]
    tok = out.logits[:, -1:].argmax(-1)
    for _ in range(3):  # greedy steps: ORT feeds its presents back as the next past
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        got = sess.run(None, dict(zip(names, [tok.numpy(), mask.numpy(), *past],
                                      strict=True)))
        with torch.no_grad():
            ref = model(input_ids=tok, attention_mask=mask, **{cache_kwarg(model): cache},
                        use_cache=True)
        cache = output_cache(ref)
        want = [ref.logits] + [t for layer in cache.layers for t in (layer.keys, layer.values)]
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            assert np.linalg.norm(g - w.numpy()) <= 0.05 * np.linalg.norm(w.numpy())
        past = got[1:]
        tok = ref.logits[:, -1:].argmax(-1)
        assert np.array_equal(got[0][:, -1:].argmax(-1), tok.numpy())


def test_causal_lm_with_input_ids_only(tmp_path):
    """No attention_mask given: the graph builds an all-ones mask (transformers would
    otherwise trace torch.diff, which has no ONNX form) and takes input_ids alone."""
    tf = pytest.importorskip("transformers")
    from modelzip.export.onnx_hf import linear_from_conv1d

    torch.manual_seed(0)
    model = linear_from_conv1d(tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=32))).eval()
    mz.export_onnx(model, tmp_path / "g.onnx", {"input_ids": IDX}, sizes=False)
    ort_model = OrtModule(tmp_path / "g.onnx")
    assert ort_model.input_names == ["input_ids"]
    x = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        ref = model(input_ids=x).logits
    assert float((ort_model(input_ids=x) - ref).norm() / ref.norm()) < 1e-4
