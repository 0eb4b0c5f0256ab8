"""The seeded cases behind lab 03's checkers: every sign regime, masked blocks, overflow and underflow, and
the large inputs at which the memory rule is measured. Expected answers come from torch (softmax,
scaled_dot_product_attention and its autograd) or from closed forms.

    >>> [len(c.args) for c in merge_cases()][-1]   # the per-row case: two (m, d) pairs of arrays
    2
"""

from __future__ import annotations

import numpy as np
import torch

from labutils.checks import Case


def stats(x):
    """(max, sum of exp(x − max)) of each row of x (..., n): the reference for 3.5's cases."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1)
    safe = np.where(np.isneginf(m), 0.0, m)
    return m, np.exp(x - safe[..., None]).sum(axis=-1)


def merge_cases():
    rng = np.random.default_rng(5)
    rows_a, rows_b = rng.standard_normal((4, 5)) * 3, rng.standard_normal((4, 7)) * 3
    rows_a[0], rows_b[0] = rng.uniform(1, 50, 5), rng.uniform(1, 50, 7)  # all positive
    rows_a[2], rows_b[2] = rng.uniform(-1000, -800, 5), rng.uniform(-1000, -800, 7)  # exp underflows
    rows_a[3] = -np.inf  # a fully masked block
    pairs = [("all positive", [1.0], [2.0]), ("mixed signs", [0.5, -3.0], [10.0, 9.0, 8.0]),
             ("mixed, ±50", rng.standard_normal(5) * 50, rng.standard_normal(7) * 50),
             ("all ≤ −800 (exp underflows)", [-900.0, -850.0], [-1000.0, -820.0]),
             ("±1000", [1000.0, 999.0], [-1000.0]), ("first side −inf", [-np.inf], [0.25, 3.0]),
             ("second side −inf", [4.0], [-np.inf, -np.inf]),
             ("both sides −inf: (−inf, 0), not nan", [-np.inf], [-np.inf])]
    cases = []
    for what, a, b in pairs:
        a, b = np.asarray(a, float), np.asarray(b, float)
        label = f"{what}: stats of {np.round(a, 1).tolist()} + {np.round(b, 1).tolist()}"
        cases.append(Case(label, (stats(a), stats(b)), stats(np.concatenate([a, b]))))
    cases.append(Case("per-row arrays, shape (4,): rows all positive / mixed / all ≤ −800 / first side −inf",
                      (stats(rows_a), stats(rows_b)), stats(np.concatenate([rows_a, rows_b], axis=-1))))
    return cases


def softmax_cases():
    rng = np.random.default_rng(7)
    lead, tail, dead = (rng.standard_normal((3, 20)) for _ in range(3))
    tail[:, 13:] = -np.inf  # causal-style: the tail of each row is masked
    lead[:, :5] = -np.inf  # left padding: the whole FIRST block is masked
    dead[1] = -np.inf  # a fully masked row: nan, like torch.softmax
    specs = [("4 rows of 10, mixed signs, block 3", rng.standard_normal((4, 10)), 3),
             ("rows all positive (0 … 1000), block 4", rng.uniform(0, 1000, (2, 17)), 4),
             ("rows all ≤ −800 (exp underflows), block 4", rng.uniform(-1000, -800, (2, 17)), 4),
             ("masked tail of −inf, block 5 (a whole block is −inf)", tail, 5),
             ("masked LEADING block of −inf (left padding), block 5", lead, 5),
             ("row 1 fully masked (all −inf) → nan, block 5", dead, 5),
             ("n = 1", rng.standard_normal((3, 1)), 4), ("block larger than the row", rng.standard_normal((2, 6)), 64),
             ("3-D input (2, 3, 33), block 8", rng.standard_normal((2, 3, 33)), 8),
             ("float32, scores ≈ ±100 (exp overflows float32 above 88 without the max), block 4",
              (rng.standard_normal((3, 18)) * 50).astype(np.float32), 4),
             ("memory rule: shape (2, 262144), block 128", rng.standard_normal((2, 262144)), 128)]
    return [Case(name, (x,),
                 torch.softmax(torch.from_numpy(x.astype(np.float64)), dim=-1).numpy().astype(x.dtype),
                 kwargs=dict(block_size=bs)) for name, x, bs in specs]


def attention_cases():
    rng = np.random.default_rng(11)
    specs = [("", (1, 8, 4), 4, False), ("", (1, 100, 16), 32, False), ("", (1, 100, 16), 32, True),
             ("", (2, 3, 37, 16), 16, True), ("", (2, 1, 8), 64, True), ("", (1, 50, 8), 7, False),
             ("scores ≈ ±1000 (exp overflows float64 without the running max)", (1, 64, 16), 16, True),
             ("scores all ≤ −800 (exp underflows without the max)", (1, 48, 16), 16, False),
             ("scores ≈ ±100 (exp overflows float32 above 88)", (1, 64, 16), 16, False),
             ("memory and reads rule", (1, 1024, 16), 32, True)]
    cases = []
    for what, shape, bs, causal in specs:
        q, k, v = (rng.standard_normal(shape) for _ in range(3))
        if "±1000" in what:
            q *= 250.0
        if "≤ −800" in what:
            k = np.abs(k) + 1.0  # every score ≤ −(200·1·d)/√d = −200·√d = −800 at d = 16
            q = -(np.abs(rng.standard_normal(shape)) * 20 + 200)
        if what.startswith("scores ≈ ±100 "):  # the float32 case
            q, k, v = (q * 25.0).astype(np.float32), k.astype(np.float32), v.astype(np.float32)
        ref = (torch.from_numpy(t.astype(np.float64)) for t in (q, k, v))
        want = torch.nn.functional.scaled_dot_product_attention(*ref, is_causal=causal).numpy().astype(q.dtype)
        cases.append(Case(f"shape {shape}, {q.dtype}, block {bs}, causal={causal}" + (f", {what}" if what else ""),
                          (q, k, v), want, kwargs=dict(block_size=bs, causal=causal)))
    return cases


def key_reads_allowed(T: int, bs: int, causal: bool) -> np.ndarray:
    """(T,) times each key row may be read: once per query block, or causal, once per query block that can see
    its key block (a key block wholly in the future of a query block is skipped)."""
    starts = np.arange(0, T, bs)
    if not causal:
        return np.full(T, len(starts))
    last_query = np.minimum(starts + bs, T) - 1  # (n_blocks,)
    key_block_start = (np.arange(T) // bs) * bs  # (T,)
    return (last_query[None, :] >= key_block_start[:, None]).sum(axis=1)


def query_reads_allowed(T: int, bs: int, causal: bool) -> np.ndarray:
    """(T,) times each query row may be read by a key-outer loop: once per key block, or causal, once per key block
    it can see (key blocks wholly in its block's future are skipped).

    >>> query_reads_allowed(6, 2, True).tolist(), query_reads_allowed(6, 2, False).tolist()
    ([1, 1, 2, 2, 3, 3], [3, 3, 3, 3, 3, 3])
    """
    n_blocks = len(range(0, T, bs))
    return (np.arange(T) // bs + 1) if causal else np.full(T, n_blocks)


def backward_cases():
    from labutils.kernels.attention import flash_attention_lse

    rng = np.random.default_rng(13)
    specs = [("", (1, 8, 4), 4, False), ("", (1, 100, 16), 32, False), ("", (1, 100, 16), 32, True),
             ("", (2, 3, 37, 16), 16, True), ("scores ≈ ±1000", (1, 64, 16), 16, True),
             ("memory and reads rule", (1, 1024, 16), 32, True)]
    cases = []
    for what, shape, bs, causal in specs:
        q, k, v, do = (rng.standard_normal(shape) for _ in range(4))
        q *= 250.0 if what else 1.0
        o, lse = flash_attention_lse(q, k, v, block_size=bs, causal=causal)
        tq, tk, tv = (torch.from_numpy(t).requires_grad_() for t in (q, k, v))
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(torch.from_numpy(do))
        cases.append(Case(f"shape {shape}, float64, block {bs}, causal={causal}" + (f", {what}" if what else ""),
                          (q, k, v, o, lse, do), tuple(t.grad.numpy() for t in (tq, tk, tv)),
                          kwargs=dict(block_size=bs, causal=causal)))
    return cases
