"""Stream coders of the .mzip format: raw packing, canonical Huffman, zstd, lzma, and the
fast path (:func:`encode_fast`) that large models are saved with by default.

A stream is a sequence of ``count`` unsigned symbols of ``bits`` bits each (integer
codes, sparse-index symbols, or the bytes of dense floats with ``bits=8``). A coder
turns it into bytes and back. ``encode`` may return None when it does not apply;
``decode(data, count, bits)`` returns the symbols (any integer numpy dtype) and must
raise FormatError, never anything else, on bad input, bounding its work by ``count``.
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..ops import huffman
from ..ops.pack import pack, packed_nbytes, unpack


@dataclass(frozen=True)
class Coder:
    name: str
    encode: Callable[[np.ndarray, int], bytes | None]
    decode: Callable[[bytes, int, int], np.ndarray]


_CODERS: dict[str, Coder] = {}


def register_coder(coder: Coder) -> Coder:
    _CODERS[coder.name] = coder
    return coder


def coder(name: str) -> Coder:
    try:
        return _CODERS[name]
    except (KeyError, TypeError):
        raise FormatError(f"unknown stream coder {name!r}") from None


def coders() -> tuple[str, ...]:
    return tuple(_CODERS)


def pack_symbols(symbols: np.ndarray, bits: int) -> bytes:
    """The raw packing of ``symbols`` (unsigned, < 2**bits): LSB-first codes back to back,
    byte-identical to :func:`modelzip.ops.pack.pack`, with narrow-integer fast paths for
    the common widths (no int64 intermediate)."""
    s = np.asarray(symbols).ravel()
    if bits == 8:
        return s.astype(np.uint8, copy=False).tobytes()
    if bits in (16, 32):
        return s.astype(f"<u{bits // 8}", copy=False).tobytes()
    if bits in (1, 2, 4):
        per = 8 // bits
        u = s.astype(np.uint8, copy=False)
        if u.size % per:
            u = np.concatenate([u, np.zeros(per - u.size % per, np.uint8)])
        u = u.reshape(-1, per)
        out = u[:, 0].copy()
        for i in range(1, per):
            out |= u[:, i] << np.uint8(i * bits)
        return out.tobytes()
    return pack(s, bits)


def unpack_symbols(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_symbols`: ``count`` symbols in the narrowest unsigned dtype
    for the common widths (int64 otherwise); FormatError when the length is wrong."""
    if bits in (1, 2, 4, 8, 16, 32):
        need = packed_nbytes(count, bits)
        if len(data) != need:
            kind = "byte" if bits == 8 else "packed"
            raise FormatError(f"{kind} stream has {len(data)} bytes, expected {need}")
        buf = np.frombuffer(data, dtype=np.uint8)
        if bits >= 8:
            return buf.view(f"<u{bits // 8}")
        per, mask = 8 // bits, np.uint8((1 << bits) - 1)
        out = np.empty((buf.size, per), np.uint8)
        for i in range(per):  # the lowest field needs no shift, the highest no mask
            if i == per - 1:
                np.right_shift(buf, np.uint8(i * bits), out=out[:, i])
            else:
                np.bitwise_and(buf >> np.uint8(i * bits) if i else buf, mask, out=out[:, i])
        return out.ravel()[:count]
    return unpack(data, bits, count)


register_coder(Coder("raw", pack_symbols, unpack_symbols))
_SINGLE, _CHUNK = struct.Struct("<BI"), struct.Struct("<I")  # Huffman header fields


# ------------------------------------------------------------------------- Huffman
def _huff_encode(symbols: np.ndarray, bits: int) -> bytes | None:
    if bits > 16:
        return None
    return huffman.encode(symbols)


def _huff_decode(data: bytes, count: int, bits: int) -> np.ndarray:
    """Symbols (uint16) of a Huffman stream. The decoder's Python loop runs once per
    symbol of a lane, so lanes longer than the writer makes (``auto_chunk``) are refused:
    that bounds the time per byte; a single-symbol stream is filled without int64."""
    if not 1 <= bits <= 16:
        raise FormatError("Huffman streams hold symbols of at most 16 bits")
    if count and len(data) == _SINGLE.size and data[0] == 0:
        alpha = _SINGLE.unpack(data)[1]
        if not 1 <= alpha <= 1 << bits:
            raise FormatError("Huffman symbol outside the alphabet")
        return np.full(count, alpha - 1, dtype=np.uint16)
    if len(data) >= _SINGLE.size + _CHUNK.size and data[0] != 0:
        chunk = _CHUNK.unpack_from(data, _SINGLE.size)[0]
        if chunk > huffman.auto_chunk(count):
            raise FormatError(f"Huffman lanes of {chunk} symbols are longer than the "
                              f"writer makes ({huffman.auto_chunk(count)})")
    return huffman.decode(data, count, 1 << bits)


