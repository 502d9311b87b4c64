"""Dataset builders returning ``Split(train, test)`` of torch DataLoaders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import DataError
from .idx import read_idx

SYSTEM_ROOT = Path("/usr/share/datasets")
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_NORM = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}


class Split(NamedTuple):
    """Training and test loaders of one dataset."""

    train: DataLoader
    test: DataLoader


class _Tensors(TensorDataset):
    """A TensorDataset that carries facts about the data (classes, shapes, vocab)."""

    def __init__(self, *tensors: torch.Tensor, meta: dict[str, Any]):
        super().__init__(*tensors)
        self.meta = meta


def info(split: Split) -> dict[str, Any]:
    """Facts about a built-in dataset: name, num_classes, input_shape, vocab..."""
    return dict(getattr(split.train.dataset, "meta", {}))


def _loaders(train: Dataset, test: Dataset, batch_size: int, seed: int,
             test_batch_size: int | None = None) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen),
                 DataLoader(test, batch_size=test_batch_size or max(batch_size, 256)))


def _limit(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if n is None else (x[:n], y[:n])


def digits(batch_size: int = 64, seed: int = 0, test_fraction: float = 0.2,
           train_limit: int | None = None, test_limit: int | None = None) -> Split:
    """scikit-learn's 8x8 digits (1,797 images, bundled offline); fixed seeded split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    meta = {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8]}
    xtr, ytr = _limit(x[tr], y[tr], train_limit)
    xte, yte = _limit(x[te], y[te], test_limit)
    return _loaders(_Tensors(xtr, ytr, meta=meta), _Tensors(xte, yte, meta=meta),
                    batch_size, seed)


def find_root(name: str, root: str | os.PathLike | None = None,
              files: tuple[str, ...] = ()) -> Path:
    """The folder holding dataset ``name``: ``root``, $MODELZIP_DATA, /usr/share/datasets."""
    bases = [Path(root)] if root is not None else []
    if os.environ.get("MODELZIP_DATA"):
        bases.append(Path(os.environ["MODELZIP_DATA"]))
    bases.append(SYSTEM_ROOT)
    tried = []
    for base in bases:
        for cand in (base / name, base):
            tried.append(str(cand))
            if cand.is_dir() and all(_exists(cand / f) for f in files):
                return cand
    raise DataError(f"dataset '{name}' not found; looked in: {', '.join(tried)} "
                    f"(set MODELZIP_DATA or pass root=)")


def _exists(p: Path) -> bool:
    return p.exists() or p.with_name(p.name + ".gz").exists()


def _idx_file(folder: Path, stem: str) -> Path:
    gz = folder / f"{stem}.gz"
    return gz if gz.exists() else folder / stem


def _mnist_like(name: str, root: Any, batch_size: int, seed: int,
                train_limit: int | None, test_limit: int | None) -> Split:
    folder = find_root(name, root, _MNIST_FILES)
    arrays = [read_idx(_idx_file(folder, f), 3 if "images" in f else 1) for f in _MNIST_FILES]
    xtr, ytr, xte, yte = arrays
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{folder}: image and label counts differ")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{folder}: train and test image sizes differ")
    if max(ytr.max(initial=0), yte.max(initial=0)) > 9:
        raise DataError(f"{folder}: labels outside 0..9")
    mean, std = _NORM[name]

    def tensors(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[torch.Tensor, ...]:
        x, y = x[:n], y[:n]
        xt = (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1) - mean) / std
        return xt, torch.from_numpy(y.astype(np.int64))

    meta = {"name": name, "num_classes": 10, "input_shape": [1, *xtr.shape[1:]]}
    return _loaders(_Tensors(*tensors(xtr, ytr, train_limit), meta=meta),
                    _Tensors(*tensors(xte, yte, test_limit), meta=meta), batch_size, seed)


def fashion_mnist(root: str | os.PathLike | None = None, batch_size: int = 128, seed: int = 0,
                  train_limit: int | None = None, test_limit: int | None = None) -> Split:
    """Fashion-MNIST from its four IDX .gz files (60,000 train / 10,000 test, 28x28)."""
    return _mnist_like("fashion-mnist", root, batch_size, seed, train_limit, test_limit)


def mnist(root: str | os.PathLike | None = None, batch_size: int = 128, seed: int = 0,
          train_limit: int | None = None, test_limit: int | None = None) -> Split:
    """MNIST from its four IDX .gz files."""
    return _mnist_like("mnist", root, batch_size, seed, train_limit, test_limit)


def text(path: str | os.PathLike | None = None, seq_len: int = 128, batch_size: int = 32,
         val_fraction: float = 0.1, seed: int = 0, stride: int | None = None,
         limit_chars: int | None = None) -> Split:
    """A character-level corpus as (input, next-char target) windows; train/val split.

    ``path=None`` finds ``tinyshakespeare/input.txt`` under the data roots. The vocabulary
    (sorted characters of the whole corpus) is in ``info(split)["vocab"]``.
    """
    if path is None:
        path = find_root("tinyshakespeare", None, ("input.txt",)) / "input.txt"
    try:
        corpus = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read text corpus {path}: {exc}") from None
    if limit_chars:
        corpus = corpus[:limit_chars]
    if len(corpus) < 4 * (seq_len + 1):
        raise DataError(f"text corpus {path} is too short for seq_len={seq_len}")
    vocab = "".join(sorted(set(corpus)))
    lut = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lut[c] for c in corpus], dtype=torch.long)
    cut = int(len(ids) * (1 - val_fraction))
    meta = {"name": "text", "vocab": vocab, "vocab_size": len(vocab), "seq_len": seq_len}

    def windows(t: torch.Tensor, step: int) -> _Tensors:
        starts = torch.arange(0, len(t) - seq_len - 1, step)
        idx = starts[:, None] + torch.arange(seq_len + 1)
        w = t[idx]
        return _Tensors(w[:, :-1].contiguous(), w[:, 1:].contiguous(), meta=meta)

    return _loaders(windows(ids[:cut], stride or seq_len), windows(ids[cut:], seq_len),
                    batch_size, seed, test_batch_size=batch_size)


def sentences(n: int = 512, path: str | os.PathLike | None = None, min_chars: int = 20,
              ) -> list[str]:
    """``n`` distinct real sentences (lines of Tiny Shakespeare by default) for embedding
    fidelity checks and transformer calibration."""
    if path is None:
        path = find_root("tinyshakespeare", None, ("input.txt",)) / "input.txt"
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    seen: dict[str, None] = {}
    for line in lines:
        line = line.strip()
        if len(line) >= min_chars and line not in seen:
            seen[line] = None
    out = list(seen)[:n]
    if len(out) < n:
        raise DataError(f"{path} has only {len(out)} lines of >= {min_chars} characters")
    return out
