"""Canonical, length-limited Huffman coding of integer symbol streams, vectorized with NumPy.

Code
----
A code is described by its code lengths only: ``lengths[s]`` (0..max_len, 0 = symbol absent) for
every symbol ``s`` of an alphabet ``0 .. alphabet_size - 1`` (at most 2**16 symbols). Lengths come
from package-merge, so they are optimal among codes no longer than ``max_len`` (1..16, default 16).
Codewords are canonical (as in DEFLATE): symbols sorted by (length, symbol value) get consecutive
codewords, the first one all zeros, and the codeword is incremented then shifted left whenever the
length grows. Every code with two or more symbols is complete (Kraft sum exactly 1). A one-symbol
alphabet gets a 1-bit code ``0`` (Kraft sum 1/2) instead of the zero-length code a textbook
Huffman tree gives it, so that every symbol costs at least one bit and bit offsets stay meaningful.

Bit order of a stream
---------------------
Codewords are concatenated, first symbol first, with no padding between symbols. The bit at stream
position ``p`` (0-based) is bit ``31 - p % 32`` of ``words[p // 32]``: bits fill each 32-bit word
from its most significant bit down, and each codeword is written most significant bit first.
``words`` is a ``uint32`` array of exactly ``ceil(total_bits / 32)`` words (little-endian in files,
as safetensors stores every tensor); bits after ``total_bits`` in the last word are zero. So the
next ``T`` bits at position ``p`` (``T <= 32``) are::

    window = (words[p >> 5] << 32) | words[(p >> 5) + 1]      # 64 bits, treat words[n] as 0
    peek   = (window << (p & 31)) >> (64 - T)                  # in 64-bit unsigned arithmetic

Decode table
------------
With ``T`` the longest code length in use, ``decode_table()`` returns ``uint32[2**T]``; entry
``peek`` holds ``symbol | (length << 16)`` of the unique codeword that is a prefix of ``peek``. A
decoder emits ``entry & 0xFFFF`` and advances ``p`` by ``entry >> 16``. For the one-symbol code
entry 1 is 0 (length 0: no codeword starts with bit 1); a stream of that code is all zero bits.

Segments (parallel decoding)
----------------------------
A stream of ``n`` symbols is cut into ``ceil(n / segment_symbols)`` segments of ``segment_symbols``
symbols each (the last one holds the rest). ``segment_offsets[i]`` (``uint32``) is the bit position
of the first codeword of segment ``i``; segment ``i`` ends where segment ``i + 1`` starts (the last
one at ``total_bits``), so segments add no bits to the payload, only their 32-bit offsets. Each
segment decodes independently: start at its offset and decode its symbol count. An empty stream
has no words and no segments.

Decoding cost
-------------
Two NumPy decoders give the same symbols; `huffman_decode` runs the one its cost model says is
cheaper. The lockstep decoder decodes one symbol of every segment per step: fast for many
segments, but a stream of a few long segments (up to `MAX_SEGMENT_SYMBOLS` symbols of 1 bit) would
cost a Python-level step per bit. The chain decoder looks up the codeword at every bit position
(a successor position) and follows all segments' chains at once by pointer doubling, in
``ceil(log2(segment_symbols))`` passes over the bits: at most ~20 passes over each bit, however
the stream is cut. Either way a stream decodes in time linear in its bits (times that log) and
in memory linear in its words and symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.checks import check_int

MAX_CODE_LENGTH = 16  # longest codeword the library builds or accepts; decode tables <= 2**16 entries
MAX_ALPHABET = 1 << 16
MAX_SEGMENT_SYMBOLS = 1 << 16  # bounds the lockstep decoder's steps; larger segments save nothing
MAX_STREAM_BITS = (1 << 32) - 1  # segment offsets are uint32
DEFAULT_SEGMENT_SYMBOLS = 1024
# Cost model that picks the decoder (rough nanoseconds on one core of the development machine;
# only their ratios matter): the lockstep decoder pays a fixed cost per step (~10 NumPy calls)
# plus a little per segment and step; the chain decoder pays per bit and per doubling pass.
LOCKSTEP_STEP_NS = 15_000
LOCKSTEP_SYMBOL_NS = 15
CHAIN_BIT_NS = 6
# Bits per run of the chain decoder (whole segments; a longer segment is one run): bounds its
# working set (about 30 bytes per bit) whatever the stream's size.
CHAIN_CHUNK_BITS = 1 << 17
_LENGTH_SHIFT = 16


def package_merge_lengths(counts, max_len: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths (uint8, 0 for absent symbols) with no length above ``max_len``.

    Package-merge (Larmore and Hirschberg): level by level from the deepest, the sorted symbol
    weights are merged with the pairwise sums ("packages") of the level below; the cheapest
    ``2n - 2`` items of the top level are kept, and each symbol's length is the number of levels
    whose kept items include it. Leaves and packages in a merged list stay sorted, so the kept
    items of a level are always its first ``m`` items: the first ``k`` leaves and ``m - k``
    packages, which in turn keep the first ``2 (m - k)`` items of the level below.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size > MAX_ALPHABET:
        raise ValueError(f"counts must be 1-D with at most {MAX_ALPHABET} entries, got shape {counts.shape}")
    if counts.size and not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"counts must hold integers, got dtype {counts.dtype}")
    max_len = check_int(max_len, "max_len", 1, MAX_CODE_LENGTH)
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError(f"counts must be non-negative, got minimum {counts.min()}")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used] = 1
        return lengths
    if n > 1 << max_len:
        raise ValueError(f"{n} symbols do not fit in codes of at most max_len={max_len} bits")
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = counts[order]
    # levels[j] = (is_leaf flags of the merged list at depth max_len - j), deepest first.
    levels = []
    items = leaves
    is_leaf = np.ones(n, dtype=bool)
    levels.append(is_leaf)
    for _ in range(max_len - 1):
        packages = items[: items.size // 2 * 2].reshape(-1, 2).sum(axis=1)
        merged = np.concatenate((leaves, packages))
        # Stable sort puts leaves before packages of equal weight (any consistent tie rule is optimal).
        rank = np.argsort(merged, kind="stable")
        items = merged[rank]
        is_leaf = rank < n
        levels.append(is_leaf)
    depth = np.zeros(n, dtype=np.int64)
    keep = 2 * n - 2
    for is_leaf in reversed(levels):
        kept_leaves = int(np.count_nonzero(is_leaf[:keep]))
        depth[:kept_leaves] += 1
        keep = 2 * (keep - kept_leaves)
    lengths[order] = depth
    return lengths


@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical prefix code given by its code lengths (see the module docstring)."""

    lengths: np.ndarray  # uint8[alphabet_size]; 0 = symbol not in the code
    max_len: int = MAX_CODE_LENGTH

    def __post_init__(self) -> None:
        max_len = check_int(self.max_len, "max_len", 1, MAX_CODE_LENGTH)
        lengths = np.asarray(self.lengths)
        if lengths.ndim != 1 or not 1 <= lengths.size <= MAX_ALPHABET:
            raise ValueError(f"lengths must be 1-D with 1..{MAX_ALPHABET} entries, got shape {lengths.shape}")
        if not np.issubdtype(lengths.dtype, np.integer):
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.min() < 0 or lengths.max() > max_len:
            raise ValueError(
                f"code lengths must lie in 0..{max_len} (max_len), "
                f"got range [{lengths.min()}, {lengths.max()}]"
            )
        lengths = lengths.astype(np.uint8)
        used = lengths[lengths > 0].astype(np.int64)
        kraft = int(np.sum(1 << (MAX_CODE_LENGTH - used)))  # Kraft sum in units of 2**-16
        if used.size == 1:
            if used[0] != 1:
                raise ValueError(f"a one-symbol code must have length 1, got {used[0]}")
        elif used.size and kraft != 1 << MAX_CODE_LENGTH:
            raise ValueError(
                f"code lengths are not a complete prefix code: Kraft sum {kraft}/{1 << MAX_CODE_LENGTH} != 1"
            )
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "max_len", max_len)
        lengths.setflags(write=False)

    @classmethod
    def from_counts(cls, counts, max_len: int = MAX_CODE_LENGTH) -> HuffmanCode:
        """The optimal length-limited code for these symbol counts (alphabet = ``len(counts)``)."""
        return cls(package_merge_lengths(counts, max_len), max_len)

    @classmethod
    def from_symbols(cls, symbols, alphabet_size: int, max_len: int = MAX_CODE_LENGTH) -> HuffmanCode:
        """The optimal length-limited code for a stream of symbols in ``0 .. alphabet_size - 1``."""
        symbols = _check_symbols(symbols, alphabet_size)
        return cls.from_counts(np.bincount(symbols, minlength=alphabet_size), max_len)

    @property
    def alphabet_size(self) -> int:
        return int(self.lengths.size)

    @property
    def table_bits(self) -> int:
        """``T``: the longest code length in use (0 for a code without symbols)."""
        return int(self.lengths.max())

    def codewords(self) -> np.ndarray:
        """The canonical codeword of every symbol (uint32; 0 for absent symbols)."""
        lengths = self.lengths.astype(np.int64)
        order = np.lexsort((np.arange(lengths.size), lengths))
        order = order[lengths[order] > 0]
        count = np.bincount(lengths[order], minlength=MAX_CODE_LENGTH + 1)
        first = np.zeros(MAX_CODE_LENGTH + 1, dtype=np.int64)
        code = 0
        for length in range(1, MAX_CODE_LENGTH + 1):
            code = (code + count[length - 1]) << 1
            first[length] = code
        first_index = np.concatenate(([0], np.cumsum(count)))[:-1]
        sorted_lengths = lengths[order]
        rank = np.arange(order.size) - first_index[sorted_lengths]
        words = np.zeros(lengths.size, dtype=np.uint32)
        words[order] = first[sorted_lengths] + rank
        return words

    def decode_table(self) -> np.ndarray:
        """``uint32[2**T]``: entry ``peek`` = ``symbol | (length << 16)`` (module docstring)."""
        lengths = self.lengths.astype(np.int64)
        order = np.lexsort((np.arange(lengths.size), lengths))
        order = order[lengths[order] > 0]
        bits = self.table_bits
        table = np.zeros(1 << bits, dtype=np.uint32)
        # Canonical codewords in (length, symbol) order are consecutive T-bit intervals from 0.
        entries = (order | (lengths[order] << _LENGTH_SHIFT)).astype(np.uint32)
        spans = np.repeat(entries, 1 << (bits - lengths[order]))
        table[: spans.size] = spans
        return table

    def encoded_bits(self, counts) -> int:
        """Payload bits of a stream with these symbol counts under this code."""
        counts = np.asarray(counts, dtype=np.int64)
        return int(np.dot(counts, self.lengths.astype(np.int64)))


