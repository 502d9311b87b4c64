"""`modelzip export --decode`: a 4-bit Hugging Face causal LM's decode step as ONNX, with
past key/values, from the command line (the example input comes from the file's config)."""

from __future__ import annotations

import pytest
import torch

import modelzip as mz
from modelzip.cli import main


def _llama_file(tmp_path):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval()
    mz.quantize(model, mz.WeightOnly(bits=4, group_size=16, targets=["Linear"]))
    path = tmp_path / "llama.mzip"
    mz.save(model, path)
    return path


def test_export_decode_step_from_the_cli(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    path = _llama_file(tmp_path)
    out = tmp_path / "decode.onnx"
    assert main(["export", str(path), "--out", str(out), "--decode", "--json"]) == 0
    assert '"onnx"' in capsys.readouterr().out
    graph = onnx.load(str(out), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    assert "input_ids" in inputs and any("past" in n for n in inputs)
    assert any("present" in n or "past" in n for n in outputs)
    assert any(n.op_type == "MatMulNBits" for n in graph.node)  # weights stayed 4-bit


def test_export_decode_refuses_a_model_that_is_not_a_causal_lm(tmp_path, capsys):
    model = mz.zoo.lenet5()
    path = tmp_path / "lenet.mzip"
    mz.save(model, path)
    assert main(["export", str(path), "--out", str(tmp_path / "x.onnx"), "--decode"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decode" in err[0]
