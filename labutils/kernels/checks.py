"""Checkers for 03_kernel_intuition. Each runs seeded cases against an independent reference (closed
forms, the simulator's traffic formula, torch's softmax and scaled_dot_product_attention) and prints
the cost (FLOPs, words moved) beside the verdict.

    >>> from labutils.hardware import matmul_intensity
    >>> check_matmul_intensity(matmul_intensity)   # doctest: +ELLIPSIS
    Exercise 3.1 · matmul_intensity — all 6 cases pass ✓
      cost: a bf16 decode GEMV (m=1) does 1.00 FLOP/B; H100's ridge is 295 FLOP/B, ...
"""

from __future__ import annotations

import numpy as np
import torch

from labutils.checks import Case, Exercise, compare, run_cases
from labutils.hardware import H100_SXM, matmul_intensity
from labutils.kernels.fastmem import (
    FastMemory,
    best_tile_size,
    flash_attention_sim,
    standard_attention_sim,
    tiled_matmul_traffic,
)

NOTEBOOK = "03_kernel_intuition"
EX_MATMUL_AI = Exercise(NOTEBOOK, "3.1", "matmul_intensity")
EX_DECODE_AI = Exercise(NOTEBOOK, "3.2", "decode_attention_intensity")
EX_TILED = Exercise(NOTEBOOK, "3.3", "tiled_matmul")
EX_TILE_SIZE = Exercise(NOTEBOOK, "3.4", "best_tile_size")
EX_MERGE = Exercise(NOTEBOOK, "3.5", "merge_softmax_stats")
EX_ONLINE = Exercise(NOTEBOOK, "3.6", "online_softmax")
EX_FLASH = Exercise(NOTEBOOK, "3.7", "flash_attention")


def check_matmul_intensity(fn) -> None:
    shapes = [(1, 1, 1, 4), (1, 4096, 4096, 2), (64, 4096, 4096, 2), (4096, 4096, 4096, 2), (8, 512, 2048, 4), (300, 8192, 8192, 2)]
    cases = [Case(f"m={m}, k={k}, n={n}, {b} B/element", (m, k, n, b), matmul_intensity(m, k, n, b), unit="FLOP/B")
             for m, k, n, b in shapes]
    run_cases(EX_MATMUL_AI, fn, cases, rtol=1e-9,
              hint="FLOPs = 2·m·k·n; bytes = bytes_per_element · (m·k + k·n + m·n): read A and B, write C once",
              cost=lambda: (f"a bf16 decode GEMV (m=1) does {matmul_intensity(1, 4096, 4096, 2):.2f} FLOP/B; "
                            f"H100's ridge is {H100_SXM.ridge:.0f} FLOP/B, so it runs at "
                            f"≈{100 * matmul_intensity(1, 4096, 4096, 2) / H100_SXM.ridge:.1f}% of peak at best"))


def decode_attention_intensity_reference(context_length: int, head_dim: int, bytes_per_element: float,
                                         queries_per_kv_head: int = 1) -> float:
    """One decode step of one KV head: g query rows attend over T cached keys and values.
    FLOPs 4·g·T·d (q·kᵀ and p·v); bytes: read K and V (2·T·d), read q and write o (2·g·d)."""
    T, d, g = context_length, head_dim, queries_per_kv_head
    return 4 * g * T * d / (bytes_per_element * (2 * T * d + 2 * g * d))


def check_decode_attention_intensity(fn) -> None:
    specs = [(1, 64, 2, 1), (4096, 128, 2, 1), (32768, 128, 2, 1), (1000, 64, 4, 1), (4096, 128, 2, 8), (8192, 128, 1, 4)]
    cases = [Case(f"T={T}, d={d}, {b} B/element, {g} query head(s) per KV head", (T, d, b), decode_attention_intensity_reference(T, d, b, g),
                  kwargs={} if g == 1 else dict(queries_per_kv_head=g), unit="FLOP/B") for T, d, b, g in specs]
    run_cases(EX_DECODE_AI, fn, cases, rtol=1e-9,
              hint="FLOPs: g query rows each do 2·T·d for q·kᵀ and 2·T·d for p·v; bytes: K and V are T·d each, "
                   "q and the output are g·d each — all times bytes_per_element",
              cost=lambda: (f"at T=4096, d=128 in bf16 the intensity is {decode_attention_intensity_reference(4096, 128, 2):.2f} "
                            f"FLOP/B (≈1): memory-bound on every chip; grouped-query attention with 8 query heads per KV head "
                            f"raises it to {decode_attention_intensity_reference(4096, 128, 2, 8):.1f}"))


