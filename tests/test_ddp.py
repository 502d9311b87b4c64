"""Data-parallel training under torchrun (2 CPU ranks, gloo) against one process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import modelzip as mz
from modelzip.distributed import ddp

SRC = Path(__file__).resolve().parents[1] / "src"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

JOB = textwrap.dedent("""
    import copy, sys, torch, modelzip as mz
    from modelzip.distributed import ddp
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out, mode = sys.argv[1], sys.argv[2]
    # batch 25: shares of 13 and 12 samples, last batch 6 (weights differ per rank)
    split = mz.data.digits(batch_size=25, train_limit=256)
    model = mz.zoo.lenet300(in_features=64)
    if mode == "finetune":
        mz.finetune(model, split.train, epochs=2, lr=1e-3, progress=False)
    else:
        teacher = copy.deepcopy(model)
        mz.train(teacher, split.train, epochs=1, lr=3e-3, progress=False)
        mz.distill(model, teacher, split.train, mz.Distillation(alpha=0.5), epochs=1, lr=1e-3,
                   progress=False)
    ddp.on_main(mz.save, model, out + "/model.mzip")  # rank 0 alone writes
""")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _max_diff(a: Path, b: Path) -> float:
    sa, sb = mz.load(a).state_dict(), mz.load(b).state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "distill"])
def test_two_ranks_equal_one_rank_with_the_same_global_batch(tmp_path, mode):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, str(script), str(one), mode], tmp_path)
    _run([*TORCHRUN, str(script), str(two), mode], tmp_path)
    assert [p.name for p in two.iterdir()] == ["model.mzip"]  # rank 0 alone wrote
    assert _max_diff(one / "model.mzip", two / "model.mzip") <= 1e-5


@pytest.mark.slow
def test_torchrun_compress_cli(tmp_path):
    torch.manual_seed(0)
    split = mz.data.digits()
    model = mz.zoo.lenet300(in_features=64, num_classes=10)
    mz.train(model, split.train, epochs=3, lr=3e-3, progress=False)
    mz.save(model, tmp_path / "w.mzip")
    (tmp_path / "r.yaml").write_text("stages:\n  - Magnitude: {sparsity: 0.7, scope: global}\n"
                                     "  - finetune: {epochs: 1, lr: 0.0005}\n")
    args = ["compress", "--model", "lenet300", "--weights", "w.mzip", "--data", "digits",
            "--recipe", "r.yaml", "--max-drop", "0.05", "--no-progress"]
    _run([sys.executable, "-m", "modelzip", *args, "--out", "one.mzip"], tmp_path)
    (tmp_path / "two").mkdir()
    out = _run([*TORCHRUN, "-m", "modelzip", *args, "--out", "two/two.mzip",
                "--report", "two/r.html"], tmp_path)
    assert out.stdout.count("wrote two/two.mzip") == 1  # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["r.html", "two.mzip"]
    assert _max_diff(tmp_path / "one.mzip", tmp_path / "two" / "two.mzip") <= 1e-5


def test_sharding_covers_every_sample_once():
    data = [(torch.arange(n).float().unsqueeze(1), torch.arange(n)) for n in (7, 3, 1)]
    for world in (2, 3):
        seen, weights = [], []
        for r in range(world):
            for (_x, y), w in ddp.Sharded(data, r, world):
                if w:
                    seen += y.tolist()
                weights.append(w)
        assert sorted(seen) == sorted(sum((y.tolist() for _, y in data), []))
        assert all(w >= 0 for w in weights)


def test_helpers_in_one_process():
    t = torch.ones(3)
    assert ddp.all_reduce_sum(t) is t and torch.equal(t, torch.ones(3))
    assert ddp.rank() == 0 and ddp.world_size() == 1 and not ddp.is_distributed()
    assert ddp.agree(0.25) == 0.25 and ddp.agreed(lambda m: 0.5)(None) == 0.5