def _check_symbols(symbols, alphabet_size: int) -> np.ndarray:
    alphabet_size = check_int(alphabet_size, "alphabet_size", 1, MAX_ALPHABET)
    symbols = np.asarray(symbols)
    if symbols.ndim != 1:
        raise ValueError(f"symbols must be 1-D, got shape {symbols.shape}")
    if symbols.size and not np.issubdtype(symbols.dtype, np.integer):
        raise TypeError(f"symbols must hold integers, got dtype {symbols.dtype}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(
            f"symbols must lie in [0, {alphabet_size}) (alphabet_size), "
            f"got range [{symbols.min()}, {symbols.max()}]"
        )
    return symbols


def _symbol_dtype(alphabet_size: int):
    return np.uint8 if alphabet_size <= 256 else np.uint16


@dataclass(frozen=True, eq=False)
class HuffmanStream:
    """A Huffman-coded, segmented symbol stream (layout in the module docstring)."""

    code: HuffmanCode
    words: np.ndarray  # uint32[ceil(total_bits / 32)]
    total_bits: int
    num_symbols: int
    segment_symbols: int
    segment_offsets: np.ndarray  # uint32[ceil(num_symbols / segment_symbols)]

    def __post_init__(self) -> None:
        """Check the layout so that decoding can never read outside ``words`` (or hang)."""
        num_symbols = check_int(self.num_symbols, "num_symbols", 0, MAX_STREAM_BITS)
        total_bits = check_int(self.total_bits, "total_bits", 0, MAX_STREAM_BITS)
        segment_symbols = check_int(self.segment_symbols, "segment_symbols", 1, MAX_SEGMENT_SYMBOLS)
        words = np.asarray(self.words)
        offsets = np.asarray(self.segment_offsets)
        if words.dtype != np.uint32 or words.ndim != 1:
            raise TypeError(f"words must be a 1-D uint32 array, got {words.dtype} of shape {words.shape}")
        if offsets.dtype != np.uint32 or offsets.ndim != 1:
            raise TypeError(
                f"segment_offsets must be a 1-D uint32 array, got {offsets.dtype} of shape {offsets.shape}"
            )
        if words.size != (total_bits + 31) // 32:
            raise ValueError(f"{words.size} words cannot hold exactly total_bits={total_bits}")
        if total_bits % 32 and int(words[-1]) & ((1 << (32 - total_bits % 32)) - 1):
            raise ValueError("the padding bits after total_bits in the last word are not zero")
        lengths = self.code.lengths.astype(np.int64)
        used = lengths[lengths > 0]
        if num_symbols and not used.size:
            raise ValueError(f"{num_symbols} symbols but the code has no symbols")
        low, high = (int(used.min()), int(used.max())) if used.size else (0, 0)
        if not low * num_symbols <= total_bits <= high * num_symbols:
            raise ValueError(
                f"total_bits={total_bits} is impossible for {num_symbols} symbols "
                f"of {low}..{high} bits (code lengths in use)"
            )
        expected_segments = -(-num_symbols // segment_symbols)
        if offsets.size != expected_segments:
            raise ValueError(
                f"{offsets.size} segment offsets for {num_symbols} symbols in segments of "
                f"{segment_symbols}; expected {expected_segments}"
            )
        if offsets.size:
            # Each segment must span between its symbol count times the shortest and the
            # longest code length: decoding then never runs past the stream's padding.
            bounds = np.append(offsets.astype(np.int64), total_bits)
            spans = np.diff(bounds)
            counts = np.full(offsets.size, segment_symbols, dtype=np.int64)
            counts[-1] = num_symbols - segment_symbols * (offsets.size - 1)
            bad = (spans < low * counts) | (spans > high * counts)
            bad[0] |= bounds[0] != 0
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"segment_offsets are inconsistent: segment {i} starts at bit {bounds[i]} and spans "
                    f"{spans[i]} bits for {counts[i]} symbols of {low}..{high} bits "
                    f"(offsets must start at 0 and increase to total_bits={total_bits})"
                )
        object.__setattr__(self, "num_symbols", num_symbols)
        object.__setattr__(self, "total_bits", total_bits)
        object.__setattr__(self, "segment_symbols", segment_symbols)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "segment_offsets", offsets)

    @property
    def num_segments(self) -> int:
        return int(self.segment_offsets.size)

    def segment_counts(self) -> np.ndarray:
        """Symbols in each segment (int64[num_segments]): ``segment_symbols`` but the last."""
        counts = np.full(self.num_segments, self.segment_symbols, dtype=np.int64)
        if counts.size:
            counts[-1] = self.num_symbols - self.segment_symbols * (counts.size - 1)
        return counts

    def bit_counts(self) -> dict[str, int]:
        """Exact storage in bits: codewords, word padding, the code-length table, segment offsets."""
        return {
            "payload_bits": self.total_bits,
            "padding_bits": 32 * int(self.words.size) - self.total_bits,
            "table_bits": 8 * self.code.alphabet_size,  # one uint8 code length per symbol
            "offset_bits": 32 * self.num_segments,
        }

    def overhead_bits(self) -> int:
        """Bits stored beyond the codewords themselves (padding, code table, segment offsets)."""
        counts = self.bit_counts()
        return counts["padding_bits"] + counts["table_bits"] + counts["offset_bits"]

    def total_bits_stored(self) -> int:
        return sum(self.bit_counts().values())