def _tiled_cases():
    rng = np.random.default_rng(3)
    shapes = [(4, 4, 4, 2), (8, 8, 8, 4), (12, 8, 16, 4), (10, 7, 9, 3), (5, 5, 5, 8), (1, 6, 1, 2)]
    return [Case(f"({m}×{k}) @ ({k}×{n}), tile={b}, M=3·{b}²", (rng.standard_normal((m, k)), rng.standard_normal((k, n)), b))
            for m, k, n, b in shapes]


def check_tiled_matmul(fn) -> None:
    def run(A, B, tile):
        mem = FastMemory(3 * tile * tile)
        C = fn(mem, A, B, tile)
        return dict(C=C, reads=mem.reads, writes=mem.writes)

    def verdict(got, case):
        A, B, tile = case.args
        (m, k), n = A.shape, B.shape[1]
        why = compare(got["C"], A @ B, rtol=1e-9, atol=1e-9)
        if why:
            return f"the product is wrong: {why}"
        want = tiled_matmul_traffic(m, k, n, tile)
        if (got["reads"], got["writes"]) != (want["reads"], want["writes"]):
            return (f"right product, but it moved {got['reads']:,} words in and {got['writes']:,} out; the tiled loop moves "
                    f"{want['reads']:,} in (m·k·⌈n/b⌉ + k·n·⌈m/b⌉) and {want['writes']:,} out (each C element once)")
        return None

    run_cases(EX_TILED, run, _tiled_cases(), check=verdict,
              hint="for each (i, j) block of C: alloc an accumulator, loop p over k loading one A block and one B block, "
                   "add a @ b, free them; then store the accumulator once and free it",
              cost=lambda: (f"64×64×64 with M=3·8²: naive moves {2 * 64**3 + 64**2:,} words, tiled "
                            f"{sum(tiled_matmul_traffic(64, 64, 64, 8).values()):,} (the reads shrink by the tile size)"))


def check_best_tile_size(fn) -> None:
    caps = [3, 12, 13, 48, 100, 3 * 64 * 64, 49152, 10**6]
    cases = [Case(f"M={M:,} words", (M,), best_tile_size(M), rtol=0, atol=0) for M in caps]
    run_cases(EX_TILE_SIZE, fn, cases,
              hint="three tile×tile blocks must fit (one of A, one of B, the accumulator): the largest b with 3·b² <= M; "
                   "reads fall as 1/b, so take the largest (math.isqrt helps)",
              cost=lambda: (f"M = 49,152 words → tile {best_tile_size(49152)}: a 4096³ matmul then reads "
                           f"{tiled_matmul_traffic(4096, 4096, 4096, best_tile_size(49152))['reads']:.2e} words instead of the naive "
                           f"{2 * 4096**3:.2e}"))


def check_merge_softmax_stats(fn) -> None:
    def stats(x):
        x = np.asarray(x, dtype=np.float64)
        m = x.max()
        return (m, np.exp(x - m).sum()) if np.isfinite(m) else (m, 0.0)

    rng = np.random.default_rng(5)
    parts = [([1.0], [2.0]), ([0.5, -3.0], [10.0, 9.0, 8.0]), (rng.standard_normal(5) * 50, rng.standard_normal(7) * 50),
             ([1000.0, 999.0], [-1000.0]), ([-np.inf], [0.25, 3.0]), ([4.0], [-np.inf, -np.inf]),
             ([-np.inf], [-np.inf, -np.inf])]  # both sides empty: (−inf, 0), not nan
    cases = []
    for a, b in parts:
        full = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
        cases.append(Case(f"stats of {np.round(np.asarray(a, float), 2).tolist()} + {np.round(np.asarray(b, float), 2).tolist()}",
                          (stats(a), stats(b)), tuple(float(v) for v in stats(full))))
    def verdict(got, case):
        try:
            m, d = (float(np.asarray(v)) for v in got)
        except (TypeError, ValueError):
            return f"expected a pair (m, d) of two numbers, got {got!r}"
        (m_want, d_want), pair = case.expected, f"(m, d) = ({m:.6g}, {d:.6g})"
        if np.isnan(m) or np.isnan(d):
            return f"got {pair}: a nan — with m = −inf on a side, m_side − m is −inf − (−inf) = nan; give that side weight 0"
        if np.isinf(m_want):
            return None if (m == m_want and d == d_want) else f"expected (−inf, 0): no elements at all, got {pair}"
        return compare(np.array([m, d]), np.array([m_want, d_want]), rtol=1e-9, atol=1e-12)

    run_cases(EX_MERGE, fn, cases, check=verdict,
              hint="m = max(m_a, m_b); each sum was taken relative to its own max, so rescale: "
                   "d = d_a·exp(m_a − m) + d_b·exp(m_b − m). A side with m = −inf has d = 0 and contributes nothing — "
                   "when both are −inf, m − m is nan, so treat that side's factor as 0 (np.where / np.isneginf)",
              cost=lambda: "one merge is 2 exp and 3 multiply-adds, whatever the block sizes")


