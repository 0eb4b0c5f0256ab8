"""Checkers for 03_kernel_intuition. Each runs seeded cases against an independent reference (closed
forms, the simulator's traffic formula, torch's softmax and scaled_dot_product_attention) and prints
a cost line computed from what the learner's function did (its answers, words moved, reads, memory).

    >>> from labutils.hardware import matmul_intensity
    >>> check_matmul_intensity(matmul_intensity)   # doctest: +ELLIPSIS
    Exercise 3.1 · matmul_intensity — all 6 cases pass ✓
      cost: your function gives a bf16 decode GEMV (m=1, k=n=4096) 1.00 FLOP/B ...
"""

from __future__ import annotations

import math

import numpy as np
import torch

from labutils.checks import Case, Exercise, compare, run_cases
from labutils.hardware import H100_SXM, matmul_intensity
from labutils.kernels.cases import (
    attention_cases,
    backward_cases,
    key_reads_allowed,
    merge_cases,
    query_reads_allowed,
    softmax_cases,
    stats,
)
from labutils.kernels.fastmem import FastMemory, best_tile_size, streamed_tile_size, tiled_matmul_traffic
from labutils.kernels.reader import BlockReader, no_torch, peak_extra_bytes

NOTEBOOK = "03_kernel_intuition"
EX_MATMUL_AI = Exercise(NOTEBOOK, "3.1", "matmul_intensity")
EX_DECODE_AI = Exercise(NOTEBOOK, "3.2", "decode_attention_intensity")
EX_TILED = Exercise(NOTEBOOK, "3.3", "tiled_matmul")
EX_SCHEDULE = Exercise(NOTEBOOK, "3.4", "min_traffic_matmul")
EX_MERGE = Exercise(NOTEBOOK, "3.5", "merge_softmax_stats")
EX_ONLINE = Exercise(NOTEBOOK, "3.6", "online_softmax")
EX_FLASH = Exercise(NOTEBOOK, "3.7", "flash_attention")


def _run(exercise, fn, wrapper, cases, **kw) -> None:
    """run_cases on ``wrapper`` (which calls the learner's ``fn`` under instruments); a pass is credited to ``fn``
    itself, so ``use(fn, reference)`` finds it."""
    run_cases(exercise, wrapper, cases, learner=fn, **kw)


def _ratio_is(got, expected, r, tol=1e-6) -> bool:
    return expected != 0 and math.isclose(float(got) / float(expected), r, rel_tol=tol)


def check_matmul_intensity(fn) -> None:
    shapes = [(1, 1, 1, 4), (1, 4096, 4096, 2), (64, 4096, 4096, 2), (4096, 4096, 4096, 2), (8, 512, 2048, 4),
              (300, 8192, 8192, 2)]
    cases = [Case(f"m={m}, k={k}, n={n}, {b} B/element", (m, k, n, b), matmul_intensity(m, k, n, b), unit="FLOP/B")
             for m, k, n, b in shapes]

    def diagnose(got, expected, case):
        m, k, n, b = case.args
        if _ratio_is(got, expected, 0.5):
            return "half the answer: a multiply-add is 2 FLOPs, so the matmul does 2·m·k·n"
        if _ratio_is(got, expected, 1 / 8):
            return "one eighth: bytes_per_element is already in bytes, not bits"
        if math.isclose(float(got), 2 * m * k * n / (b * (m * k + k * n)), rel_tol=1e-9):
            return "the bytes leave out writing C (m·n elements)"
        return None

    run_cases(EX_MATMUL_AI, fn, cases, rtol=1e-9, diagnose=diagnose,
              hint="FLOPs = 2·m·k·n; bytes = bytes_per_element · (m·k + k·n + m·n): read A and B, write C once",
              cost=lambda: (f"your function gives a bf16 decode GEMV (m=1, k=n=4096) {fn(1, 4096, 4096, 2):.2f} FLOP/B "
                            f"and a bf16 4096³ matmul {fn(4096, 4096, 4096, 2):.0f}; H100's ridge is "
                            f"{H100_SXM.ridge:.0f} FLOP/B (989 TFLOP/s over 3.35 TB/s)"))


