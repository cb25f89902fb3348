"""Canonical Huffman coding of small integer alphabets, for Deep Compression's stored indices.

Only the code length of each symbol is stored; the codes follow from the lengths (canonical
order: shorter codes first, then by symbol), so a table costs one byte a symbol.
"""

from __future__ import annotations

import heapq
from collections import Counter

import numpy as np


def code_lengths(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """Huffman code length (bits) of each symbol 0..alphabet-1; 0 for symbols that never occur."""
    counts = Counter(symbols.tolist())
    lengths = np.zeros(alphabet, dtype=np.uint8)
    if not counts:
        return lengths
    if len(counts) == 1:  # one symbol still needs one bit to be counted
        lengths[next(iter(counts))] = 1
        return lengths
    # heap of (weight, tie-break, symbols under this node)
    heap = [(n, s, [s]) for s, n in counts.items()]
    heapq.heapify(heap)
    depth = Counter()
    while len(heap) > 1:
        n1, t1, s1 = heapq.heappop(heap)
        n2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (n1 + n2, min(t1, t2), s1 + s2))
    if max(depth.values()) > 255:
        raise ValueError("Huffman code longer than 255 bits; the alphabet's counts are too skewed")
    for s, d in depth.items():
        lengths[s] = d
    return lengths


def canonical_codes(lengths: np.ndarray) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) from code lengths, in canonical order."""
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    codes, code, previous = {}, 0, 0
    for n, s in order:
        code <<= n - previous
        codes[s] = (code, n)
        code += 1
        previous = n
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The symbols' codes packed into bytes, most significant bit first, zero-padded."""
    codes = canonical_codes(lengths)
    bits = "".join(format(codes[s][0], f"0{codes[s][1]}b") for s in symbols.tolist())
    if not bits:
        return b""
    padded = bits + "0" * (-len(bits) % 8)
    return int(padded, 2).to_bytes(len(padded) // 8, "big")


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """The first `count` symbols of `data`."""
    codes = canonical_codes(lengths)
    table = {(n, code): s for s, (code, n) in codes.items()}
    out = np.empty(count, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
    total = len(bits)
    position, i = 0, 0
    longest = max((n for _, n in codes.values()), default=0)
    while i < count:
        code, n = 0, 0
        while True:
            if position >= total or n >= longest:
                raise ValueError("Huffman stream ends early or holds an unknown code: the file is corrupt")
            code = (code << 1) | bits[position]
            position += 1
            n += 1
            symbol = table.get((n, code))
            if symbol is not None:
                out[i] = symbol
                i += 1
                break
    return out


def coded_bits(symbols: np.ndarray, lengths: np.ndarray) -> int:
    return int(lengths[symbols].astype(np.int64).sum())