def check_online_softmax(fn) -> None:
    rng = np.random.default_rng(7)
    masked = rng.standard_normal((3, 20))
    masked[:, 13:] = -np.inf  # causal-style masking: the tail of each row is -inf
    specs = [("4 rows of 10, block 3", rng.standard_normal((4, 10)), 3),
             ("large magnitudes (±1000), block 4", rng.standard_normal((2, 17)) * 1000, 4),
             ("masked tail of -inf, block 5 (a whole block is -inf)", masked, 5),
             ("n = 1", rng.standard_normal((3, 1)), 4),
             ("block larger than the row", rng.standard_normal((2, 6)), 64),
             ("3-D input (2, 3, 33), block 8", rng.standard_normal((2, 3, 33)), 8)]
    cases = [Case(name, (x,), torch.softmax(torch.from_numpy(x), dim=-1).numpy(), kwargs=dict(block_size=bs))
             for name, x, bs in specs]
    seen = {}  # largest read of the last run, for the cost line

    def run(x, block_size):
        reader = BlockReader(x, -1)
        out = fn(reader, block_size)
        seen.update(worst=max(reader.log, default=0), block=block_size, n=x.shape[-1])
        return dict(out=out, log=reader.log)

    def verdict(got, case):
        return (compare(got["out"], case.expected, rtol=1e-9, atol=1e-12)
                or _too_much(got["log"], case.kwargs["block_size"], "each row"))

    run_cases(EX_ONLINE, run, cases, check=verdict,
              hint="keep m (running max) and d (running sum) per row, both shaped x.shape[:-1]; for each block x[..., s:s+b] "
                   "merge in (block max, sum of exp(block − block max)) with merge_softmax_stats; then a second blockwise "
                   "pass writes exp(block − m) / d into an output made with np.empty_like(x)",
              cost=lambda: (f"your function read at most {seen['worst']} of a row's {seen['n']} positions at once "
                            f"(block_size {seen['block']}): 3 memory accesses per element (read for stats, read and write "
                            f"to normalise) instead of safe softmax's 4 (Milakov & Gimelshein 2018)"))