def decode_attention_intensity_reference(context_length: int, head_dim: int, bytes_per_element: float,
                                         queries_per_kv_head: int = 1) -> float:
    """One decode step of one KV head: g query rows attend over T cached keys and values.
    FLOPs 4·g·T·d (q·kᵀ and p·v); bytes: read K and V (2·T·d), read q and write o (2·g·d)."""
    T, d, g = context_length, head_dim, queries_per_kv_head
    return 4 * g * T * d / (bytes_per_element * (2 * T * d + 2 * g * d))


def check_decode_attention_intensity(fn) -> None:
    specs = [(1, 64, 2, 1), (4096, 128, 2, 1), (32768, 128, 2, 1), (1000, 64, 4, 1), (4096, 128, 2, 8),
             (8192, 128, 1, 4)]
    cases = [Case(f"T={T}, d={d}, {b} B/element, g={g} query head(s) per KV head", (T, d, b),
                  decode_attention_intensity_reference(T, d, b, g),
                  kwargs={} if g == 1 else dict(queries_per_kv_head=g),
                  unit="FLOP/B") for T, d, b, g in specs]

    def diagnose(got, expected, case):
        (T, d, b), g = case.args, case.kwargs.get("queries_per_kv_head", 1)
        if math.isclose(float(got), 4 * g * T * d / (b * 2 * T * d), rel_tol=1e-9):
            return "the bytes leave out reading the g queries and writing the g outputs (2·g·d elements)"
        if g > 1 and math.isclose(float(got), decode_attention_intensity_reference(T, d, b, 1), rel_tol=1e-9):
            return "queries_per_kv_head is ignored: g query heads share the K and V that are read once"
        if _ratio_is(got, expected, 0.5):
            return "half the FLOPs: count both q·kᵀ and p·v, 2·T·d each per query row"
        return None

    run_cases(EX_DECODE_AI, fn, cases, rtol=1e-9, diagnose=diagnose,
              hint="FLOPs: g query rows each do 2·T·d for q·kᵀ and 2·T·d for p·v; bytes: K and V are T·d "
                   "each, q and the output are g·d each — all times bytes_per_element",
              cost=lambda: (f"your function gives {fn(4096, 128, 2):.3f} FLOP/B at T=4096, d=128 in bf16 (memory-bound "
                            f"on every chip), and {fn(4096, 128, 2, queries_per_kv_head=8):.2f} with 8 query heads per "
                            f"KV head (grouped-query attention)"))


def _matmul_cases(specs, seed):
    rng = np.random.default_rng(seed)
    return [Case(f"({m}×{k}) @ ({k}×{n}), M={M} words" + (f", tile={b}" if b else ""),
                 (rng.standard_normal((m, k)), rng.standard_normal((k, n))) + ((b,) if b else ()), kwargs=dict(M=M))
            for m, k, n, M, b in specs]


def _run_sim(fn, seen):
    def run(A, B, *tile, M):
        mem = FastMemory(M)
        slow = BlockReader(A, 0), BlockReader(B, 0)  # notes any read that bypasses mem.load
        C = fn(mem, *slow, *tile)
        seen.update(traffic=mem.traffic, shape=(A.shape[0], A.shape[1], B.shape[1]), M=M, peak=mem.peak)
        stored = mem.moved(C)[1] if isinstance(C, np.ndarray) else 0
        return dict(C=C, reads=mem.reads, writes=mem.writes, used=mem.used, peak=mem.peak, stored=stored,
                    direct=any(r.log for r in slow))
    return run


