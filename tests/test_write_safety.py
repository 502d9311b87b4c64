"""Writing .mzip files safely: OS failures become WriteError naming the path with the old
file intact and no temp file left, stale temp files of killed saves are cleaned, the
writer refuses what the reader would refuse, and the output is deterministic."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load as st_load

import modelzip as mz
from modelzip.errors import WriteError
from modelzip.io import safetensors_io as stio
from modelzip.pipeline.recipe import Recipe

SRC = Path(__file__).resolve().parents[1] / "src"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = mz.zoo.lenet300(in_features=16, hidden=(32, 16))
    mz.prune(m, mz.Magnitude(sparsity=0.8))
    mz.cluster(m, mz.Cluster(clusters=8))
    return m


def _temps(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(stio.TMP_SUFFIX)]


@pytest.fixture
def saved(tmp_path):
    p = tmp_path / "m.mzip"
    mz.save(_model(), p)
    return p, p.read_bytes()


def test_full_disk_is_a_write_error_and_keeps_the_old_file(saved, monkeypatch):
    p, old = saved

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stio.os, "write", full)
    with pytest.raises(WriteError, match=str(p.name)) as info:
        mz.save(mz.zoo.lenet300(in_features=16, hidden=(8, 8)), p)
    assert isinstance(info.value, mz.ModelzipError)
    assert "No space left" in str(info.value)
    assert p.read_bytes() == old and _temps(p.parent) == []


def test_read_only_folder_is_a_write_error(saved, monkeypatch):
    p, old = saved

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p.parent))

    monkeypatch.setattr(stio.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match="Read-only file system"):
        mz.save(_model(), p)
    assert p.read_bytes() == old and _temps(p.parent) == []
    if os.geteuid() != 0:  # root ignores permission bits
        monkeypatch.undo()
        p.parent.chmod(0o555)
        try:
            with pytest.raises(WriteError, match=str(p.parent)):
                mz.save(_model(), p)
        finally:
            p.parent.chmod(0o755)


def test_too_long_name_and_missing_folder(tmp_path):
    with pytest.raises(WriteError, match="x" * 50):
        mz.save(_model(), tmp_path / ("x" * 300 + ".mzip"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(WriteError, match="does not exist"):
        mz.save(_model(), tmp_path / "missing" / "m.mzip")
    with pytest.raises(WriteError, match="directory"):
        mz.save(_model(), tmp_path)


def test_stale_temp_files_of_dead_processes_are_cleaned(saved):
    p, old = saved
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = p.parent / f".{p.name}.{dead}-abc123{stio.TMP_SUFFIX}"
    alive = p.parent / f".{p.name}.1-def456{stio.TMP_SUFFIX}"  # pid 1 is alive
    other = p.parent / f".other.mzip.{dead}-abc123{stio.TMP_SUFFIX}"  # another target
    foreign = p.parent / f".{p.name}.abc.tmp"  # not our pattern
    for f in (stale, alive, other, foreign):
        f.write_bytes(old[:100])
    mz.save(_model(), p)
    assert not stale.exists()
    assert alive.exists() and other.exists() and foreign.exists()
    assert p.read_bytes() == old


def test_killed_save_leaves_nothing_after_the_next_save(tmp_path):
    p = tmp_path / "m.mzip"
    code = ("import torch, modelzip as mz\n"
            "m = mz.zoo.lenet300()\n"
            f"while True:\n    mz.save(m, {str(p)!r}, entropy='none')\n")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 120
        while not _temps(tmp_path) and time.time() < deadline:
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait()
    if p.exists():
        mz.load(p)  # a complete file or none: never a corrupt one
    mz.save(_model(), p)
    assert _temps(tmp_path) == []


def test_same_model_saved_twice_gives_identical_bytes(tmp_path):
    m = _model()
    assert mz.dumps(m) == mz.dumps(m)
    code = ("import sys, torch, modelzip as mz\ntorch.manual_seed(0)\n"
            "m = mz.zoo.lenet300(in_features=16, hidden=(32, 16))\n"
            "mz.save(m, sys.argv[1], info={'b': 1, 'a': {'z': 2, 'y': 3}})\n")
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"{seed}.mzip"
        env = dict(os.environ, PYTHONPATH=str(SRC), PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", code, str(out)], env=env, check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    arrays = st_load(outs[0])  # still a valid safetensors file for the reference reader
    assert set(arrays) == {"manifest", "data"}


def test_writer_refuses_what_the_reader_refuses():
    bomb: list = ["x"] * 9
    for _ in range(8):  # 9**9 values once expanded, built from shared references
        bomb = [bomb] * 9
    t = time.perf_counter()
    with pytest.raises(mz.ModelzipError, match="too large"):
        mz.dumps(_model(), info={"recipe": bomb})
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(mz.ModelzipError, match="nested"):
        mz.dumps(_model(), info=deep)
    with pytest.raises(mz.ModelzipError):
        mz.dumps(_model(), info={"n": 10 ** 5000})
    assert time.perf_counter() - t < 60


def test_recipe_yaml_alias_bomb_and_size_are_refused():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        levels.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    text = "\n".join(levels) + "\nstages: [{Magnitude: {sparsity: 0.5}}]\nname: *h\n"
    with pytest.raises(mz.ConfigError, match="aliases"):
        Recipe.from_yaml(text)
    with pytest.raises(mz.ConfigError, match="characters"):
        Recipe.from_yaml("#" * (2 << 20))
    with pytest.raises(mz.ConfigError, match="string"):
        Recipe.from_yaml("stages: [{Magnitude: {sparsity: 0.5}}]\nname: [1, 2]\n")