class BlockReader(np.lib.mixins.NDArrayOperatorsMixin):
    """An input array that records how many positions along one axis (the sequence axis) each read
    touches. Slicing returns a plain ndarray and notes its extent; any whole-array use (arithmetic,
    ``np.asarray``, methods such as ``.max()``) counts as reading every position. Shape queries and
    ``np.empty_like``-style allocation read nothing; ``swapaxes``/``transpose`` give a view that still
    tracks the axis. Left out on purpose: reads through ``np.asarray`` of a slice's base, torch views."""

    _NO_READ = {np.empty_like, np.zeros_like, np.ones_like, np.full_like, np.shape, np.ndim, np.size, np.result_type}

    def __init__(self, a: np.ndarray, axis: int, log: list | None = None):
        self._a, self._axis = a, axis % a.ndim
        self.log = [] if log is None else log  # extents of every read, shared by views

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    __len__ = lambda self: len(self._a)

    def _full(self) -> np.ndarray:
        self.log.append(self._a.shape[self._axis])
        return self._a

    def __getitem__(self, idx):
        idx = _unwrap(idx)
        shape = [1] * self._a.ndim
        shape[self._axis] = -1
        pos = np.broadcast_to(np.arange(self._a.shape[self._axis]).reshape(shape), self._a.shape)[idx]
        self.log.append(int(np.unique(pos).size))
        return self._a[idx]

    def swapaxes(self, a1, a2):
        axes = list(range(self.ndim))
        axes[a1], axes[a2] = axes[a2], axes[a1]
        return self.transpose(axes)

    def transpose(self, *axes):
        axes = list(axes[0]) if len(axes) == 1 and not isinstance(axes[0], int) else list(axes) or list(range(self.ndim))[::-1]
        axes = [a % self.ndim for a in axes]
        return BlockReader(self._a.transpose(axes), axes.index(self._axis), self.log)

    T = property(lambda self: self.transpose())

    def __array__(self, dtype=None, copy=None):
        a = self._full()
        return a if dtype is None else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [x._full() if isinstance(x, BlockReader) else x for x in inputs]
        return getattr(ufunc, method)(*inputs, **_unwrap(kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func is np.swapaxes:
            return args[0].swapaxes(*args[1:], **kwargs)
        if func is np.transpose:
            return args[0].transpose(*args[1:], **kwargs)
        if func in self._NO_READ:
            return func(*[x._a if isinstance(x, BlockReader) else x for x in args], **kwargs)
        return func(*_unwrap(args), **_unwrap(kwargs))

    def __getattr__(self, name):  # any other ndarray method (.max, .copy, .astype, .reshape…) reads it all
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._full(), name)


def _unwrap(x):
    if isinstance(x, BlockReader):
        return x._full()
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _too_much(log: list, block_size: int, what: str) -> str | None:
    worst = max(log, default=0)
    if worst > block_size:
        return (f"the answer is right, but your function read {worst} positions of {what} at once; block_size is "
                f"{block_size}, so read at most {block_size} at a time (slice blocks, never use the whole array)")
    return None


def check_flash_attention(fn) -> None:
    rng = np.random.default_rng(11)
    specs = [((1, 8, 4), 4, False), ((1, 100, 16), 32, False), ((1, 100, 16), 32, True), ((2, 3, 37, 16), 16, True),
             ((2, 1, 8), 64, True), ((1, 50, 8), 7, False), ((1, 64, 16), 16, True)]
    cases = []
    for shape, bs, causal in specs:
        q, k, v = (rng.standard_normal(shape) for _ in range(3))
        if shape == (1, 64, 16):
            q *= 30.0  # large scores: exp overflows without the running max
        want = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(t) for t in (q, k, v)), is_causal=causal).numpy()
        cases.append(Case(f"shape {shape}, block {bs}, causal={causal}" + (", scores ≈ ±100" if shape == (1, 64, 16) else ""),
                          (q, k, v), want, kwargs=dict(block_size=bs, causal=causal)))

    seen = {}  # largest read of the last run, for the cost line

    def run(q, k, v, block_size, causal):
        log = []
        readers = [BlockReader(t, -2, log) for t in (q, k, v)]
        out = fn(*readers, block_size=block_size, causal=causal)
        seen.update(worst=max(log, default=0), block=block_size, T=q.shape[-2])
        return dict(out=out, log=log)

    def verdict(got, case):
        log, got = got["log"], got["out"]
        got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
        why = compare(got, case.expected, rtol=1e-7, atol=1e-9)
        if why is None and got.dtype != np.float64:
            why = f"float64 inputs should give a float64 output (compute in the input's dtype), got {got.dtype}"
        return why or _too_much(log, case.kwargs["block_size"], "the sequence (rows of q, k or v)")

    def cost():
        N, d, M = 256, 32, 8192
        x = [rng.standard_normal((N, d)) for _ in range(3)]
        std, fl = FastMemory(M), FastMemory(M)
        standard_attention_sim(std, *x)
        flash_attention_sim(fl, *x)
        return (f"your function read at most {seen['worst']} of {seen['T']} rows of q, k, v at once (block_size "
                f"{seen['block']}). Simulator, N={N}, d={d}: {4 * N * N * d:,} FLOPs either way; slow-memory traffic with M={M:,} words: "
                f"standard {std.traffic:,} words, tiled {fl.traffic:,} ({std.traffic / fl.traffic:.1f}× less)")

    run_cases(EX_FLASH, run, cases, check=verdict,
              hint="per query block keep m, l and an unnormalised accumulator; per key block: s = q_i·k_jᵀ/√d (mask with "
                   "-inf where key > query if causal), m_new = max(m, rowmax s), p = exp(s − m_new), "
                   "rescale l and the accumulator by exp(m − m_new), add p.sum and p·v_j; divide by l at the end",
              cost=cost)
