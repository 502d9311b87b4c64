"""Fuzzing the .mzip reader: 100,000 mutated files (generic and targeted families, see
modelzip.io.fuzz) loaded in worker processes under a memory limit. Each must raise
ModelzipError or load (and then run its forward pass and ``inspect`` without any other
exception); none may take over 5 s; the workers' peak RSS bounds every case's.

Usage: python benchmarks/fuzz_mzip.py [cases] [workers] [minutes]: no new block of 500
cases starts after ``minutes`` (the number of cases actually run is what is reported).
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import random
import resource
import signal
import sys
import time
import traceback

import torch
from common import write_result

import modelzip as mz
from modelzip.io.fuzz import MUTATIONS, mutate
from modelzip.io.inspect import checked_layer_table, layer_table
from modelzip.io.mzip import read_bytes

CASES, WORKERS, SEED = 100_000, 2, 2024
SLOW_S, HANG_S, HEADROOM = 5.0, 60, 1 << 30  # AS limit: the worker's size + 1 GiB
OUTCOMES = ["ModelzipError", "loaded", "OTHER", "HANG"]


def bases() -> list[tuple[bytes, torch.Tensor]]:
    """(file bytes, example input) of four small models covering every record kind the
    families edit: codebook + masks + Huffman, PackedLinear, Int8Linear + attention extra
    state, a NAS record."""
    torch.manual_seed(0)
    a = mz.zoo.lenet300(in_features=16, hidden=(48, 24))
    mz.prune(a, mz.Magnitude(sparsity=0.9))
    mz.cluster(a, mz.Cluster(clusters=16))
    b = mz.zoo.lenet5(image_size=8, channels=(4, 8), hidden=32)
    mz.prune(b, mz.Magnitude(sparsity=0.5))
    mz.quantize(b, mz.WeightOnly(bits=4, group_size=16, packed=True))
    c = mz.zoo.tiny_gpt(vocab_size=16, seq_len=8, d_model=16, n_layer=1, n_head=2)
    mz.quantize(c, mz.Int8())
    sp = mz.nas.space("mlp", input_shape=[1, 4, 4], num_classes=3)
    d = mz.nas.build(sp, {"depth": 2, "width_0": 16, "width_1": 16, "activation": "relu"})
    mz.prune(d, mz.Magnitude(sparsity=0.5))
    return [(mz.dumps(a, entropy="huffman"), torch.zeros(1, 16)),
            (mz.dumps(b, half=True), torch.zeros(1, 1, 8, 8)),
            (mz.dumps(c), torch.zeros(1, 8, dtype=torch.long)),
            (mz.dumps(d), torch.zeros(1, 1, 4, 4))]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def one_case(blob: bytes, x: torch.Tensor) -> str:
    """Load, then (if it loaded) run forward and inspect: ModelzipError or success only."""
    try:
        model = mz.loads(blob)
        with torch.no_grad():
            model(x)
    except mz.ModelzipError:
        try:  # inspect must refuse it the same way, never crash
            checked_layer_table(read_bytes(blob))
        except mz.ModelzipError:
            pass
        return "ModelzipError"
    layer_table(read_bytes(blob))  # loaded: validated already, the table must not crash
    return "loaded"


LIMIT = [0]


def init_worker(files: list) -> None:
    """One torch thread, the hang alarm, and the memory limit (once per process); every
    base file loaded once first, so that one-time imports are not timed as a case."""
    torch.set_num_threads(1)
    for blob, x in files:
        one_case(blob, x)
    signal.signal(signal.SIGALRM, _alarm)
    LIMIT[0] = _vm_bytes() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT[0], LIMIT[0]))


def worker(args: tuple[int, int, int, list, float]) -> dict:
    start, stop, seed, files, deadline = args
    limit = LIMIT[0]
    if time.time() > deadline:  # out of time: the cases not run are reported as such
        return {"counts": collections.Counter(), "bad": [], "slowest": (0.0, ""),
                "over": 0, "rss": 0, "limit": limit}
    counts: collections.Counter = collections.Counter()
    bad, slowest, over = [], (0.0, ""), 0
    for i in range(start, stop):
        rng = random.Random(seed * 1_000_003 + i)
        blob, x = files[i % len(files)]
        name, mutated = mutate(blob, rng)
        t = time.perf_counter()
        signal.alarm(HANG_S)
        try:
            outcome = one_case(mutated, x)
        except Hang:
            outcome = "HANG"
            bad.append(f"hang: case {i} {name}")
        except BaseException as exc:  # what this benchmark exists to catch
            outcome = "OTHER"
            bad.append(f"case {i} {name}: {exc!r}"[:240])
            traceback.print_exc(limit=-3)
        finally:
            signal.alarm(0)
        dt = time.perf_counter() - t
        if dt > SLOW_S:
            over += 1
            bad.append(f"slow: case {i} {name} {dt:.1f} s")
        slowest = max(slowest, (dt, f"case {i} ({name})"))
        counts[(name, outcome)] += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"counts": counts, "bad": bad, "slowest": slowest, "over": over, "rss": rss,
            "limit": limit}


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else CASES
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else WORKERS
    minutes = float(sys.argv[3]) if len(sys.argv) > 3 else 1e6
    files = bases()
    step = 500  # small tasks: both workers stay busy to the end
    t0 = time.time()
    tasks = [(s, min(s + step, cases), SEED, files, t0 + 60 * minutes)
             for s in range(0, cases, step)]
    with mp.get_context("fork").Pool(workers, init_worker, (files,)) as pool:
        parts = pool.map(worker, tasks, chunksize=1)
    minutes = (time.time() - t0) / 60
    counts: collections.Counter = collections.Counter()
    for p in parts:
        counts.update(p["counts"])
    target, cases = cases, sum(counts.values())
    names = [n for n in MUTATIONS if any(k[0] == n for k in counts)]
    rows = [[n, *[counts[(n, o)] for o in OUTCOMES]] for n in names]
    rows.append(["total", *[sum(counts[(n, o)] for n in names) for o in OUTCOMES]])
    other, hangs = rows[-1][3], rows[-1][4]
    over = sum(p["over"] for p in parts)
    slow = max(p["slowest"] for p in parts)
    rss = max(p["rss"] for p in parts)
    limit = max(p["limit"] for p in parts)
    bad = [b for p in parts for b in p["bad"]]
    met = other == hangs == over == 0 and rss < 1 << 30 and cases >= 100_000
    write_result("fuzz_mzip", f"Fuzzing the .mzip reader ({cases:,} mutated files)", [
        {"title": "Outcome per mutation family", "columns": ["mutation", *OUTCOMES],
         "rows": rows},
        {"title": "Acceptance", "columns": ["figure", "value", "required"],
         "rows": [["cases run", cases, 100_000], ["exceptions other than ModelzipError", other, 0],
                  ["hangs (over 60 s)", hangs, 0], [f"cases over {SLOW_S:.0f} s", over, 0],
                  ["slowest case (s)", round(slow[0], 3), "< 5"],
                  ["peak RSS of any worker (MiB)", round(rss / 2**20, 1), "< 1024"]]}],
        anchors=["Issue 13 acceptance: 100,000 mutated files, 0 exceptions other than "
                 "ModelzipError, 0 cases over 5 s, peak RSS per case under 1 GB (run under a "
                 "memory limit)"],
        notes=[f"{'met' if met else 'NOT met'}: {other} other exceptions, {hangs} hangs, "
               f"{over} cases over {SLOW_S:.0f} s (slowest {slow[0]:.2f} s, {slow[1]})",
               f"{cases:,} of {target:,} cases run; "
               f"{workers} worker processes, 1 torch thread each, {minutes:.1f} min in all; "
               f"seed {SEED} (case i uses Random({SEED} * 1000003 + i))",
               f"memory limit: RLIMIT_AS = the worker's own size after start-up + 1 GiB "
               f"({limit / 2**30:.2f} GiB); a case allocating more would raise MemoryError "
               "and count as OTHER. A worker's peak RSS (ru_maxrss) bounds every case it ran",
               "each case: load; if it loads, run forward on an input of the right shape; "
               "then inspect's validated table. 'loaded' = the edit was harmless",
               "bases: LeNet-300 (16-48-24-10) pruned + clustered + Huffman; LeNet-5 (8x8) "
               "pruned + 4-bit PackedLinear (group 16), fp16; tiny GPT with Int8Linear + attention "
               "state; a NAS MLP pruned",
               "families: see modelzip/io/fuzz.py (flip, truncate, manifest: generic; "
               "semantic, big_int, zstd_size, huge_stream, long_lane, v1: targeted at "
               "issue 13's defects)", *bad[:10]])


if __name__ == "__main__":
    main()