def huffman_encode(
    symbols,
    alphabet_size: int,
    *,
    code: HuffmanCode | None = None,
    max_len: int = MAX_CODE_LENGTH,
    segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS,
) -> HuffmanStream:
    """Encode integer symbols in ``0 .. alphabet_size - 1`` (vectorized; module docstring for the layout).

    ``code`` defaults to the optimal code of at most ``max_len`` bits for these symbols.
    """
    symbols = _check_symbols(symbols, alphabet_size)
    segment_symbols = check_int(segment_symbols, "segment_symbols", 1, MAX_SEGMENT_SYMBOLS)
    if code is None:
        code = HuffmanCode.from_symbols(symbols, alphabet_size, max_len)
    elif code.alphabet_size != alphabet_size:
        raise ValueError(f"code has {code.alphabet_size} symbols, alphabet_size is {alphabet_size}")
    index = symbols.astype(np.intp)  # one conversion; fancy indexing would redo it per lookup
    sym_lengths = code.lengths[index]
    if symbols.size and not sym_lengths.all():
        missing = int(symbols[np.argmin(sym_lengths)])
        raise ValueError(f"symbol {missing} has no codeword in the given code")
    if symbols.size * code.table_bits > MAX_STREAM_BITS:  # the uint32 bit positions below could wrap
        total_bits = code.encoded_bits(np.bincount(index, minlength=alphabet_size))
        if total_bits > MAX_STREAM_BITS:
            raise ValueError(
                f"the stream needs {total_bits} bits, more than the {MAX_STREAM_BITS} of uint32 offsets"
            )
    start = np.cumsum(sym_lengths, dtype=np.uint32)
    total_bits = int(start[-1]) if start.size else 0
    start -= sym_lengths
    # Place each codeword in the 64-bit window of the word it starts in, from bit 63 - start % 32
    # down: the upper 32 bits belong to that word, the lower 32 to the next one (a codeword of
    # <= 16 bits crosses at most one word boundary; only the word's last codeword can cross it).
    shift = np.uint32(64) - (start & np.uint32(31))
    shift -= sym_lengths
    placed = code.codewords().astype(np.uint64)[index]
    placed <<= shift
    del shift, index
    word = start >> np.uint32(5)
    num_words = (total_bits + 31) // 32
    words = np.zeros(num_words + 1, dtype=np.uint64)
    if symbols.size:
        # The codewords starting in one word occupy disjoint bits: OR them per word (runs of
        # equal ``word``), then split each merged window between its word and the next.
        first = np.flatnonzero(word[1:] != word[:-1])
        first = np.concatenate(([0], first + 1))
        merged = np.bitwise_or.reduceat(placed, first)
        starts_in = word[first].astype(np.intp)
        words[starts_in] = merged >> np.uint64(32)
        words[starts_in + 1] |= merged & np.uint64(0xFFFFFFFF)
    offsets = start[::segment_symbols].copy()
    words = words[:num_words].astype(np.uint32)
    return HuffmanStream(code, words, total_bits, int(symbols.size), segment_symbols, offsets)