def _sim_rules(got, A, B) -> str | None:
    """The simulator's rules, once the product is right: slow memory is read only through load and written only
    through store, and nothing is left in fast memory."""
    if got["direct"]:
        return ("the product is right, but your function read A or B directly (A[...], A @ B or np.asarray(A)); "
                "slow memory may only be read through mem.load, which counts the words")
    if got["stored"] < A.shape[0] * B.shape[1]:
        return (f"the product is right, but only {got['stored']:,} of C's {A.shape[0] * B.shape[1]:,} elements went "
                f"through mem.store; results reach slow memory only through store (counted as writes)")
    if got["used"]:
        return f"right product, but {got['used']:,} words were left in fast memory: free every block"
    return None


def check_tiled_matmul(fn) -> None:
    specs = [(4, 4, 4, 12, 2), (8, 8, 8, 48, 4), (12, 8, 16, 48, 4), (10, 7, 9, 27, 3), (5, 5, 5, 192, 8),
             (1, 6, 1, 12, 2), (64, 64, 64, 192, 8)]
    seen = {}

    def verdict(got, case):
        A, B, tile = case.args
        (m, k), n = A.shape, B.shape[1]
        why = compare(got["C"], A @ B, rtol=1e-9, atol=1e-9)
        if why:
            return f"the product is wrong: {why}"
        if got["direct"] or got["stored"] < m * n:
            return _sim_rules(got, A, B)
        want = tiled_matmul_traffic(m, k, n, tile)
        if (got["reads"], got["writes"]) != (want["reads"], want["writes"]):
            return (f"right product, but it moved {got['reads']:,} words in and {got['writes']:,} out; the tiled loop "
                    f"moves {want['reads']:,} in (each A block once per column of C blocks, each B block once per "
                    f"row) and {want['writes']:,} out (each C element once)")
        return _sim_rules(got, A, B)

    _run(EX_TILED, fn, _run_sim(fn, seen), _matmul_cases(specs, 3), check=verdict,
              hint="for each (i, j) block of C: alloc an accumulator, loop p over k loading one A block and one "
                   "B block, "
                   "add a @ b, free them; then store the accumulator once and free it",
              cost=lambda: (f"your loop moved {seen['traffic']:,} words for (64×64) @ (64×64) with tile 8 (M = 192); "
                            f"the naive loop moves {2 * 64**3 + 64**2:,}"))


def check_min_traffic_matmul(fn) -> None:
    specs = [(16, 16, 16, 48, 0), (30, 30, 30, 100, 0), (48, 24, 40, 300, 0), (50, 50, 50, 100, 0),
             (96, 96, 96, 192, 0)]
    seen = {}

    def verdict(got, case):
        (A, B), M = case.args, case.kwargs["M"]
        (m, k), n = A.shape, B.shape[1]
        why = compare(got["C"], A @ B, rtol=1e-9, atol=1e-9)
        if why:
            return f"the product is wrong: {why}"
        if got["direct"] or got["stored"] < m * n:
            return _sim_rules(got, A, B)
        moved, b = got["reads"] + got["writes"], streamed_tile_size(M)
        best = sum(tiled_matmul_traffic(m, k, n, b).values())
        if moved > 1.1 * best:
            square = sum(tiled_matmul_traffic(m, k, n, best_tile_size(M)).values())
            same = " — that is exactly three square tiles' traffic" if moved == square else ""
            return (f"right product, but it moved {moved:,} words ({moved / best:.2f}× the {best:,} of the best "
                    f"schedule here; allowed ≤ 1.1×){same}")
        return _sim_rules(got, A, B)

    def cost():
        (m, k, n), M = seen["shape"], seen["M"]
        bound = 2 * m * n * k / math.sqrt(M)
        return (f"({m}×{k}) @ ({k}×{n}) with M = {M}: your schedule moved {seen['traffic']:,} words, peak use "
                f"{seen['peak']} of {M}; the tight bound 2n³/√M is {bound:,.0f} "
                f"({seen['traffic'] / bound:.2f}× it)")

    _run(EX_SCHEDULE, fn, _run_sim(fn, seen), _matmul_cases(specs, 4), check=verdict,
              hint="the reads are k·(m·⌈n/b⌉ + n·⌈m/b⌉) for a b×b block of C, so make b as large as M "
                   "allows; only the C block must stay resident: stream A's columns (b×1) and B's rows (1×b) "
                   "through, one outer product each, so b² + 2b ≤ M instead of three square tiles' 3b² ≤ M",
              cost=cost)


