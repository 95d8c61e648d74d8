"""Canonical Huffman coding of integer symbol streams (Huffman 1952; Deep Compression, sec. 4).

Deep Compression Huffman-codes the quantized weight indices and the sparse-index gaps of each layer:
their distributions are far from uniform, so a variable-length prefix code saves 20-30 % over fixed
``b``-bit fields. A *canonical* code is fully described by the code length of each symbol, so the file
stores one byte per symbol of the alphabet instead of the tree.

Code lengths are capped at :data:`MAX_LEN` bits (enough for any alphabet of up to 2^16 symbols) by
flattening the counts until the optimal code fits; decoding then reads a :data:`MAX_LEN`-bit window at
every symbol boundary and looks the symbol up in a table, so it costs one step per symbol, not per bit.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_LEN = 16


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Optimal prefix-code lengths for symbol ``counts`` (0 for absent symbols), at most ``max_len``."""
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present] = 1  # a lone symbol still needs one bit per occurrence
        return lengths
    work = counts[present].copy()
    while True:
        # Heap of (weight, tie-breaker, symbols in the subtree); merging deepens every symbol by one.
        heap = [(int(c), i, [i]) for i, c in enumerate(work)]
        heapq.heapify(heap)
        depth = np.zeros(present.size, dtype=np.int64)
        tie = present.size
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            depth[s1] += 1
            depth[s2] += 1
            heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
            tie += 1
        if depth.max() <= max_len:
            lengths[present] = depth
            return lengths
        work = (work >> 1) | 1  # flatter counts give a shallower tree; converges to uniform


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values: symbols sorted by (length, symbol) get consecutive codes per length."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = sorted((int(length), s) for s, length in enumerate(lengths) if length > 0)
    code, prev = 0, 0
    for length, s in order:
        code <<= length - prev
        codes[s] = code
        code += 1
        prev = length
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, np.ndarray, int]:
    """Encode ``symbols`` (ints in ``[0, alphabet)``); returns ``(packed bits, lengths, bit count)``."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    if symbols.size == 0:
        return b"", lengths, 0
    codes = canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    width = int(sym_len.max())
    # Bit j (from the left, j < len) of each codeword; a (n, width) matrix keeps it vectorised.
    shifts = sym_len[:, None] - 1 - np.arange(width)[None, :]
    valid = shifts >= 0
    bits = (sym_code[:, None] >> np.where(valid, shifts, 0)) & 1
    stream = bits[valid].astype(np.uint8)
    return np.packbits(stream).tobytes(), lengths.astype(np.uint8), int(stream.size)


def huffman_decode(data: bytes, lengths: np.ndarray, count: int, nbits: int) -> np.ndarray:
    """Decode ``count`` symbols from the first ``nbits`` bits of ``data`` coded with ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    width = int(lengths.max())
    codes = canonical_codes(lengths)
    symbol_at = np.zeros(1 << width, dtype=np.int64)
    length_at = np.zeros(1 << width, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        span = width - int(lengths[s])
        start = int(codes[s]) << span
        symbol_at[start : start + (1 << span)] = s
        length_at[start : start + (1 << span)] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    bits = np.concatenate([bits, np.zeros(width, dtype=np.int64)])
    # The width-bit window starting at every bit position, computed once for the whole stream.
    windows = np.zeros(nbits, dtype=np.int64)
    for j in range(width):
        windows = (windows << 1) | bits[j : j + nbits]
    sym_of, len_of = symbol_at[windows].tolist(), length_at[windows].tolist()
    out = [0] * count
    pos = 0
    for i in range(count):
        out[i] = sym_of[pos]
        pos += len_of[pos]
    if pos != nbits:
        raise ValueError(f"Huffman stream holds {nbits} bits but {count} symbols used {pos}")
    return np.asarray(out, dtype=np.int64)
