"""The sequential block engine: one pass per block, shared Hessians, bf16, devices,
resume bit for bit, statistics across torch.distributed ranks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import modelzip as mz
from modelzip import blockwise, calib
from modelzip.calib_ckpt import Checkpoint
from modelzip.devices import resolve_device
from modelzip.ops.gptq import gptq
from modelzip.quantization import weight_only


def _tiny_gpt(layers: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return mz.zoo.tiny_gpt(n_layer=layers, d_model=32, n_head=4).eval()


def _calib(n: int = 3, vocab: int = 65, key: str | None = None) -> list:
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, vocab, (2, 16), generator=g) for _ in range(n)]
    return [{key: x} for x in data] if key else data


def _llama(layers: int = 3, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                                   max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()


GPTQ = dict(bits=4, group_size=16, method="gptq", packed=False)  # the tests read codes and dtypes


def test_one_pass_per_block() -> None:
    model, data = _tiny_gpt(3), _calib(2)
    calls = {"model": 0}
    model.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    for i, blk in enumerate(model.blocks):
        calls[i] = 0
        blk.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
    mz.quantize(model, mz.WeightOnly(**GPTQ, targets=["re:blocks\\..*"]), calib_data=data)
    # the model runs up to block 0 once per batch (capture); each block runs twice per
    # batch (statistics, then its compressed outputs), the last once (no later block)
    assert calls == {"model": 2, 0: 4, 1: 4, 2: 2}


@pytest.mark.parametrize("make,per_block", [(_tiny_gpt, 4), (_llama, 4)])
def test_layers_fed_one_tensor_share_one_hessian(make, per_block, monkeypatch) -> None:
    made = []

    class Spy(calib.InputStats):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(weight_only, "InputStats", Spy)
    model = make(2)
    key = None if make is _tiny_gpt else "input_ids"
    targets = ["re:blocks\\..*"] if make is _tiny_gpt else ["re:model\\.layers\\..*"]
    mz.quantize(model, mz.WeightOnly(**GPTQ, targets=targets),
                calib_data=_calib(2, 50, key))
    # tiny_gpt: q/k/v | proj | mlp.fc | mlp.proj; Llama: q/k/v | o | gate/up | down
    assert len(made) == 2 * per_block
    assert all(st.xtx.dtype == torch.float32 for st in made)


def _hessian_hook(f: str, h64: dict, n: dict):
    def fn(mod, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        h64[f] += x.T @ x
        n[f] += x.shape[0]
    return fn


def _old_path_gptq(model: torch.nn.Module, data: list, cfg: mz.WeightOnly) -> None:
    """The previous schedule: the whole model once per block, one float64 Hessian per
    layer (running mean), then the same solver."""
    for prefix, _ in calib.find_blocks(model):
        group = {f: m for f, m in model.named_modules()
                 if f.startswith(prefix + ".") and isinstance(m, torch.nn.Linear)}
        h64 = {f: torch.zeros(m.in_features, m.in_features, dtype=torch.float64)
               for f, m in group.items()}
        n = dict.fromkeys(group, 0)

        hs = [m.register_forward_pre_hook(_hessian_hook(f, h64, n)) for f, m in group.items()]
        with torch.no_grad():
            for x in data:
                model(x)
        for h in hs:
            h.remove()
        for f, m in group.items():
            spec = weight_only.layer_spec(m, cfg)
            codes, scale, zero = gptq(m.weight.detach(), 2 * h64[f] / n[f], spec)
            weight_only.install_codes(m, "weight", codes, scale, zero, spec)


def test_gptq_matches_the_whole_model_schedule_on_tiny_gpt() -> None:
    base, data = _tiny_gpt(3), _calib(4)
    cfg = mz.WeightOnly(**GPTQ, targets=["re:blocks\\..*"])
    new, old = copy.deepcopy(base), copy.deepcopy(base)
    mz.quantize(new, cfg, calib_data=data)
    _old_path_gptq(old, data, cfg)
    same = total = 0
    old_codes = dict(old.named_buffers())
    for f, a in new.named_buffers():
        if f.endswith("weight_codes") and f in old_codes:
            same += int((a == old_codes[f]).sum())
            total += a.numel()
    assert same / total > 0.99  # float32 vs float64 sums flip a few roundings at most
    with torch.no_grad():
        ref = base(data[0])
        err_new = float(((new(data[0]) - ref) ** 2).mean())
        err_old = float(((old(data[0]) - ref) ** 2).mean())
    assert err_new <= err_old * 1.05


def test_int8_static_sequential_not_worse() -> None:
    base, data = _tiny_gpt(3), _calib(4)
    new = copy.deepcopy(base)
    mz.quantize(new, mz.Int8(activations="static"), calib_data=data)
    assert isinstance(new.blocks[2].attn.q, mz.quantization.int8.Int8Linear)
    with torch.no_grad():
        ref = base(data[0])
        err = float(((new(data[0]) - ref) ** 2).mean())
    assert err < 0.01 * float((ref ** 2).mean())


def test_bf16_llama_gptq_stays_bf16(tmp_path) -> None:
    model, data = _llama(2, torch.bfloat16), _calib(2, 50, "input_ids")
    mz.quantize(model, mz.WeightOnly(**GPTQ), calib_data=data)
    q = model.model.layers[0].self_attn.q_proj
    assert q.weight_codes.dtype == torch.int8 and q.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        out = model(**data[0]).logits
    assert out.dtype == torch.bfloat16
    mz.save(model, tmp_path / "m.mzip")
    back = mz.load(tmp_path / "m.mzip", model=_llama(2, torch.bfloat16))
    with torch.no_grad():
        assert torch.equal(back(**data[0]).logits, out)


def test_device_plumbing() -> None:
    model, data = _tiny_gpt(2), _calib(2)
    mz.prune(model, mz.Wanda(sparsity=0.5), calib_data=data, device="cpu")
    assert float((model.blocks[0].attn.q.weight == 0).float().mean()) == pytest.approx(0.5)
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(mz.ModelzipError, match="unknown device|not supported"):
        mz.quantize(_tiny_gpt(1), mz.WeightOnly(**GPTQ), calib_data=data, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(mz.ModelzipError, match="CUDA is not available"):
            mz.quantize(_tiny_gpt(1), mz.WeightOnly(**GPTQ), calib_data=data, device="cuda")


def _canonical(path) -> bytes:
    """The file's bytes with its safetensors header re-serialised with sorted keys: the
    safetensors writer orders ``__metadata__`` keys at random (a Rust HashMap), so two
    saves of one model differ there; every tensor byte is compared as is."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    return json.dumps(header, sort_keys=True).encode() + raw[8 + n:]