def stream_bits(
    counts, *, max_len: int = MAX_CODE_LENGTH, segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS
) -> dict[str, int]:
    """`HuffmanStream.bit_counts` of the stream `huffman_encode` would build for symbols with
    these counts (alphabet = ``len(counts)``, the optimal code), without encoding it."""
    counts = np.asarray(counts, dtype=np.int64)
    segment_symbols = check_int(segment_symbols, "segment_symbols", 1, MAX_SEGMENT_SYMBOLS)
    payload = HuffmanCode.from_counts(counts, max_len).encoded_bits(counts)
    return {
        "payload_bits": payload,
        "padding_bits": -payload % 32,
        "table_bits": 8 * int(counts.size),
        "offset_bits": 32 * -(-int(counts.sum()) // segment_symbols),
    }


def huffman_decode(stream: HuffmanStream) -> np.ndarray:
    """Decode all symbols (uint8 for alphabets up to 256, else uint16).

    Raises ValueError when a segment does not end exactly where the next begins (a corrupt
    stream). Two decoders give the same result and the cheaper one runs (module docstring):
    time O(total_bits * log2(segment_symbols)) at worst, memory O(total_bits / 8 + symbols)
    beside a bounded working set.
    """
    code = stream.code
    dtype = _symbol_dtype(code.alphabet_size)
    n = stream.num_symbols
    if n == 0:
        return np.zeros(0, dtype=dtype)
    if np.count_nonzero(code.lengths) == 1:
        # One-symbol code: every codeword is the single bit 0 (checked: total_bits == n).
        if np.any(stream.words):
            raise ValueError("a one-symbol stream must be all zero bits")
        return np.full(n, int(np.flatnonzero(code.lengths)[0]), dtype=dtype)
    steps = min(stream.segment_symbols, n)
    lockstep_ns = steps * (LOCKSTEP_STEP_NS + stream.num_segments * LOCKSTEP_SYMBOL_NS)
    chains_ns = stream.total_bits * CHAIN_BIT_NS * (2 + steps.bit_length())
    decode = _decode_lockstep if lockstep_ns <= chains_ns else _decode_chains
    return decode(stream)


def _check_ends(stream: HuffmanStream, ends: np.ndarray, first: int = 0) -> None:
    """Segments ``first ..`` must end where the next begins (the last at total_bits)."""
    bounds = np.append(stream.segment_offsets.astype(np.int64), stream.total_bits)
    expected = bounds[first + 1 : first + 1 + ends.size]
    if not np.array_equal(ends, expected):
        bad = int(np.flatnonzero(ends != expected)[0])
        raise ValueError(
            f"corrupt stream: segment {first + bad} decodes to bit {ends[bad]}, but the layout says it "
            f"ends at bit {expected[bad]}"
        )


def _decode_lockstep(stream: HuffmanStream) -> np.ndarray:
    """Every segment at once, one symbol of each per NumPy step."""
    code = stream.code
    n = stream.num_symbols
    seg = stream.segment_symbols
    steps = min(seg, n)
    table_bits = code.table_bits
    table = code.decode_table().astype(np.uint64)
    # Zero words after the stream: the short last segment (and a corrupt one) keeps decoding
    # zeros past its end for the remaining lockstep steps; reads stay inside this padding.
    pad = (steps * table_bits) // 32 + 3
    padded = np.zeros(stream.words.size + pad, dtype=np.uint64)
    padded[: stream.words.size] = stream.words
    window = (padded[:-1] << np.uint64(32)) | padded[1:]
    del padded
    pos = stream.segment_offsets.astype(np.uint64)
    segments = pos.size
    out = np.empty((steps, segments), dtype=_symbol_dtype(code.alphabet_size))
    last_count = n - seg * (segments - 1)
    last_end = None
    index = np.empty(segments, dtype=np.uint64)
    peek = np.empty(segments, dtype=np.uint64)
    entry = np.empty(segments, dtype=np.uint64)
    five, thirty_one = np.uint64(5), np.uint64(31)
    drop, length_shift = np.uint64(64 - table_bits), np.uint64(_LENGTH_SHIFT)
    for step in range(steps):
        if step == last_count:
            last_end = int(pos[-1])
        np.right_shift(pos, five, out=index)
        window.take(index, out=peek)
        np.bitwise_and(pos, thirty_one, out=index)
        np.left_shift(peek, index, out=peek)
        np.right_shift(peek, drop, out=peek)
        table.take(peek, out=entry)
        out[step] = entry
        np.right_shift(entry, length_shift, out=entry)
        pos += entry
    ends = pos.astype(np.int64)
    if last_end is not None:
        ends[-1] = last_end
    _check_ends(stream, ends)
    return out.T.reshape(-1)[:n]


def _decode_chains(stream: HuffmanStream) -> np.ndarray:
    """By runs of whole segments of about `CHAIN_CHUNK_BITS` bits: the codeword starting at every
    bit position gives a successor position; doubling the successor table (``jump = jump[jump]``)
    lists the ``2**r`` positions each segment's chain visits after ``r`` passes."""
    code = stream.code
    n, seg = stream.num_symbols, stream.segment_symbols
    table = code.decode_table()
    symbol_of = (table & 0xFFFF).astype(_symbol_dtype(code.alphabet_size))
    length_of = (table >> _LENGTH_SHIFT).astype(np.uint32)
    drop = np.uint64(64 - code.table_bits)
    shifts = np.arange(32, dtype=np.uint64)
    bounds = np.append(stream.segment_offsets.astype(np.int64), stream.total_bits)
    counts = stream.segment_counts()
    segments = counts.size
    out = np.zeros((min(seg, n), segments), dtype=symbol_of.dtype)
    first = 0
    while first < segments:
        stop = int(np.searchsorted(bounds, bounds[first] + CHAIN_CHUNK_BITS, side="right")) - 1
        stop = min(max(stop, first + 1), segments)
        begin, length = int(bounds[first]), int(bounds[stop] - bounds[first])
        # The T-bit peek at every bit position of the run (64-bit windows over pairs of words).
        word0 = begin >> 5
        words = np.zeros((length + 31) // 32 + 2, dtype=np.uint64)
        chunk = stream.words[word0 : word0 + words.size]
        words[: chunk.size] = chunk
        peek = ((words[:-1, None] << np.uint64(32) | words[1:, None]) << shifts) >> drop
        peek = peek.reshape(-1)[begin - 32 * word0 :][:length]
        # Successor of every position; the run's end absorbs (a chain that reaches it stays).
        successor = np.empty(length + 1, dtype=np.uint32)
        np.add(np.arange(length, dtype=np.uint32), length_of[peek], out=successor[:length])
        np.minimum(successor[:length], length, out=successor[:length])
        successor[length] = length
        steps = int(counts[first:stop].max())
        visited = (bounds[first:stop] - begin).astype(np.uint32)[None, :]
        jump = successor
        while visited.shape[0] < steps:
            visited = np.concatenate((visited, jump[visited]))
            if visited.shape[0] < steps:
                jump = jump[jump]
        del jump
        visited = visited[:steps]
        last = visited[counts[first:stop] - 1, np.arange(stop - first)].astype(np.int64)
        # Where each last codeword ends (unclipped); a chain that reached the run's end early
        # stalled there, with its last symbol starting at the end: reported one bit past it.
        inside = last < length
        ends = begin + np.where(inside, last + length_of[peek[np.where(inside, last, 0)]], length + 1)
        _check_ends(stream, ends, first)
        out[:steps, first:stop] = symbol_of[peek[np.minimum(visited, length - 1)]]
        first = stop
    return out.T.reshape(-1)[:n]