register_coder(Coder("huffman", _huff_encode, _huff_decode))


# --------------------------------------------------------- general-purpose coders
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def _lzma_encode(symbols: np.ndarray, bits: int) -> bytes:
    return lzma.compress(pack_symbols(symbols, bits), format=lzma.FORMAT_RAW,
                         filters=_LZMA_FILTERS)


def _bounded(decompress: Callable[[bytes, int], bytes], data: bytes, count: int,
             bits: int) -> np.ndarray:
    need = packed_nbytes(count, bits)
    if need == 0:
        if data:
            raise FormatError("compressed stream of zero symbols must be empty")
        return np.zeros(0, dtype=np.int64)
    out = decompress(data, need)
    if len(out) != need:
        raise FormatError("compressed stream decodes to the wrong length")
    return unpack_symbols(out, count, bits)


def _lzma_raw(data: bytes, need: int) -> bytes:
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        out = dec.decompress(data, max_length=need + 1)
    except lzma.LZMAError:
        raise FormatError("corrupt lzma stream") from None
    if not dec.eof or dec.unused_data:
        raise FormatError("truncated lzma stream or trailing bytes")
    return out


register_coder(Coder("lzma", _lzma_encode,
                     lambda d, n, b: _bounded(_lzma_raw, d, n, b)))

try:  # zstandard is optional
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

if _zstd is not None:
    def _zstd_encode(symbols: np.ndarray, bits: int) -> bytes:
        cctx = _zstd.ZstdCompressor(level=19, write_content_size=False,
                                    write_checksum=False)
        return cctx.compress(pack_symbols(symbols, bits))

    def zstd_fast(raw: bytes, level: int) -> bytes:
        """A zstd frame of ``raw`` at a fast ``level``, multithreaded. zstd's output with
        one or more worker threads does not depend on their number, so the bytes are the
        same on any machine (threads=-1: one worker per CPU)."""
        cctx = _zstd.ZstdCompressor(level=level, threads=-1, write_content_size=False,
                                    write_checksum=False)
        return cctx.compress(raw)

    def _zstd_raw(data: bytes, need: int) -> bytes:
        """Exactly one frame decoding to ``need`` bytes. A frame header may declare any
        content size (zstandard's one-shot API allocates it whatever max_output_size
        says), so the declared size must be absent or ``need``, and the output is read
        through a stream capped at ``need + 1`` bytes."""
        try:
            declared = _zstd.get_frame_parameters(data).content_size
            if declared not in (_zstd.CONTENTSIZE_UNKNOWN, need):
                raise FormatError("zstd frame declares a size its stream cannot hold")
            with _zstd.ZstdDecompressor().stream_reader(  # reads the buffer in place
                    data, read_across_frames=True, closefd=False) as r:
                out = r.read(need + 1)
            if len(out) != need:
                raise FormatError("zstd stream decodes to the wrong length")
            return out
        except (_zstd.ZstdError, ValueError, OSError):
            raise FormatError("corrupt zstd stream") from None

    register_coder(Coder("zstd", _zstd_encode, lambda d, n, b: _bounded(_zstd_raw, d, n, b)))


# ------------------------------------------------------------------ the fast path
FAST_LEVEL = {"float": 1, "int": 3}  # zstd levels of the fast path, per stream kind


def encode_fast(symbols: np.ndarray, bits: int, kind: str) -> tuple[str, bytes]:
    """(coder, bytes) of the fast path: the raw packing, or a fast multithreaded zstd
    frame of it when that is smaller. No lzma, no Huffman (whose lane decoder is the
    slowest step of a load). ``kind``: "float" (the bytes of dense floats) or "int"."""
    raw = pack_symbols(symbols, bits)
    if _zstd is None or len(raw) < 64:
        return "raw", raw
    z = zstd_fast(raw, FAST_LEVEL[kind])
    return ("zstd", z) if len(z) < len(raw) else ("raw", raw)
