"""mz.compress_pretrained: a sharded bf16 safetensors Llama compressed block by block gives
the very bytes of the in-memory path, resumes bit-identically, never holds two blocks'
weights, and refuses bad checkpoints with one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import modelzip as mz
from modelzip.io.hf import load_pretrained
from modelzip.io.incremental import IncrementalWriter
from modelzip.pipeline import stream

transformers = pytest.importorskip("transformers")

LAYERS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=LAYERS, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=200,
                                   max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    path = tmp_path_factory.mktemp("llama")
    model.save_pretrained(path, max_shard_size="40KB")
    assert len(list(path.glob("*.safetensors"))) > LAYERS  # really sharded
    return path


@pytest.fixture(scope="module")
def calib() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 200, (8, 16), generator=g)
    return [{"input_ids": ids[i:i + 4]} for i in range(0, 8, 4)]


def _copy(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "hf"
    shutil.copytree(folder, dest)
    return dest


GPTQ = mz.WeightOnly(bits=4, group_size=32, method="gptq")


@pytest.mark.parametrize("cfg", [GPTQ, mz.SparseGPT(sparsity=0.5),
                                 mz.WeightOnly(bits=4, group_size=32, method="awq",
                                               ignore=["re:lm_head"])],
                         ids=["gptq", "sparsegpt", "awq"])
def test_same_bytes_as_in_memory(folder, calib, tmp_path, cfg):
    ref = load_pretrained(folder, "AutoModelForCausalLM")
    assert ref.dtype == torch.bfloat16
    mz.apply(ref, cfg, calib_data=calib)
    n_ref = mz.save(ref, tmp_path / "ref.mzip")
    n = mz.compress_pretrained(folder, tmp_path / "s.mzip", cfg, calib)
    assert n == n_ref == (tmp_path / "s.mzip").stat().st_size
    assert (tmp_path / "s.mzip").read_bytes() == (tmp_path / "ref.mzip").read_bytes()
    if isinstance(cfg, mz.WeightOnly) and cfg.method == "awq":
        return  # a bf16 AWQ model does not run yet, in memory either (not this feature)
    loaded = mz.load(tmp_path / "s.mzip")  # no model given: rebuilt from the record
    x = calib[0]["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)
    assert loaded.model.layers[0].input_layernorm.weight.dtype == torch.bfloat16


def test_recipe_by_name_and_packed_layers(folder, calib, tmp_path):
    mz.compress_pretrained(folder, tmp_path / "r.mzip", "w4-gptq", calib)
    manifest = mz.read_manifest(tmp_path / "r.mzip")
    assert manifest["modules"]["model.layers.0.self_attn.q_proj"]["class"] == "PackedLinear"
    assert "lm_head" not in manifest["modules"]  # the recipe keeps the LM head


@pytest.mark.parametrize("kill_at", [2, LAYERS + 1], ids=["block1", "after-last-block"])
def test_resume_is_bit_identical(folder, calib, tmp_path, monkeypatch, kill_at):
    """Killed after block 1, or after the last block (the resumed run re-runs the last
    block for the LM head's calibration): the same bytes as an uninterrupted run."""
    straight = tmp_path / "straight.mzip"
    mz.compress_pretrained(folder, straight, GPTQ, calib)
    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.mzip"
    calls = {"n": 0}
    add = IncrementalWriter.add

    def dying(self, model, prefix):  # a "kill" once block kill_at - 1 is checkpointed
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return add(self, model, prefix)

    monkeypatch.setattr(IncrementalWriter, "add", dying)
    with pytest.raises(KeyboardInterrupt):
        mz.compress_pretrained(folder, out, GPTQ, calib, checkpoint_dir=ckpt)
    assert not out.exists()
    assert json.loads((ckpt / "progress.json").read_text())["done"] == min(kill_at, LAYERS)
    monkeypatch.setattr(IncrementalWriter, "add", add)
    solved = []
    monkeypatch.setattr(stream._Source, "done", _spy(stream._Source.done, solved))
    mz.compress_pretrained(folder, out, GPTQ, calib, checkpoint_dir=ckpt)
    assert out.read_bytes() == straight.read_bytes()
    assert solved == list(range(LAYERS))  # finished blocks re-installed, re-written


def _spy(fn, seen):
    def wrapper(self, i, *args):
        seen.append(i)
        return fn(self, i, *args)
    return wrapper


def test_one_block_in_memory_at_a_time(folder, calib, tmp_path, monkeypatch):
    """Count the blocks holding real (non-meta) tensors when each block is loaded and
    when it is handed back: always exactly one; the shards are read block by block."""
    seen: list[int] = []
    load, done = stream._Source.load, stream._Source.done

    def live_blocks(src) -> int:
        return sum(any(not t.is_meta for t in b.state_dict().values())
                   for b in src.model.model.layers)

    def spy_load(self, i, fqn, block):
        assert live_blocks(self) == 0
        load(self, i, fqn, block)
        seen.append(live_blocks(self))

    def spy_done(self, i, fqn, layers, missing):
        seen.append(live_blocks(self))
        done(self, i, fqn, layers, missing)
        assert live_blocks(self) == 0

    monkeypatch.setattr(stream._Source, "load", spy_load)
    monkeypatch.setattr(stream._Source, "done", spy_done)
    mz.compress_pretrained(folder, tmp_path / "o.mzip", GPTQ, calib)
    assert seen == [1] * (2 * LAYERS)


def _rewrite_index(path: Path, edit) -> None:
    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    edit(data)
    index.write_text(json.dumps(data))


def _drop_one_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.up_proj.weight"
    shard = path / index[name]
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard), metadata={"format": "pt"})


