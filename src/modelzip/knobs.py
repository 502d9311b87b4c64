"""Strength knobs: how strongly a config compresses, declared by the config itself.

A config that can be made gentler or harsher returns a :class:`Knob` from its ``knob()``
method: which field holds the strength, which end is gentlest, and either a continuous
range (bisected) or a ladder of discrete settings (walked). The compression loop,
sensitivity analysis, per-layer allocation and the auto search use only this, so a new
method's strength can have any name. A config whose ``knob()`` is None is applied as
written and never weakened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """The strength of a config: ``field`` moves from ``gentlest`` to ``harshest``.

    With a ``ladder`` (gentlest first) only those settings are tried; otherwise the
    range is continuous and bisection stops when two settings are closer than ``step``.
    """

    field: str
    gentlest: float
    harshest: float
    ladder: tuple[Any, ...] = ()
    step: float = 0.01

    @property
    def discrete(self) -> bool:
        return bool(self.ladder)

    def between(self, gentler: Any | None, harsher: Any | None) -> Any | None:
        """The setting halfway between a gentler one (None: the gentlest end) and a
        harsher one (None: the harshest end); None when nothing lies between them."""
        if self.ladder:
            i = -1 if gentler is None else self.position(gentler)
            j = len(self.ladder) if harsher is None else self.position(harsher)
            return self.ladder[(i + j + 1) // 2] if j - i > 1 else None
        a = self.gentlest if gentler is None else gentler
        b = self.harshest if harsher is None else harsher
        return round((a + b) / 2, 4) if abs(b - a) > self.step else None

    def position(self, value: Any) -> int:
        """Index of ``value`` on the ladder (values off the ladder snap to the nearest)."""
        return min(range(len(self.ladder)), key=lambda i: abs(self.ladder[i] - value))

    def harshness(self, value: Any) -> float:
        """0 at the gentlest setting, 1 at the harshest (for ordering and reports)."""
        if self.ladder:
            return self.position(value) / max(len(self.ladder) - 1, 1)
        span = self.harshest - self.gentlest
        return (value - self.gentlest) / span if span else 0.0

    def shifted(self, value: Any, steps: int) -> Any:
        """A ladder setting ``steps`` rungs harsher (negative: gentler), clamped."""
        i = min(max(self.position(value) + steps, 0), len(self.ladder) - 1)
        return self.ladder[i]


def ladder_from(value: Any, ladder: tuple[Any, ...]) -> tuple[Any, ...]:
    """``ladder`` with ``value`` inserted in order if it is not on it (a config may ask for
    a setting the default ladder skips); the ladder is ordered gentlest first."""
    if value in ladder:
        return ladder
    descending = ladder[0] > ladder[-1]
    return tuple(sorted((*ladder, value), reverse=descending))
