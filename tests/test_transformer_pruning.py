"""Heads / neurons / blocks removed physically from Hugging Face BERT, GPT-2 and Llama
(incl. grouped KV heads) built from tiny configs; config updated; save/load (also in a
fresh process); and packed-by-default weight-only layers after load."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import modelzip as mz
import modelzip.io.hf  # noqa: F401  (registers the "hf" architecture kind for mz.load)
from modelzip.quantization import PackedEmbedding, PackedLinear

transformers = pytest.importorskip("transformers")
V = 40


def _tag(model, auto_class):
    model._mz_arch = {"kind": "hf", "auto_class": auto_class,
                      "config": model.config.to_dict()}
    return model.eval()


def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=4, intermediate_size=64)
    return _tag(transformers.BertModel(cfg), "AutoModel")


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=4,
                                  n_positions=32, bos_token_id=0, eos_token_id=0)
    return _tag(transformers.GPT2LMHeadModel(cfg), "AutoModelForCausalLM")


def llama(kv=2):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                   num_attention_heads=8, num_key_value_heads=kv,
                                   intermediate_size=64, max_position_embeddings=32)
    return _tag(transformers.LlamaForCausalLM(cfg), "AutoModelForCausalLM")


X = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
CALIB = [torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(i))
         for i in range(3)]


def out(model):
    with torch.no_grad():
        o = model(X)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def blocks(model):
    from modelzip.pruning.transformer_arch import block_list

    return block_list(model)[2]


@pytest.mark.parametrize("make", [bert, gpt2, llama], ids=["bert", "gpt2", "llama-gqa"])
@pytest.mark.parametrize("criterion", ["l2", "activation"])
def test_heads_and_neurons_removed_physically(make, criterion, tmp_path):
    model = make()
    before = sum(p.numel() for p in model.parameters())
    width = {"BertModel": 64, "GPT2LMHeadModel": 128}.get(type(model).__name__, 64)
    mz.prune(model, mz.Heads(0.5, criterion=criterion), calib_data=CALIB)
    mz.prune(model, mz.Neurons(0.5, criterion=criterion), calib_data=CALIB)
    assert sum(p.numel() for p in model.parameters()) < before
    name = type(model).__name__
    from modelzip.pruning.transformer_arch import attention, family, mlp

    fam = family(model)
    for b in blocks(model):
        at = attention(fam, b)
        assert mlp(fam, b).size == width // 2
        assert (at.heads, at.kv_heads) == ((4, 1) if "Llama" in name else (2, 2))
    cfg = model.config
    if "Llama" in name:  # standard fields describe the result
        assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 1, 4)
        assert cfg.intermediate_size == 32 and not hasattr(cfg, "mz_layers")
    else:  # fewer heads at the original head size: recorded per layer
        assert cfg.mz_layers[0] == {"heads": 2, "kv_heads": 2, "head_dim": 8,
                                    "intermediate": width // 2}
    y = out(model)
    assert torch.isfinite(y).all()
    mz.save(model, tmp_path / "p.mzip")
    loaded = mz.load(tmp_path / "p.mzip")
    assert type(loaded) is type(model)
    torch.testing.assert_close(out(loaded), y, rtol=0, atol=0)


def test_gqa_queries_mode_keeps_kv_heads():
    model = llama(kv=2)
    mz.prune(model, mz.Heads(0.5, gqa="queries"))
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    for b in blocks(model):
        assert b.self_attn.num_key_value_groups == 2
        assert b.self_attn.k_proj.out_features == 8 and b.self_attn.q_proj.out_features == 16
    assert torch.isfinite(out(model)).all()


def test_activation_criterion_needs_calibration():
    with pytest.raises(mz.ModelzipError, match="calib_data"):
        mz.prune(gpt2(), mz.Heads(0.5, criterion="activation"))
    with pytest.raises(mz.ConfigError):
        mz.Heads(0.5, criterion="taylor")
    with pytest.raises(mz.ConfigError):
        mz.Depth()


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_depth_removes_the_identity_like_block(make):
    model = make()
    from modelzip.pruning.transformer_arch import attention, family, mlp

    fam = family(model)
    middle = blocks(model)[1]
    with torch.no_grad():  # block 1 adds nothing to its input: angular distance 0
        for m in (attention(fam, middle).out, mlp(fam, middle).down):
            m.weight.zero_()
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    kept = [blocks(model)[i] for i in (0, 2)]
    mz.prune(model, mz.Depth(blocks=1), calib_data=CALIB)
    assert list(blocks(model)) == kept
    assert model.config.num_hidden_layers == 2
    assert torch.isfinite(out(model)).all()


def test_depth_updates_bert_config_and_layer_index():  # post-LN blocks: no identity block
    model = bert()
    mz.prune(model, mz.Depth(ratio=0.34, contiguous=False), calib_data=CALIB)
    assert len(blocks(model)) == model.config.num_hidden_layers == 2
    assert [b.attention.self.layer_idx for b in blocks(model)] == [0, 1]


def test_fresh_process_reload_of_pruned_gpt2_and_llama(tmp_path):
    for name, model in (("gpt2", gpt2()), ("llama", llama())):
        mz.prune(model, mz.Heads(0.5), calib_data=CALIB)
        mz.prune(model, mz.Neurons(0.25, criterion="activation"), calib_data=CALIB)
        mz.prune(model, mz.Depth(blocks=1), calib_data=CALIB)
        path = tmp_path / f"{name}.mzip"
        mz.save(model, path)
        code = (
            "import sys, torch, modelzip as mz\n"
            "import modelzip.io.hf  # registers the hf architecture kind on this branch\n"
            "from safetensors.torch import save_file\n"
            f"m = mz.load(sys.argv[1]); x = torch.tensor({X.tolist()})\n"
            "with torch.no_grad(): y = m(x).logits\n"
            "save_file({'y': y.contiguous()}, sys.argv[2])\n")
        res = tmp_path / f"{name}.safetensors"
        env_src = str(Path(mz.__file__).resolve().parents[1])
        subprocess.run([sys.executable, "-c", code, str(path), str(res)], check=True,
                       env={"PYTHONPATH": env_src, "PATH": "/usr/bin:/bin"})
        torch.testing.assert_close(load_file(str(res))["y"], out(model), rtol=0, atol=0)


def test_loaded_weight_only_model_stays_packed(tmp_path):
    model = bert()
    mz.quantize(model, mz.WeightOnly(bits=4, group_size=16))
    ref = out(model)
    mz.save(model, tmp_path / "q.mzip")
    loaded = mz.load(tmp_path / "q.mzip")
    torch.testing.assert_close(out(loaded), ref, rtol=0, atol=0)
    packed = [m for m in loaded.modules() if isinstance(m, (PackedLinear, PackedEmbedding))]
    assert len(packed) == 3 * 6 + 1 + 3  # 6 Linear per block, pooler, 3 embeddings
    for m in packed:
        assert m.codes.dtype == torch.uint8
        assert m.codes.numel() == m.rows * m.cols // 2  # two 4-bit codes per byte
        floats = [t for t in list(m.buffers()) + list(m.parameters())
                  if t.dtype.is_floating_point]
        assert all(t.numel() < m.rows * m.cols for t in floats)  # no fp32 weight kept
        assert "weight" not in m.__dict__
    cached = mz.unpack(copy.deepcopy(loaded))  # the explicit fp32 cache
    torch.testing.assert_close(out(cached), ref, rtol=1e-5, atol=1e-5)
    assert isinstance(cached.encoder.layer[0].intermediate.dense, torch.nn.Linear)
    assert "weight" in cached.encoder.layer[0].intermediate.dense.__dict__
    again = mz.pack(cached)
    assert isinstance(again.encoder.layer[0].intermediate.dense, PackedLinear)
    torch.testing.assert_close(out(again), ref, rtol=0, atol=0)