def _config(path: Path, **change) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    (path / "config.json").write_text(json.dumps(cfg))


BAD = {
    "corrupt index": (lambda p: (p / "model.safetensors.index.json").write_text("{nope"),
                      "not valid JSON"),
    "index without map": (lambda p: _rewrite_index(p, lambda d: d.pop("weight_map")),
                          "no weight_map"),
    "missing shard": (lambda p: next(p.glob("model-00002-*.safetensors")).unlink(),
                      "is missing"),
    "shard lacks tensor": (_drop_one_tensor, "lacks tensor"),
    "path in index": (lambda p: _rewrite_index(
        p, lambda d: d["weight_map"].update({"lm_head.weight": "../x.safetensors"})),
        "bad shard name"),
    "truncated shard": (lambda p: next(p.glob("model-00003-*.safetensors")).write_bytes(
        next(p.glob("model-00003-*.safetensors")).read_bytes()[:-10]), "outside the file"),
    "shape vs config": (lambda p: _config(p, intermediate_size=96), "the config says"),
    "dtype vs config": (lambda p: _config(p, dtype="float16"), "float16"),
    "pickle only": (lambda p: [f.unlink() for f in p.glob("model*.safetensors*")]
                    + [(p / "pytorch_model.bin").write_bytes(b"\x80\x04")], "pickle"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints(folder, calib, tmp_path, case):
    path = _copy(folder, tmp_path)
    damage, words = BAD[case]
    damage(path)
    with pytest.raises(mz.FormatError, match=words):
        mz.compress_pretrained(path, tmp_path / "o.mzip", GPTQ, calib)
    assert not (tmp_path / "o.mzip").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp file left


def test_unsupported_configs(folder, calib, tmp_path):
    for cfg in (mz.WeightOnly(bits=4, method="rtn"), mz.Magnitude(sparsity=0.5)):
        with pytest.raises(mz.UnsupportedModelError, match="cannot be streamed"):
            mz.compress_pretrained(folder, tmp_path / "o.mzip", cfg, calib)
    with pytest.raises(mz.ConfigError, match="stages"):
        mz.compress_pretrained(folder, tmp_path / "o.mzip", "deep-compression", calib)


def test_cli_stream(folder, tmp_path, capsys):
    from safetensors.torch import save_file

    from modelzip.cli import main

    ids = torch.randint(0, 200, (8, 16), generator=torch.Generator().manual_seed(1))
    save_file({"input_ids": ids}, str(tmp_path / "calib.safetensors"))
    out = tmp_path / "cli.mzip"
    recipe = tmp_path / "linear.yaml"  # Linear layers only: a packed embedding computes
    recipe.write_text("stages:\n  - WeightOnly: {bits: 4, group_size: 32, method: gptq, "
                      "targets: [Linear], ignore: ['re:lm_head']}\n")  # in fp32 (not here)
    rc = main(["compress", "--model", str(folder), "--recipe", str(recipe), "--stream",
               "--calib", str(tmp_path / "calib.safetensors"), "--out", str(out),
               "--no-progress", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["file_bytes"] == out.stat().st_size
    loaded = mz.load(out)
    assert type(loaded.model.layers[0].self_attn.q_proj).__name__ == "PackedLinear"
    assert loaded(ids[:1]).logits.dtype == torch.bfloat16
    bad = _copy(folder, tmp_path)
    _drop_one_tensor(bad)
    rc = main(["compress", "--model", str(bad), "--recipe", "w4-gptq", "--stream",
               "--calib", str(tmp_path / "calib.safetensors"), "--out", str(out) + "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "lacks tensor" in err[0]
