"""Canonical Huffman coding of integer symbols, with a vectorised table-driven decoder.

Stream layout (little-endian, see docs/format.md):

    u8  L          longest code length (0: every symbol equals A - 1, no bits follow)
    u32 A          alphabet size (largest symbol + 1)
    -- only when L > 0 --
    u32 chunk      symbols per chunk
    u8  lw         bits per entry of the code-length table
    u8  w          bits per entry of the chunk bit-length table
    A x lw bits    code length of every symbol (0 = absent), packed (ops.pack)
    (chunks-1) x w bits   bit length of every chunk but the last, packed
    bit stream     codes MSB-first, back to back, zero-padded to a byte

Codes are canonical (assigned in order of length, then symbol), so the length table
alone defines them. Decoding runs one lane per chunk: every step peeks L bits at all
lanes' positions at once (an unaligned 64-bit word view of the bytes), looks up
(symbol, length) in a 2**L table and advances, so the Python loop runs ``chunk`` times,
not once per symbol. Every field is validated; malformed input raises FormatError.
"""

from __future__ import annotations

import heapq
import math
import struct

import numpy as np

from ..errors import FormatError
from .pack import bits_needed, pack, packed_nbytes, unpack

MAX_LEN = 20          # longest code; longer Huffman codes are length-limited
MAX_CHUNK = 1 << 16   # bound on decoder steps per stream
_HEAD = struct.Struct("<BI")
_HEAD2 = struct.Struct("<IBB")


def huffman_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Code length per symbol (0 for absent symbols) of a Huffman code, limited to max_len.

    One present symbol gets length 0 (it needs no bits). Limiting halves the counts
    (keeping them >= 1) until the code fits, which stays a complete prefix code.
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    out = np.zeros(counts.size, dtype=np.int64)
    if present.size <= 1:
        return out
    c = counts[present]
    while True:
        depth = _tree_depths(c)
        if depth.max() <= max_len:
            out[present] = depth
            return out
        c = np.maximum(c // 2, 1)


def _tree_depths(c: np.ndarray) -> np.ndarray:
    m = c.size
    heap = [(int(v), i) for i, v in enumerate(c)]
    heapq.heapify(heap)
    parent = np.zeros(2 * m - 1, dtype=np.int64)
    nxt = m
    while len(heap) > 1:
        ca, a = heapq.heappop(heap)
        cb, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (ca + cb, nxt))
        nxt += 1
    depth = np.zeros(2 * m - 1, dtype=np.int64)
    for node in range(2 * m - 3, -1, -1):  # parents have larger ids than children
        depth[node] = depth[parent[node]] + 1
    return depth[:m]


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code value of every symbol (by length, then symbol order)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, prev = 0, 0
    for s in order:
        ln = int(lengths[s])
        code <<= ln - prev
        codes[s] = code
        code += 1
        prev = ln
    return codes


def _write_bits(codes: np.ndarray, lens: np.ndarray) -> bytes:
    """Concatenate variable-length codes MSB-first (blocked to bound memory)."""
    parts, carry = [], np.zeros(0, dtype=np.uint8)
    for i in range(0, codes.size, 1 << 20):
        c, ln = codes[i: i + (1 << 20)], lens[i: i + (1 << 20)]
        total = int(ln.sum())
        starts = np.cumsum(ln) - ln
        owner = np.repeat(np.arange(c.size), ln)
        k = np.arange(total) - starts[owner]
        bits = ((c[owner] >> (ln[owner] - 1 - k)) & 1).astype(np.uint8)
        bits = np.concatenate([carry, bits])
        cut = bits.size - bits.size % 8
        parts.append(np.packbits(bits[:cut]).tobytes())
        carry = bits[cut:]
    parts.append(np.packbits(carry).tobytes())
    return b"".join(parts)


def auto_chunk(count: int) -> int:
    """Symbols per decoder lane: few offsets for small streams, many lanes for big ones."""
    return max(1, min(count, 4096 if count < (1 << 16) else 1024))


def encode(symbols: np.ndarray, chunk: int | None = None) -> bytes:
    """Canonical Huffman stream of non-negative integer ``symbols`` (< 2**20 distinct)."""
    sym = np.asarray(symbols).astype(np.int64).ravel()
    if sym.size == 0:
        return b""
    if sym.min() < 0:
        raise ValueError("Huffman symbols must be non-negative")
    alpha = int(sym.max()) + 1
    lengths = huffman_lengths(np.bincount(sym, minlength=alpha), MAX_LEN)
    top = int(lengths.max())
    if top == 0:
        return _HEAD.pack(0, alpha)
    chunk = min(chunk or auto_chunk(sym.size), sym.size, MAX_CHUNK)
    codes, lens = canonical_codes(lengths)[sym], lengths[sym]
    csum = np.cumsum(lens)
    chunk_bits = np.diff(np.concatenate([[0], csum[chunk - 1:: chunk]]))
    nchunks = math.ceil(sym.size / chunk)
    chunk_bits = chunk_bits[: nchunks - 1]
    w = bits_needed(chunk_bits, False) if chunk_bits.size else 1
    lw = bits_needed(lengths, False)
    head = _HEAD.pack(top, alpha) + _HEAD2.pack(chunk, lw, w)
    return (head + pack(lengths, lw) + (pack(chunk_bits, w) if chunk_bits.size else b"")
            + _write_bits(codes, lens))