_SCALAR_ONLY = ("truth value of an array", "only length-1 arrays", "only 0-dimensional arrays", "only size-1 arrays")


def _caught(fn, *args, **kwargs):
    """fn's result, or its exception as {'error': ...} (NotImplementedError passes through: 'not attempted')."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as err:
        return {"error": err}


def _pair_verdict(got, case):
    if isinstance(got, dict) and "error" in got:
        err = got["error"]
        msg = f"your function raised {type(err).__name__}: {err}"
        if "read-only" in str(err):
            msg += ("\n    likely mistake: your function changed its input in place (a slice such as q[..., i:j, :] is "
                    "a view, so q_i *= scale or np.exp(blk, out=blk) writes into the caller's array); the checker's "
                    "inputs are read-only — compute into a new array or the output instead")
        if any(s in str(err) for s in _SCALAR_ONLY):
            msg += ("\n    likely mistake: max() and math.exp take one number; this case holds one (m, d) per row, as "
                    "online_softmax passes them — use np.maximum, np.exp and np.where, which work elementwise")
        return msg
    try:
        m, d = (np.asarray(v, dtype=np.float64) for v in got)
    except (TypeError, ValueError):
        return f"expected a pair (m, d), got {got!r}"
    m_want, d_want = case.expected
    if m.shape != np.shape(m_want) or d.shape != np.shape(d_want):
        return f"expected m and d of shape {np.shape(m_want)}, got {m.shape} and {d.shape}"
    if np.isnan(m).any() or np.isnan(d).any():
        return (f"got (m, d) = ({np.round(m, 4)}, {np.round(d, 4)}): a nan — with m = −inf on a side, "
                f"m_side − m is "
                f"−inf − (−inf) = nan; give that side weight 0")
    empty = np.isneginf(m_want)
    if (m[empty] != m_want[empty]).any() or (d[empty] != 0).any():
        return f"a side with no elements on both sides must merge to (−inf, 0), got ({m}, {d})"
    return compare(np.stack([m[~empty], d[~empty]]), np.stack([m_want[~empty], d_want[~empty]]), rtol=1e-9, atol=1e-300)


def check_merge_softmax_stats(fn) -> None:
    def cost():
        rng = np.random.default_rng(2)
        blocks = np.split(rng.standard_normal(1000) * 20, 10)
        want = stats(np.concatenate(blocks))
        worst = 0.0
        for _ in range(20):
            pool = [stats(blocks[i]) for i in rng.permutation(10)]
            while len(pool) > 1:  # merge a random adjacent pair: a random tree
                i = int(rng.integers(len(pool) - 1))
                pool[i:i + 2] = [fn(pool[i], pool[i + 1])]
            worst = max(worst, abs(float(pool[0][1]) / want[1] - 1))
        return (f"your merge combined 10 blocks' stats in 20 random tree orders; the sums agree to a relative "
                f"{worst:.1e}")

    frozen = lambda pair: tuple(_read_only(v) if isinstance(v, np.ndarray) else v for v in pair)  # noqa: E731
    _run(EX_MERGE, fn, lambda a, b: _caught(fn, frozen(a), frozen(b)), merge_cases(), check=_pair_verdict, cost=cost,
              hint="m = max(m_a, m_b); each sum was taken relative to its own max, so rescale: "
                   "d = d_a·exp(m_a − m) + d_b·exp(m_b − m). A side with m = −inf has d = 0 and contributes "
                   "nothing — "
                   "when both are −inf, m − m is nan, so treat that side's factor as 0 (np.where / np.isneginf)")


def _with_nan_rows(got, expected, rtol, atol):
    """compare(), except that where the expected answer is nan (a fully masked row) the answer must be nan too."""
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    if not isinstance(got, np.ndarray) or got.shape != expected.shape:
        return compare(got, expected, rtol=rtol, atol=atol)
    hole = np.isnan(expected)
    if hole.any() and not np.isnan(got[hole]).all():
        return f"a fully masked row (all −inf) should come back as nan, like torch.softmax; got {_first(got[hole])}"
    return compare(np.where(hole, 0.0, got), np.where(hole, 0.0, expected), rtol=rtol, atol=atol)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: a learner's in-place write to an input (or a slice of it) raises instead of passing."""
    view = a.view()
    view.flags.writeable = False
    return view


