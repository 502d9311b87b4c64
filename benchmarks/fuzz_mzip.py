"""Fuzzing the .mzip reader: 10,000 mutated files must raise ModelzipError (or load),
never another exception, a crash or a hang."""

from __future__ import annotations

import collections
import random
import signal
import tempfile
import time
import traceback
from pathlib import Path

import torch
from common import write_result

import modelzip as mz
from modelzip.io.fuzz import mutate

CASES, TIMEOUT_S = 10_000, 30


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def valid_files(folder: Path) -> list[bytes]:
    torch.manual_seed(0)
    a = mz.zoo.lenet300(in_features=64)
    mz.prune(a, mz.Magnitude(sparsity=0.9))
    mz.cluster(a, mz.Cluster(clusters=16))
    b = mz.zoo.lenet5(image_size=8)
    mz.prune(b, mz.Magnitude(sparsity=0.5))
    mz.quantize(b, mz.WeightOnly(bits=4, group_size=None))
    mz.save(a, folder / "a.mzip", entropy="huffman")
    mz.save(b, folder / "b.mzip", half=True)
    return [(folder / n).read_bytes() for n in ("a.mzip", "b.mzip")]


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    files = valid_files(folder)
    rng = random.Random(2024)
    counts: collections.Counter = collections.Counter()
    bad: list[str] = []
    slowest = 0.0
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.time()
    for i in range(CASES):
        name, blob = mutate(files[i % len(files)], rng)
        p = folder / "m.mzip"
        p.write_bytes(blob)
        t = time.perf_counter()
        signal.alarm(TIMEOUT_S)
        try:
            mz.load(p)
            outcome = "loaded"
        except mz.ModelzipError:
            outcome = "ModelzipError"
        except Hang:
            outcome = "HANG"
        except Exception as exc:  # the thing this benchmark exists to catch
            outcome = "OTHER"
            bad.append(f"case {i} {name}: {exc!r}"[:200])
            traceback.print_exc(limit=2)
        finally:
            signal.alarm(0)
        slowest = max(slowest, time.perf_counter() - t)
        counts[(name, outcome)] += 1
    minutes = (time.time() - t0) / 60
    names = sorted({k[0] for k in counts})
    outcomes = ["ModelzipError", "loaded", "OTHER", "HANG"]
    rows = [[n, *[counts[(n, o)] for o in outcomes]] for n in names]
    rows.append(["total", *[sum(counts[(n, o)] for n in names) for o in outcomes]])
    other = sum(counts[(n, "OTHER")] for n in names)
    hangs = sum(counts[(n, "HANG")] for n in names)
    write_result("fuzz_mzip", "Fuzzing the .mzip reader (10,000 mutated files)", [
        {"title": "Outcome per mutation family", "columns": ["mutation", *outcomes],
         "rows": rows}],
        anchors=["Issue 5 acceptance: 10,000 mutated files, zero exceptions other than "
                 "ModelzipError, zero hangs"],
        notes=[f"{other} other exceptions, {hangs} hangs (limit {TIMEOUT_S} s per file): "
               f"{'met' if other == hangs == 0 else 'NOT met'}",
               f"slowest case {slowest:.2f} s; {minutes:.1f} min in all; seed 2024",
               "mutations: random byte flips (1-16 bytes), truncation at a random length, "
               "manifest edits (values changed, deleted, duplicated, replaced by wild "
               "values) re-compressed with a valid checksum so they reach deep validation",
               "'loaded' = the edit was harmless (e.g. the info record) and the file loaded",
               *bad[:10]])


if __name__ == "__main__":
    main()
