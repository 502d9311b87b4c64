"""Shared fixtures: small models and data slices so that the whole suite stays quick."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import modelzip as mz

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# tiny models: one thread is faster than two and immune to oversubscription
torch.set_num_threads(1)


def data_root() -> Path | None:
    env = os.environ.get("MODELZIP_DATA")
    for cand in ([Path(env)] if env else []) + [SHARED, Path("/usr/share/datasets")]:
        if (cand / "fashion-mnist").is_dir():
            return cand
    return None


needs_fashion = pytest.mark.skipif(
    data_root() is None,
    reason="Fashion-MNIST not found (set MODELZIP_DATA to a folder holding fashion-mnist/)")


def text_path() -> Path | None:
    root = data_root()
    p = root / "tinyshakespeare" / "input.txt" if root else None
    return p if p and p.is_file() else None


@pytest.fixture(autouse=True, scope="session")
def _data_env():
    """Point MODELZIP_DATA at ../shared/datasets when it is there and unset, so code that
    looks datasets up by name (the CLI, subprocesses) finds what the skips checked."""
    root = data_root()
    if root is not None and not os.environ.get("MODELZIP_DATA"):
        os.environ["MODELZIP_DATA"] = str(root)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    return mz.data.digits(batch_size=64)


@pytest.fixture(scope="session")
def trained_mlp_state(digits):
    torch.manual_seed(0)
    m = mz.zoo.lenet300(in_features=64)
    mz.train(m, digits.train, epochs=3, lr=3e-3, progress=False)
    return m.state_dict()


@pytest.fixture
def trained_mlp(trained_mlp_state):
    m = mz.zoo.lenet300(in_features=64)
    m.load_state_dict(trained_mlp_state)
    return m.eval()