def _first(a):
    return np.array2string(a.ravel()[:4], precision=4)


def _read_rules(readers, case, *, max_passes: dict, what: str) -> str | None:
    """None when every read stayed within block_size positions and each input was read at most max_passes times."""
    bs = case.kwargs["block_size"]
    worst = max((max(r.log, default=0) for r in readers.values()), default=0)
    if worst > bs:
        return (f"the answer is right, but your function read {worst} positions of {what} at once; block_size is "
                f"{bs}, so read at most {bs} at a time (slice blocks; np.asarray(x) or x.max() on the whole input "
                f"reads all of it)")
    for name, r in readers.items():
        if r.passes() > max_passes[name]:
            return (f"the answer is right, but your function read each element of {name} up to {r.passes()} times; "
                    f"at most {max_passes[name]} allowed here — merge the stats while you read, instead of a "
                    f"separate pass for each")
    return None


def _memory_rule(peak: int, out_bytes: int, cap: int, full: int) -> str | None:
    extra = peak - out_bytes
    if extra > cap:
        return (f"the answer is right, but your function allocated {extra / 1024:,.0f} KiB beyond its output at peak; "
                f"the cap here is {cap / 1024:,.0f} KiB (the full {full / 1024:,.0f} KiB would not fit) — keep only "
                f"a "
                f"block and per-row stats, never a concatenation or the whole matrix")
    return None


def check_online_softmax(fn) -> None:
    seen = dict(passes=0, worst=0)

    def run(x, block_size):
        reader = BlockReader(_read_only(x), -1)
        with no_torch():
            if x.size < 100_000:
                return dict(out=_caught(fn, reader, block_size), reader=reader)
            out, peak = peak_extra_bytes(_caught, fn, reader, block_size)
        return dict(out=out, reader=reader, peak=peak)

    def verdict(got, case):
        out, reader = got["out"], got["reader"]
        if isinstance(out, dict) and "error" in out:
            return _pair_verdict(out, case)
        seen.update(passes=max(seen["passes"], reader.passes()), worst=max(seen["worst"], max(reader.log, default=0)))
        x = case.args[0]
        tol = (1e-4, 1e-6) if x.dtype == np.float32 else (1e-9, 1e-12)
        why = _with_nan_rows(out, case.expected, *tol)
        if why is None and out.dtype != x.dtype:
            why = f"{x.dtype} input should give a {x.dtype} output (softmax keeps the input's dtype), got {out.dtype}"
        why = why or _read_rules({"x": reader}, case, max_passes={"x": 2}, what="each row")
        if why is None and "peak" in got:
            cap = 64 * 1024 + 64 * x.shape[0] * case.kwargs["block_size"] * x.itemsize
            seen.update(peak=got["peak"] - x.nbytes, full=x.nbytes, cap=cap)
            why = _memory_rule(got["peak"], x.nbytes, cap, x.nbytes)
        return why

    _run(EX_ONLINE, fn, run, softmax_cases(), check=verdict,
              hint="keep m (running max) and d (running sum) per row, both shaped x.shape[:-1]; for each block "
                   "x[..., s:s+b] merge in (block max, sum of exp(block − block max)) with merge_softmax_stats; "
                   "then a second blockwise "
                   "pass writes exp(block − m) / d into an output made with np.empty_like(x)",
              cost=lambda: (f"your function read each element at most {seen['passes']} time(s), at most "
                            f"{seen['worst']} "
                            f"positions at once, and allocated {seen['peak'] / 1024:,.0f} KiB beyond its output for a "
                            f"{seen['full'] / 1024:,.0f} KiB input (cap {seen['cap'] / 1024:,.0f} KiB): "
                            f"{seen['passes'] + 1} memory accesses per element, against 4 for a three-pass safe "
                            f"softmax"))


