"""How strongly a config compresses, and how to make it gentler or harsher.

Each knob maps a config field to a range of settings ordered from gentlest to harshest:
float knobs (sparsity, ratio) are bisected; integer knobs (bits, clusters) walk a ladder.
A config without a knob can only be applied or skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config


@dataclass(frozen=True)
class Knob:
    field: str
    kind: str            # "float" or "ladder"
    gentlest: float      # float knobs: identity end of the range
    harshest: float      # float knobs: the strongest value worth trying in mode="max"
    ladder: tuple[int, ...] = ()  # ladder knobs: gentlest ... harshest


FLOAT_FIELDS = {"sparsity": (0.0, 0.98), "ratio": (0.0, 0.9)}
LADDERS = {
    "bits": (8, 7, 6, 5, 4, 3, 2),
    "clusters": (256, 128, 64, 32, 16, 8, 4),
}


def knob_of(cfg: Config) -> Knob | None:
    """The strength knob of ``cfg`` (None when it has no adjustable strength)."""
    fields = getattr(cfg, "__dataclass_fields__", {})
    for name, (lo, hi) in FLOAT_FIELDS.items():
        if name in fields and isinstance(getattr(cfg, name), float):
            return Knob(name, "float", lo, max(hi, getattr(cfg, name)))
    for name, ladder in LADDERS.items():
        if name in fields and isinstance(getattr(cfg, name), int):
            return Knob(name, "ladder", ladder[0], ladder[-1], ladder)
    return None


def gentler(cfg: Config, knob: Knob, passed: float | None, failed: float) -> float | int | None:
    """The next setting to try between the last passing (or gentlest) and failing ones."""
    return _between(knob, passed, failed)


def harsher(cfg: Config, knob: Knob, passed: float, failed: float | None) -> float | int | None:
    """The next setting to try beyond a passing one (mode="max")."""
    return _between(knob, passed, failed)


def _between(knob: Knob, lo: float | None, hi: float | None) -> float | int | None:
    """Midpoint between a gentler setting ``lo`` (None: the gentlest end) and a harsher
    ``hi`` (None: the harshest end); None when they are adjacent."""
    if knob.kind == "float":
        a = knob.gentlest if lo is None else lo
        b = knob.harshest if hi is None else hi
        return round((a + b) / 2, 4) if abs(b - a) > 0.01 else None
    ladder = knob.ladder
    i = -1 if lo is None else _index(ladder, lo)
    j = len(ladder) if hi is None else _index(ladder, hi)
    return ladder[(i + j + 1) // 2] if j - i > 1 else None


def _index(ladder: tuple[int, ...], value: float) -> int:
    """Position of ``value`` on the ladder (values off the ladder snap to the nearest)."""
    return min(range(len(ladder)), key=lambda i: abs(ladder[i] - value))
