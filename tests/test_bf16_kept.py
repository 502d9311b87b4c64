"""bf16 in, bf16 kept: a bf16 Llama quantized by GPTQ / AWQ / RTN with its LM head left
dense (the w4-gptq recipe's choice) runs in bf16 (the packed embedding hands out bf16
rows), and mz.load gives back a bf16 model with the same logits (not an fp32 upcast)."""

from __future__ import annotations

import pytest
import torch

import modelzip as mz


def _bf16_llama():
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # as from_pretrained(dtype=bf16) builds it
    try:
        return tf.LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("method", ["gptq", "awq", "rtn"])
def test_bf16_llama_quantized_runs_saves_and_loads_in_bf16(method, tmp_path):
    from modelzip.quantization.packed_convert import PackedEmbedding

    model = _bf16_llama()
    data = [{"input_ids": torch.randint(0, 256, (2, 32), generator=torch.Generator()
                                        .manual_seed(i))} for i in range(2)]
    mz.quantize(model, mz.WeightOnly(bits=4, group_size=128, method=method,
                                     ignore=["re:lm_head"]), calib_data=data)
    assert isinstance(model.model.embed_tokens, PackedEmbedding)
    with torch.no_grad():
        logits = model(**data[0]).logits
    assert logits.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.bfloat16
    mz.save(model, tmp_path / "m.mzip")
    loaded = mz.load(tmp_path / "m.mzip")
    floats = {t.dtype for t in loaded.state_dict().values() if t.is_floating_point()}
    assert torch.bfloat16 in floats and loaded.lm_head.weight.dtype == torch.bfloat16
    assert loaded.model.norm.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(loaded(**data[0]).logits, logits)
