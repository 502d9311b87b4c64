"""The channel spaces of structured pruning: tensor layouts and the union-find graph that
records which channels must be pruned together (filled by :mod:`.walk`, read by
:mod:`.surgery` and :mod:`.structured`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Layout = tuple[tuple[int, int], ...]  # ((space id, expand), ...)


@dataclass
class Value:
    """A tensor's channel layout and the index of its channel dimension."""

    layout: Layout
    cdim: int


@dataclass
class Graph:
    """The dependency graph: spaces (union-find), and the records of who slices what."""

    size: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    pins: dict[int, str | None] = field(default_factory=dict)  # sid -> reason (None: natural)
    outs: dict[str, int] = field(default_factory=dict)  # module fqn -> space of its outputs
    ins: dict[str, list[Layout]] = field(default_factory=dict)  # consumer -> input layouts
    norms: dict[str, list[Layout]] = field(default_factory=dict)  # BN/LN over channels
    depthwise: dict[str, list[Layout]] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)  # attention modules (head pruning)
    unknown: list[tuple[str, list[Layout]]] = field(default_factory=list)
    pinned_modules: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ union-find
    def new(self, size: int, pin: bool = False, reason: str | None = None) -> int:
        sid = len(self.size)
        self.size.append(int(size))
        self.parent.append(sid)
        if pin:
            self.pins[sid] = reason
        return sid

    def find(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def pin(self, layout: Layout | None, reason: str | None = None) -> None:
        for sid, _ in layout or ():
            self.pins.setdefault(sid, reason)

    def join(self, a: Layout, b: Layout) -> bool:
        """Merge two layouts channel-for-channel; False (and both pinned) if they differ."""
        if len(a) == len(b) and all(self.size[x] == self.size[y] and ex == ey
                                    for (x, ex), (y, ey) in zip(a, b)):
            for (x, _), (y, _) in zip(a, b):
                self.union(x, y)
            return True
        self.pin(a)
        self.pin(b)
        return False

    def width(self, layout: Layout) -> int:
        return sum(self.size[s] * e for s, e in layout)

    def root_pins(self) -> dict[int, str | None]:
        out: dict[int, str | None] = {}
        for sid, reason in self.pins.items():
            r = self.find(sid)
            if out.get(r) is None:
                out[r] = reason
        return out


def flat_shape_expand(in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                      cdim: int) -> tuple[int, int] | None:
    """(new cdim, extra expand) when ``out`` merges dims cdim.. of ``in``; None otherwise.

    Recognises identity, flatten from the channel dim (C,H,W -> C*H*W) and reshapes that
    keep the leading dims and the channel dim (optionally splitting trailing dims).
    """
    if in_shape == out_shape:
        return cdim, 1
    if tuple(out_shape[:cdim]) != tuple(in_shape[:cdim]) or len(out_shape) <= cdim:
        return None
    rest_in = math.prod(in_shape[cdim + 1:])
    if out_shape[cdim] == math.prod(in_shape[cdim:]) and len(out_shape) == cdim + 1:
        return cdim, rest_in
    if out_shape[cdim] == in_shape[cdim] and math.prod(out_shape[cdim + 1:]) == rest_in:
        return cdim, 1
    return None