def test_resume_is_bit_identical(tmp_path, monkeypatch) -> None:
    data = _calib(3, 50, "input_ids")
    cfg = mz.WeightOnly(**GPTQ)  # includes the LM head: calibrated after the blocks
    straight = _llama(3)
    mz.quantize(straight, cfg, calib_data=data)
    mz.save(straight, tmp_path / "a.mzip")

    real_commit = Checkpoint.commit

    def dying_commit(self, i, total):
        real_commit(self, i, total)
        if i == 1:
            raise KeyboardInterrupt("simulated kill after block 1")

    monkeypatch.setattr(Checkpoint, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        mz.quantize(_llama(3), cfg, calib_data=data, checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(Checkpoint, "commit", real_commit)
    solved = []
    real_gptq = weight_only.gptq
    monkeypatch.setattr(weight_only, "gptq", lambda w, *a, **k: solved.append(w.shape)
                        or real_gptq(w, *a, **k))
    resumed = _llama(3)
    mz.quantize(resumed, cfg, calib_data=data, checkpoint_dir=tmp_path / "ck")
    assert len(solved) == 7 + 1  # block 2's seven Linears and the LM head only
    mz.save(resumed, tmp_path / "b.mzip")
    assert _canonical(tmp_path / "a.mzip") == _canonical(tmp_path / "b.mzip")
    # other arguments do not pick up this checkpoint
    other = _llama(3)
    mz.quantize(other, cfg.replace(bits=3), calib_data=data, checkpoint_dir=tmp_path / "ck")
    assert other.model.layers[0].self_attn.q_proj._mz_reparam["weight"]["bits"] == 3


# --------------------------------------------------------------- distributed statistics
def _stats_run(out: str) -> None:
    """Run the engine on tiny_gpt with a method that records every layer's statistics."""
    seen: dict[str, torch.Tensor] = {}

    def solve(fqn, m, st):
        seen[f"{fqn}.h"], seen[f"{fqn}.n"] = st.hessian.clone(), st.l2_norm.clone()
        return {}

    method = blockwise.Method(lambda m: calib.InputStats(m.in_features, True), solve,
                              lambda *a: None)
    model = _tiny_gpt(2)
    layers = {f: m for f, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    blockwise.run(model, _calib(4), layers, method)
    if calib.world()[0] == 0:
        save_file(seen, out)


def _rank_main(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank,
                                         world_size=world)
    try:
        _stats_run(out)
    finally:
        torch.distributed.destroy_process_group()


def test_two_rank_hessians_equal_one_rank(tmp_path) -> None:
    one, two = str(tmp_path / "one.safetensors"), str(tmp_path / "two.safetensors")
    _stats_run(one)
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_rank_main, args=(2, init, two), nprocs=2, join=True)
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys() and len(a) == 2 * 13  # 12 block Linears + the head
    for k in a:
        rel = float((a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-30))
        assert rel <= 1e-6, (k, rel)


def test_too_few_batches_for_the_ranks_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(blockwise, "world", lambda: (0, 4))
    with pytest.raises(mz.ModelzipError, match="ranks"):
        mz.quantize(_tiny_gpt(1), mz.WeightOnly(**GPTQ), calib_data=_calib(2))



def test_unpack_keeps_a_bf16_model_in_bf16() -> None:
    model = _llama(1, torch.bfloat16)
    mz.quantize(model, mz.WeightOnly(bits=4, group_size=16))  # packed by default
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = model(input_ids=ids).logits.float()
        mz.unpack(model)
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
        out = model(input_ids=ids).logits
    assert out.dtype == torch.bfloat16
    assert float((out.float() - packed).abs().max()) < 0.1