def _parse(data: bytes, count: int, alphabet: int
           ) -> tuple[int, np.ndarray, int, np.ndarray, memoryview]:
    """Validated (max length, length table, chunk, chunk start bits, bit-stream bytes)."""
    if len(data) < _HEAD.size + _HEAD2.size:
        raise FormatError("Huffman stream header is truncated")
    top, alpha = _HEAD.unpack_from(data)
    chunk, lw, w = _HEAD2.unpack_from(data, _HEAD.size)
    if not 1 <= top <= MAX_LEN or not 2 <= alpha <= alphabet:
        raise FormatError("Huffman stream has bad code length or alphabet size")
    if not 1 <= chunk <= min(count, MAX_CHUNK) or not 1 <= lw <= 8 or not 1 <= w <= 40:
        raise FormatError("Huffman stream has bad chunk parameters")
    nchunks = math.ceil(count / chunk)
    pos = _HEAD.size + _HEAD2.size
    n_len, n_off = packed_nbytes(alpha, lw), packed_nbytes(nchunks - 1, w)
    if pos + n_len + n_off > len(data):
        raise FormatError("Huffman stream tables are truncated")
    lengths = unpack(data[pos: pos + n_len], lw, alpha)
    offs = unpack(data[pos + n_len: pos + n_len + n_off], w, nchunks - 1)
    _check_code(lengths, top)
    stream = memoryview(data)[pos + n_len + n_off:]
    starts = np.concatenate([[0], np.cumsum(offs)]).astype(np.int64)
    nbits = 8 * len(stream)
    if starts[-1] > nbits or np.any(offs < 1):
        raise FormatError("Huffman chunk offsets are out of range")
    return top, lengths, chunk, starts, stream


def _check_code(lengths: np.ndarray, top: int) -> None:
    used = lengths[lengths > 0]
    if used.size < 2 or int(lengths.max()) != top:
        raise FormatError("Huffman length table is inconsistent")
    kraft = int(np.sum(np.left_shift(np.int64(1), top - used)))
    if kraft != 1 << top:
        raise FormatError("Huffman length table is not a complete prefix code")


def _table(lengths: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbol, length) for every ``top``-bit window (complete code: all assigned)."""
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    reps = np.left_shift(1, top - lengths[order])
    return (np.repeat(order, reps).astype(np.uint16 if lengths.size <= 1 << 16 else np.int32),
            np.repeat(lengths[order], reps).astype(np.int64))


def decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    """``count`` symbols (int64, each < ``alphabet``) from :func:`encode`'s stream."""
    if count < 0:
        raise FormatError("negative symbol count")
    if count == 0:
        if len(data):
            raise FormatError("Huffman stream of zero symbols must be empty")
        return np.zeros(0, dtype=np.int64)
    if len(data) >= _HEAD.size and data[0] == 0:
        if len(data) != _HEAD.size:
            raise FormatError("single-symbol Huffman stream has trailing bytes")
        alpha = _HEAD.unpack_from(data)[1]
        if not 1 <= alpha <= alphabet:
            raise FormatError("Huffman symbol outside the alphabet")
        return np.full(count, alpha - 1, dtype=np.int64)
    top, lengths, chunk, starts, stream = _parse(data, count, alphabet)
    if count > 8 * len(stream):
        raise FormatError("Huffman stream is too short for its symbol count")
    syms, lens = _table(lengths, top)
    return _run_lanes(stream, starts, count, chunk, top, syms, lens)


def _run_lanes(stream: memoryview, starts: np.ndarray, count: int, chunk: int, top: int,
               syms: np.ndarray, lens: np.ndarray) -> np.ndarray:
    nbytes = len(stream)
    # padding so that no lane can read past the buffer, even on a corrupt stream
    pad = chunk * top // 8 + 16
    buf = np.zeros(nbytes + pad, dtype=np.uint8)
    buf[:nbytes] = np.frombuffer(stream, dtype=np.uint8)
    # the 63 leading bits of the big-endian word at every byte offset, as int64
    words = (np.ndarray((nbytes + pad - 7,), dtype=">u8", buffer=buf, strides=(1,))
             >> np.uint64(1)).astype(np.int64)
    lanes = starts.size
    last = count - (lanes - 1) * chunk  # symbols in the last chunk
    out = np.empty((chunk, lanes), dtype=syms.dtype)
    pos = starts.astype(np.int64)
    k, m = 63 - top, (1 << top) - 1
    last_end = 0
    for t in range(chunk):
        win = (words[pos >> 3] >> (k - (pos & 7))) & m
        out[t] = syms[win]
        pos += lens[win]
        if t == last - 1:
            last_end = int(pos[-1])
    ends = starts[1:]
    if not np.array_equal(pos[:-1], ends) or last_end > 8 * nbytes \
            or 8 * nbytes - last_end >= 8:
        raise FormatError("Huffman stream does not decode to its recorded chunk boundaries")
    return out.T.reshape(-1)[:count]