def _run_blocked(fn, arrays: dict, block_size: int, causal: bool) -> dict:
    """Call the learner's attention function on read-only, block-counting views of ``arrays``
    ({name: (array, blocked axis)}), torch conversions refused; measure peak memory on long inputs."""
    readers = {name: BlockReader(_read_only(t), axis, log=[]) for name, (t, axis) in arrays.items()}
    call = lambda: _caught(fn, *readers.values(), block_size=block_size, causal=causal)  # noqa: E731
    with no_torch():
        if arrays["q"][0].shape[-2] < 1000:
            return dict(out=call(), readers=readers)
        out, peak = peak_extra_bytes(call)
    return dict(out=out, readers=readers, peak=peak)


def check_flash_attention(fn) -> None:
    seen = {}

    def run(q, k, v, block_size, causal):
        return _run_blocked(fn, dict(q=(q, -2), k=(k, -2), v=(v, -2)), block_size, causal)

    def verdict(got, case):
        out, readers = got["out"], got["readers"]
        if isinstance(out, dict) and "error" in out:
            return _pair_verdict(out, case)
        out = out.detach().numpy() if isinstance(out, torch.Tensor) else out
        q, bs, causal = case.args[0], case.kwargs["block_size"], case.kwargs["causal"]
        tol = dict(rtol=1e-4, atol=1e-5) if q.dtype == np.float32 else dict(rtol=1e-7, atol=1e-9)
        why = compare(out, case.expected, **tol)
        if why is None and out.dtype != q.dtype:
            why = f"{q.dtype} inputs should give a {q.dtype} output (compute in the input's dtype), got {out.dtype}"
        T = q.shape[-2]
        why = why or _read_rules(readers, case, max_passes=dict(q=1, k=math.ceil(T / bs), v=math.ceil(T / bs)),
                                 what="the sequence (rows of q, k or v)")
        allowed = key_reads_allowed(T, bs, causal)
        for name in "kv":
            extra = readers[name].reads_along_axis() - allowed
            if why is None and (extra > 0).any():
                r = int(np.argmax(extra > 0))
                why = (f"the answer is right, but {name} row {r} was read {int(allowed[r] + extra[r])} times; "
                       f"{int(allowed[r])} query block(s) can see it"
                       + (" — skip key blocks wholly in the future of a query block" if causal else ""))
        if why is None and "peak" in got:
            d = q.shape[-1]
            cap = 64 * 1024 + 8 * (bs * bs + 4 * bs * d) * q.itemsize * math.prod(q.shape[:-2])
            full = T * T * q.itemsize * math.prod(q.shape[:-2])
            k_read = int(readers["k"].reads_along_axis().sum())
            seen.update(peak=got["peak"] - out.nbytes, cap=cap, full=full, T=T, bs=bs, k_read=k_read,
                        k_all=T * math.ceil(T / bs), q=readers["q"].passes(), k=readers["k"].passes())
            why = _memory_rule(got["peak"], out.nbytes, cap, full)
        return why

    _run(EX_FLASH, fn, run, attention_cases(), check=verdict,
              hint="per query block keep m, l and an unnormalised accumulator; per key block: s = q_i·k_jᵀ/√d "
                   "(mask with "
                   "-inf where key > query if causal), m_new = max(m, rowmax s), p = exp(s − m_new), "
                   "rescale l and the accumulator by exp(m − m_new), add p.sum and p·v_j; divide by l at the end",
              cost=lambda: (f"at T = {seen['T']:,}, block {seen['bs']}, causal: your function read Q {seen['q']}×, "
                            f"each key row at most {seen['k']}×, {seen['k_read']:,} key-row reads in all (a loop that "
                            f"never "
                            f"skips makes {seen['k_all']:,}); it allocated {seen['peak'] / 1024:,.0f} KiB beyond its "
                            f"output (cap {seen['cap'] / 1024:,.0f} KiB; the T×T scores are "
                            f"{seen['full'] / 1024:,.0f} KiB)"))


