"""Data parallelism under ``torchrun``: process group from the environment, exact sharding of
every global batch, DistributedDataParallel, agreed metrics and rank-0-only output.

The contract: N ranks with a loader of batch B train exactly like 1 rank with the same
loader. Every rank iterates the same global batches in the same order (same loader, same
seed) and takes its contiguous share of each (``B/N`` samples, the remainder spread over
the first ranks); each rank's mean loss is weighted by ``n_rank * N / B`` so that DDP's
gradient average equals the gradient of the global batch's mean loss. (torch's
DistributedSampler would draw its own permutation and pad the last batch, so its
result differs from the single-process run.) Every helper is a no-op in one process.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes files and prints."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...).

    Backend: NCCL when ``device`` is CUDA (or, with no device, CUDA is available), gloo
    on CPU. Returns whether this process is now distributed; a no-op without torchrun."""
    if not launched():
        return False
    if not dist.is_available():
        raise ConfigError("torchrun started several processes but torch.distributed is "
                          "not available in this torch build")
    if not dist.is_initialized():
        cuda = (torch.device(device).type == "cuda") if device is not None \
            else torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (e.g. Hessians, input norms); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree(value: float) -> float:
    """The mean of ``value`` over ranks, identical on every rank (same decisions)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def agreed(evaluate: Callable[[nn.Module], float]) -> Callable[[nn.Module], float]:
    """``evaluate`` whose result is averaged over ranks, so that every rank takes the same
    accept / back-off decision (identity in one process)."""

    def run(model: nn.Module) -> float:
        return agree(evaluate(model))

    run.__wrapped__ = evaluate  # type: ignore[attr-defined]
    return run


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def on_main(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run ``fn`` on rank 0 only (e.g. writing a file), then wait for every rank."""
    out = fn(*args, **kw) if is_main() else None
    barrier()
    return out


# ----------------------------------------------------------------------- sharding
def share(n: int, r: int, world: int) -> tuple[int, int]:
    """The [lo, hi) slice of ``n`` samples that rank ``r`` of ``world`` takes."""
    base, extra = divmod(n, world)
    lo = r * base + min(r, extra)
    return lo, lo + base + (r < extra)


def batch_len(batch: Any) -> int:
    """The number of samples in a batch (first tensor's first dimension)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, dict) else batch
    for item in items:
        if isinstance(item, torch.Tensor) and item.dim() > 0:
            return int(item.shape[0])
    raise ConfigError("cannot split a batch holding no tensor across ranks")


def slice_batch(batch: Any, lo: int, hi: int, n: int) -> Any:
    """Samples [lo, hi) of every tensor of ``batch`` whose first dimension is ``n``."""
    def cut(x: Any) -> Any:
        return x[lo:hi] if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == n \
            else x

    if isinstance(batch, dict):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cut(x) for x in batch)
    return cut(batch)


def _weighted(batch: Any, n: int, r: int, world: int) -> tuple[Any, float]:
    """This rank's share of a global batch of ``n`` and its loss weight ``n_r * world / n``.
    A rank left without samples (n < world) takes sample 0 at weight 0: it still runs the
    forward and backward passes DDP needs, contributing nothing."""
    lo, hi = share(n, r, world)
    if hi == lo:
        return slice_batch(batch, 0, 1, n), 0.0
    return slice_batch(batch, lo, hi, n), (hi - lo) * world / n


class _ShardSampler:
    """A batch sampler yielding this rank's share of each batch of ``inner`` (a DataLoader's
    batch sampler) and queueing the matching loss weights in order."""

    def __init__(self, inner: Any, r: int, world: int):
        self.inner, self.r, self.world = inner, r, world
        self.weights: deque[float] = deque()

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        self.weights.clear()
        for idx in self.inner:
            idx = list(idx)
            lo, hi = share(len(idx), self.r, self.world)
            self.weights.append((hi - lo) * self.world / len(idx) if hi > lo else 0.0)
            yield idx[lo:hi] if hi > lo else idx[:1]


class Sharded:
    """An iterable of ``(local batch, loss weight)``: this rank's share of every global
    batch of ``data``, with ``len`` and the shuffling ``generator`` of the original.

    A map-style DataLoader is rebuilt around a sharding batch sampler (each rank loads only
    its samples); any other iterable of batches is sliced after loading."""

    def __init__(self, data: Iterable[Any], r: int | None = None, world: int | None = None):
        self.data, self.r = data, rank() if r is None else r
        self.world = world_size() if world is None else world
        self.generator = getattr(data, "generator", None)
        self.sampler: _ShardSampler | None = None
        self.loader = self._rebuild(data)

    def _rebuild(self, data: Any) -> Any:
        from torch.utils.data import DataLoader, IterableDataset

        if not isinstance(data, DataLoader) or isinstance(data.dataset, IterableDataset) \
                or data.batch_sampler is None:
            return None
        self.sampler = _ShardSampler(data.batch_sampler, self.r, self.world)
        return DataLoader(data.dataset, batch_sampler=self.sampler, collate_fn=data.collate_fn,
                          num_workers=data.num_workers, pin_memory=data.pin_memory,
                          worker_init_fn=data.worker_init_fn, generator=data.generator)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Any, float]]:
        if self.loader is not None and self.sampler is not None:
            for batch in self.loader:
                yield batch, self.sampler.weights.popleft()
            return
        for batch in self.data:
            yield _weighted(batch, batch_len(batch), self.r, self.world)


def wrap(module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over ranks); parameters
    and buffers start from rank 0's. On CUDA the module must already be on this rank's
    device."""
    from torch.nn.parallel import DistributedDataParallel

    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    ids = [dev] if dev.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


__all__ = ["is_distributed", "rank", "world_size", "is_main", "launched", "init_from_env",
           "shutdown", "all_reduce_sum", "agree", "agreed", "barrier", "on_main", "share",
           "Sharded", "wrap", "batch_len", "slice_batch"]
