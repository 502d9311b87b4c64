"""Byte-stream coders of the .mzip format (raw; entropy coders register more).

A coder turns a byte string into a smaller one and back. Each decoder receives the
expected decoded length and must raise FormatError (never anything else) on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FormatError


@dataclass(frozen=True)
class Coder:
    name: str
    encode: Callable[[bytes], tuple[bytes, dict]]
    decode: Callable[[bytes, int, dict], bytes]


_CODERS: dict[str, Coder] = {}


def register_coder(coder: Coder) -> Coder:
    _CODERS[coder.name] = coder
    return coder


def coder(name: str) -> Coder:
    try:
        return _CODERS[name]
    except KeyError:
        raise FormatError(f"unknown stream coder {name!r}") from None


def coders() -> tuple[str, ...]:
    return tuple(_CODERS)


def _raw_decode(data: bytes, n: int, meta: dict) -> bytes:
    if len(data) != n:
        raise FormatError(f"raw stream has {len(data)} bytes, expected {n}")
    return data


register_coder(Coder("raw", lambda b: (b, {}), _raw_decode))