EX_BACKWARD = Exercise(NOTEBOOK, "3.8", "flash_attention_backward")


def check_flash_attention_backward(fn) -> None:
    seen = {}

    def run(q, k, v, o, lse, do, block_size, causal):
        arrays = dict(q=(q, -2), k=(k, -2), v=(v, -2), o=(o, -2), lse=(lse, -1), do=(do, -2))
        return _run_blocked(fn, arrays, block_size, causal)

    def verdict(got, case):
        out, readers = got["out"], got["readers"]
        if isinstance(out, dict) and "error" in out:
            return _pair_verdict(out, case)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            return f"expected a tuple (dq, dk, dv), got {type(out).__name__}"
        for name, g, e in zip(("dq", "dk", "dv"), out, case.expected):
            why = compare(g, e, rtol=1e-8, atol=1e-10)
            if why:
                return f"{name}: {why}"
        q, bs = case.args[0], case.kwargs["block_size"]
        T = q.shape[-2]
        why = _read_rules(readers, case, max_passes={n: math.ceil(T / bs) + 1 for n in readers},
                          what="the sequence (rows of q, k, v, o, dO or L)")
        if why is None and case.kwargs["causal"]:  # either loop order: a block meets only the blocks it can see
            for name, allowed in (("q", query_reads_allowed(T, bs, True)), ("k", key_reads_allowed(T, bs, True))):
                extra = readers[name].reads_along_axis() - allowed
                if (extra > 0).any():
                    r = int(np.argmax(extra > 0))
                    why = (f"the answer is right, but {name} row {r} was read {int(allowed[r] + extra[r])} times; only "
                           f"{int(allowed[r])} block(s) of the other side can see it — skip pairs of blocks where the "
                           f"key block lies wholly in the future of the query block")
                    break
        if why is None and "peak" in got:
            d, batch = q.shape[-1], math.prod(q.shape[:-2])
            cap = 64 * 1024 + 12 * (bs * bs + 4 * bs * d) * q.itemsize * batch
            full = T * T * q.itemsize * batch
            outs = sum(np.asarray(g).nbytes for g in out)
            seen.update(peak=got["peak"] - outs, cap=cap, full=full, T=T, bs=bs)
            why = _memory_rule(got["peak"], outs, cap, full)
        return why

    _run(EX_BACKWARD, fn, run, backward_cases(), check=verdict,
         hint="compute D = rowsum(dO ∘ O) blockwise; then for each key block j (outer) and query block i (inner): "
              "S = q_i·k_jᵀ/√d (masked if causal), P = exp(S − L_i), dV_j += Pᵀ·dO_i, dP = dO_i·V_jᵀ, "
              "dS = P ∘ (dP − D_i), dQ_i += dS·K_j/√d, dK_j += dSᵀ·Q_i/√d",
         cost=lambda: (f"at T = {seen['T']:,}, block {seen['bs']}, causal: your backward allocated "
                       f"{seen['peak'] / 1024:,.0f} KiB beyond dq, dk, dv (cap {seen['cap'] / 1024:,.0f} KiB; the T×T "
                       f"matrices P and dS would be {seen['full'] / 1024:,.0f} KiB each)"))
