"""Notebook 03's checkers: the reference passes, and wrong answers learners really write each fail, by case name."""

import math

import numpy as np
import pytest
import torch

from labutils import kernels
from labutils.checks import CheckFailed, reset_session
from labutils.kernels import (
    check_decode_attention_intensity,
    check_flash_attention,
    check_matmul_intensity,
    check_merge_softmax_stats,
    check_min_traffic_matmul,
    check_online_softmax,
    check_tiled_matmul,
    decode_attention_intensity_reference,
)
from labutils.kernels import fastmem as fm


def rejects(checker, wrong, case, words, capsys):
    """checker(wrong) raises CheckFailed and its message names the failing case and the words given."""
    with np.errstate(all="ignore"), pytest.raises(CheckFailed):
        checker(wrong)
    out = capsys.readouterr().out
    assert f"({case}" in out and words in out, out
    return out


# ----------------------------------------------------------------------------- 3.1 matmul_intensity

def half_flops(m, k, n, b):  # one FLOP per multiply-add
    return m * k * n / (b * (m * k + k * n + m * n))


def no_c_write(m, k, n, b):  # forgets that C is written
    return 2 * m * k * n / (b * (m * k + k * n))


def bits(m, k, n, b):  # bytes_per_element taken as bits
    return 2 * m * k * n / (8 * b * (m * k + k * n + m * n))


@pytest.mark.parametrize("wrong, case, words", [
    (half_flops, "m=1, k=1, n=1, 4 B/element", "a multiply-add is 2 FLOPs"),
    (no_c_write, "m=1, k=1, n=1, 4 B/element", "leave out writing C"),
    (bits, "m=1, k=1, n=1, 4 B/element", "not bits"),
])
def test_matmul_intensity_rejects(wrong, case, words, capsys):
    rejects(check_matmul_intensity, wrong, case, words, capsys)


def test_matmul_intensity_cost_comes_from_the_learner(capsys):
    check_matmul_intensity(lambda m, k, n, b: 2 * m * k * n / (b * (m * k + k * n + m * n)))
    assert "your function gives a bf16 decode GEMV (m=1, k=n=4096) 1.00 FLOP/B" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 3.2 decode_attention_intensity

def no_q_o(T, d, b, queries_per_kv_head=1):  # bytes for K and V only
    return 4 * queries_per_kv_head * T * d / (b * 2 * T * d)


def ignores_g(T, d, b, queries_per_kv_head=1):  # grouped-query heads ignored
    return decode_attention_intensity_reference(T, d, b)


def qk_only(T, d, b, queries_per_kv_head=1):  # forgets p·v
    g = queries_per_kv_head
    return 2 * g * T * d / (b * (2 * T * d + 2 * g * d))


@pytest.mark.parametrize("wrong, case, words", [
    (no_q_o, "T=1, d=64", "leave out reading the g queries"),
    (ignores_g, "T=4096, d=128, 2 B/element, g=8", "queries_per_kv_head is ignored"),
    (qk_only, "T=1, d=64", "count both q·kᵀ and p·v"),
])
def test_decode_attention_intensity_rejects(wrong, case, words, capsys):
    rejects(check_decode_attention_intensity, wrong, case, words, capsys)


def test_decode_intensity_message_shows_enough_digits(capsys):
    """The old message printed 'expected 1 FLOP/B, got 1 FLOP/B'; now both differ in print, with the difference."""
    out = rejects(check_decode_attention_intensity, no_q_o, "T=4096, d=128, 2 B/element, g=1", "", capsys)
    assert "expected 0.9998 FLOP/B, got 1 FLOP/B (got − expected = +0.000244 FLOP/B)" in out, out


# ----------------------------------------------------------------------------- 3.3 tiled_matmul

def tiled_reference(mem, A, B, tile):
    return fm.tiled_matmul_sim(mem, A, B, tile)


def keeps_accumulator(mem, A, B, tile):  # never frees the accumulator: the next alloc overflows
    (m, k), n = A.shape, B.shape[1]
    C = np.empty((m, n))
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            acc = mem.alloc((min(tile, m - i), min(tile, n - j)))
            for p in range(0, k, tile):
                a, b = mem.load(A, (slice(i, i + tile), slice(p, p + tile))), mem.load(B, (slice(p, p + tile), slice(j, j + tile)))
                acc += a @ b
                mem.free(a, b)
            mem.store(C, (slice(i, i + tile), slice(j, j + tile)), acc)
    return C


def stores_every_step(mem, A, B, tile):  # writes the C block after every k step
    (m, k), n = A.shape, B.shape[1]
    C = np.empty((m, n))
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            acc = mem.alloc((min(tile, m - i), min(tile, n - j)))
            for p in range(0, k, tile):
                a, b = mem.load(A, (slice(i, i + tile), slice(p, p + tile))), mem.load(B, (slice(p, p + tile), slice(j, j + tile)))
                acc += a @ b
                mem.free(a, b)
                mem.store(C, (slice(i, i + tile), slice(j, j + tile)), acc)
            mem.free(acc)
    return C


def naive_inside(mem, A, B, tile):  # the naive one-output-at-a-time loop: right product, n× the reads
    return fm.naive_matmul_sim(mem, A, B)


def whole_row_panel(mem, A, B, tile):  # loads a whole row panel of A: does not fit in 3·tile²
    m, n = A.shape[0], B.shape[1]
    C = np.empty((m, n))
    for i in range(0, m, tile):
        a = mem.load(A, (slice(i, i + tile), slice(None)))
        C[i:i + tile] = a @ B
        mem.free(a)
    return C


def loads_then_multiplies_slow(mem, A, B, tile):  # right loads and stores, but the product uses A and B from slow memory
    C = fm.tiled_matmul_sim(mem, A, B, tile)
    C[...] = A @ B
    return C


@pytest.mark.parametrize("wrong, case, words", [
    (loads_then_multiplies_slow, "(4×4) @ (4×4), M=12 words, tile=2", "read A or B directly"),
    (keeps_accumulator, "(8×8) @ (8×8), M=48 words, tile=4", "fast memory full"),
    (stores_every_step, "(8×8) @ (8×8), M=48 words, tile=4", "moved"),
    (naive_inside, "(8×8) @ (8×8), M=48 words, tile=4", "moved 1,024 words in"),
    (whole_row_panel, "(8×8) @ (8×8), M=48 words, tile=4", "fast memory full"),
])
def test_tiled_matmul_rejects(wrong, case, words, capsys):
    rejects(check_tiled_matmul, wrong, case, words, capsys)


def test_tiled_matmul_reference_passes(capsys):
    check_tiled_matmul(tiled_reference)
    assert "your loop moved 69,632 words" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 3.4 min_traffic_matmul

def streamed(mem, A, B):
    return fm.streamed_matmul_sim(mem, A, B)


def square_tiles(mem, A, B):  # three square tiles, the largest that fit (the old "best" answer)
    return fm.tiled_matmul_sim(mem, A, B, fm.best_tile_size(mem.capacity))


def naive_schedule(mem, A, B):  # one output at a time
    return fm.naive_matmul_sim(mem, A, B)


def streamed_too_big(mem, A, B):  # b = ⌊√M⌋ forgets the streamed column and row
    return fm.streamed_matmul_sim(mem, A, B, tile=math.isqrt(mem.capacity))


def streamed_half(mem, A, B):  # a resident C block half as wide as it could be
    return fm.streamed_matmul_sim(mem, A, B, tile=max(1, fm.streamed_tile_size(mem.capacity) // 2))


def streamed_variant(mistake):
    """The streamed schedule with one slip: the mistakes below."""
    def fn(mem, A, B):
        (m, k), n = A.shape, B.shape[1]
        C, b = np.empty((m, n)), fm.streamed_tile_size(mem.capacity)
        for i in range(0, m, b):
            for j in range(0, n, b):
                acc = mem.alloc((min(b, m - i), min(b, n - j)))
                for p in range(k):
                    a = mem.load(A, (slice(i, i + b), slice(p, p + 1)))
                    r = B[p:p + 1, j:j + b] if mistake == "unloaded_B" else mem.load(B, (slice(p, p + 1), slice(j, j + b)))
                    acc += a @ r
                    mem.free(a, r)
                if mistake == "no_store":
                    C[i:i + b, j:j + b] = acc
                else:
                    mem.store(C, (slice(i, i + b), slice(j, j + b)), acc)
                if mistake != "keeps_last" or (i + b < m or j + b < n):
                    mem.free(acc)
        return C
    fn.__name__ = mistake
    return fn


def plain_product(mem, A, B):  # ignores the simulator: zero words counted, so it looked like the best schedule
    return A @ B


@pytest.mark.parametrize("wrong, case, words", [
    (streamed_variant("no_store"), "(16×16) @ (16×16), M=48 words", "went through mem.store"),  # C[...] = acc: writes uncounted
    (streamed_variant("unloaded_B"), "(16×16) @ (16×16), M=48 words", "read A or B directly"),  # B's row never loaded
    (streamed_variant("keeps_last"), "(16×16) @ (16×16), M=48 words", "left in fast memory"),  # never frees the last C block
    (plain_product, "(16×16) @ (16×16), M=48 words", "read A or B directly"),
    (square_tiles, "(96×96) @ (96×96), M=192 words", "exactly three square tiles' traffic"),
    (naive_schedule, "(16×16) @ (16×16), M=48 words", "the best schedule here"),
    (streamed_too_big, "(30×30) @ (30×30), M=100 words", "fast memory full"),
    (streamed_half, "(30×30) @ (30×30), M=100 words", "allowed ≤ 1.1×"),
])
def test_min_traffic_matmul_rejects(wrong, case, words, capsys):
    rejects(check_min_traffic_matmul, wrong, case, words, capsys)


def test_min_traffic_matmul_accepts_streamed_and_prints_the_bound(capsys):
    check_min_traffic_matmul(streamed)
    out = capsys.readouterr().out
    assert "all 5 cases pass" in out and "moved 156,672 words, peak use 168 of 192" in out, out
    assert "the tight bound 2n³/√M is 127,701" in out, out
    mem = fm.FastMemory(192)  # the numbers: streamed 147,456 reads against 221,184 for square tiles
    fm.streamed_matmul_sim(mem, np.ones((96, 96)), np.ones((96, 96)))
    sq = fm.FastMemory(192)
    fm.tiled_matmul_sim(sq, np.ones((96, 96)), np.ones((96, 96)), 8)
    assert (mem.reads, sq.reads, mem.peak) == (147_456, 221_184, 168)


# ----------------------------------------------------------------------------- 3.5 merge_softmax_stats

def scalar_merge(a, b):  # max() and math.exp: right on numbers, breaks on per-row arrays
    (m_a, d_a), (m_b, d_b) = a, b
    m = max(m_a, m_b)
    if m == -math.inf:
        return m, 0.0
    return m, d_a * (math.exp(m_a - m) if m_a > -math.inf else 0.0) + d_b * (math.exp(m_b - m) if m_b > -math.inf else 0.0)


def no_neginf_guard(a, b):  # −inf − (−inf) = nan when both sides are empty
    m = np.maximum(a[0], b[0])
    return m, a[1] * np.exp(a[0] - m) + b[1] * np.exp(b[0] - m)


def no_rescale(a, b):  # adds the sums without moving them to the common max
    return np.maximum(a[0], b[0]), a[1] + b[1]


def absolute_sums(a, b):  # un-shifts each sum with exp(m): underflows below −745, overflows above 709
    m = np.maximum(a[0], b[0])
    return m, (a[1] * np.exp(a[0]) + b[1] * np.exp(b[0])) / np.exp(m)


def rescales_in_place(a, b):  # d_a *= …: overwrites the caller's running sums
    (m_a, d_a), (m_b, d_b) = a, b
    m = np.maximum(m_a, m_b)
    safe = np.where(np.isneginf(m), 0.0, m)
    d_a *= np.exp(np.where(np.isneginf(m_a), -np.inf, m_a - safe))
    d_b *= np.exp(np.where(np.isneginf(m_b), -np.inf, m_b - safe))
    return m, d_a + d_b


@pytest.mark.parametrize("wrong, case, words", [
    (rescales_in_place, "per-row arrays, shape (4,)", "changed its input in place"),
    (scalar_merge, "per-row arrays, shape (4,)", "use np.maximum, np.exp and np.where"),
    (no_neginf_guard, "both sides −inf", "a nan"),
    (no_rescale, "mixed signs", "entries differ"),
    (absolute_sums, "all ≤ −800 (exp underflows)", "a nan"),
])
def test_merge_rejects(wrong, case, words, capsys):
    rejects(check_merge_softmax_stats, wrong, case, words, capsys)


def test_merge_reference_passes_and_cost_is_measured(capsys):
    check_merge_softmax_stats(kernels.merge_softmax_stats)
    assert "your merge combined 10 blocks' stats in 20 random tree orders" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 3.6 online_softmax

def softmax_reference(x, block_size):
    """The notebook's solution: one pass for the stats, one to normalise."""
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        m_blk = blk.max(axis=-1)
        m, d = kernels.merge_softmax_stats((m, d), (m_blk, np.exp(blk - np.where(np.isneginf(m_blk), 0.0, m_blk)[..., None]).sum(-1)))
    out = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        for s in range(0, x.shape[-1], block_size):
            out[..., s:s + block_size] = np.exp(x[..., s:s + block_size] - m[..., None]) / d[..., None]
    return out


def whole_rows(x, block_size):  # ignores the blocks: np.asarray reads every position at once
    x = np.asarray(x)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def concatenate_then_softmax(x, block_size):  # reads blocks, then rebuilds the whole row in memory
    row = np.concatenate([x[..., s:s + block_size] for s in range(0, x.shape[-1], block_size)], axis=-1)
    e = np.exp(row - row.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def three_pass(x, block_size):  # max pass, sum pass, normalise pass: each element read three times
    n, bs = x.shape[-1], block_size
    m = np.full(x.shape[:-1], -np.inf)
    for s in range(0, n, bs):
        m = np.maximum(m, x[..., s:s + bs].max(-1))
    d = np.zeros(x.shape[:-1])
    for s in range(0, n, bs):
        d += np.exp(x[..., s:s + bs] - m[..., None]).sum(-1)
    out = np.empty_like(x)
    for s in range(0, n, bs):
        out[..., s:s + bs] = np.exp(x[..., s:s + bs] - m[..., None]) / d[..., None]
    return out


def no_neginf_streaming(x, block_size):  # exp(blk − blk.max()) is nan when a whole block is −inf
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        m_blk = blk.max(-1)
        m_new = np.maximum(m, m_blk)
        d = d * np.exp(m - m_new) + np.exp(blk - m_new[..., None]).sum(-1)
        m = m_new
    out = np.empty_like(x)
    for s in range(0, x.shape[-1], block_size):
        out[..., s:s + block_size] = np.exp(x[..., s:s + block_size] - m[..., None]) / d[..., None]
    return out


def no_max(x, block_size):  # sums exp(x) directly: overflows above 709, underflows to 0/0 below −745
    d = np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        d += np.exp(x[..., s:s + block_size]).sum(-1)
    out = np.empty_like(x)
    for s in range(0, x.shape[-1], block_size):
        out[..., s:s + block_size] = np.exp(x[..., s:s + block_size]) / d[..., None]
    return out


def zeros_for_masked_rows(x, block_size):  # returns 0 for a fully masked row, not the stated nan
    return np.nan_to_num(softmax_reference(x, block_size), nan=0.0)


def via_torch(x, block_size):  # hands the blocks to torch: tracemalloc cannot see its memory
    blocks = [torch.from_numpy(np.ascontiguousarray(x[..., s:s + block_size])) for s in range(0, x.shape[-1], block_size)]
    return torch.softmax(torch.cat(blocks, -1), -1).numpy()


def scalar_merge_inside(x, block_size):  # reuses a scalar-only 3.5
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        m, d = scalar_merge((m, d), (blk.max(-1), np.exp(blk - blk.max(-1)[..., None]).sum(-1)))
    return np.exp(x[..., :] - m) / d


def normalises_in_place(x, block_size):  # np.exp(blk, out=blk) on a slice of x: overwrites the caller's input
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        m_blk = blk.max(-1)
        m, d = kernels.merge_softmax_stats((m, d), (m_blk, np.exp(blk - np.where(np.isneginf(m_blk), 0.0, m_blk)[..., None]).sum(-1)))
    out = np.empty_like(x)
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        np.subtract(blk, m[..., None], out=blk)
        np.exp(blk, out=blk)
        out[..., s:s + block_size] = blk / d[..., None]
    return out


def float64_output(x, block_size):  # np.empty(x.shape) for the output: float32 in, float64 out
    return softmax_reference(x, block_size).astype(np.float64, copy=False)


def drops_last_block(x, block_size):  # range(0, n − 1, b) for the stats: a last block of one element is left out
    n = x.shape[-1]
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, n - 1, block_size):
        blk = x[..., s:s + block_size]
        m_blk = blk.max(-1)
        m, d = kernels.merge_softmax_stats((m, d), (m_blk, np.exp(blk - np.where(np.isneginf(m_blk), 0.0, m_blk)[..., None]).sum(-1)))
    out = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        for s in range(0, n, block_size):
            out[..., s:s + block_size] = np.exp(x[..., s:s + block_size] - m[..., None]) / d[..., None]
    return out


@pytest.mark.parametrize("wrong, case, words", [
    (normalises_in_place, "4 rows of 10", "changed its input in place"),
    (float64_output, "float32, scores ≈ ±100", "should give a float32 output"),
    (drops_last_block, "4 rows of 10", "entries differ"),
    (whole_rows, "4 rows of 10", "read 10 positions of each row at once"),
    (concatenate_then_softmax, "memory rule: shape (2, 262144), block 128", "KiB beyond its output"),
    (three_pass, "4 rows of 10", "up to 3 times"),
    (no_neginf_streaming, "masked LEADING block", "NaN"),
    (no_max, "rows all positive", "NaN"),
    (no_max, "rows all ≤ −800", "NaN"),
    (zeros_for_masked_rows, "row 1 fully masked", "should come back as nan"),
    (via_torch, "4 rows of 10", "numpy-only"),
    (scalar_merge_inside, "4 rows of 10", "use np.maximum, np.exp and np.where"),
])
def test_online_softmax_rejects(wrong, case, words, capsys):
    rejects(check_online_softmax, wrong, case, words, capsys)


def test_online_softmax_reference_passes_with_a_measured_cost(capsys):
    check_online_softmax(softmax_reference)
    out = capsys.readouterr().out
    assert "all 11 cases pass" in out and "read each element at most 2 time(s), at most 128 positions" in out, out


# ----------------------------------------------------------------------------- 3.7 flash_attention

def flash_reference(q, k, v, block_size=64, causal=False):
    """The notebook's solution (FlashAttention-2's order: query blocks outside)."""
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        q_i = q[..., i:i + block_size, :] / np.sqrt(d).astype(q.dtype)
        rows = np.arange(i, min(i + block_size, T))[:, None]
        m = np.full(q_i.shape[:-1], -np.inf, dtype=q.dtype)
        l, acc = np.zeros(q_i.shape[:-1], dtype=q.dtype), np.zeros(q_i.shape, dtype=q.dtype)
        for j in range(0, T, block_size):
            if causal and j > rows.max():
                break
            s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1))
            p, alpha = np.exp(s - m_new[..., None]), np.exp(m - m_new)
            l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., j:j + block_size, :], m_new
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def full_scores(q, k, v, block_size=64, causal=False):  # whole arrays, T×T scores
    return kernels.attention_reference(q, k, v, causal=causal)


def concatenate_blocks(q, k, v, block_size=64, causal=False):  # reads blocks, then builds the T×T matrix anyway
    T = q.shape[-2]
    cat = lambda a: np.concatenate([a[..., s:s + block_size, :] for s in range(0, T, block_size)], axis=-2)
    q, k, v = cat(q), cat(k), cat(v)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def no_running_max(q, k, v, block_size=64, causal=False):  # tiled, but exp(s) unshifted and nothing rescaled
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        q_i = q[..., i:i + block_size, :] / np.sqrt(d).astype(q.dtype)
        rows = np.arange(i, min(i + block_size, T))[:, None]
        l, acc = np.zeros(q_i.shape[:-1], dtype=q.dtype), np.zeros(q_i.shape, dtype=q.dtype)
        for j in range(0, T, block_size):
            if causal and j > rows.max():
                break
            s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            p = np.exp(s)
            l, acc = l + p.sum(-1), acc + p @ v[..., j:j + block_size, :]
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def no_rescaling(q, k, v, block_size=64, causal=False):  # a running max, but old l and acc are never rescaled
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        q_i = q[..., i:i + block_size, :] / np.sqrt(d).astype(q.dtype)
        rows = np.arange(i, min(i + block_size, T))[:, None]
        m = np.full(q_i.shape[:-1], -np.inf, dtype=q.dtype)
        l, acc = np.zeros(q_i.shape[:-1], dtype=q.dtype), np.zeros(q_i.shape, dtype=q.dtype)
        for j in range(0, T, block_size):
            if causal and j > rows.max():
                break
            s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            m = np.maximum(m, s.max(axis=-1))
            p = np.exp(s - m[..., None])
            l, acc = l + p.sum(-1), acc + p @ v[..., j:j + block_size, :]
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def no_causal_skip(q, k, v, block_size=64, causal=False):  # masks future keys but still reads every key block
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        q_i = q[..., i:i + block_size, :] / np.sqrt(d).astype(q.dtype)
        rows = np.arange(i, min(i + block_size, T))[:, None]
        m = np.full(q_i.shape[:-1], -np.inf, dtype=q.dtype)
        l, acc = np.zeros(q_i.shape[:-1], dtype=q.dtype), np.zeros(q_i.shape, dtype=q.dtype)
        for j in range(0, T, block_size):
            s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1))
            safe = np.where(np.isneginf(m_new), 0.0, m_new)
            p = np.exp(s - safe[..., None])
            alpha = np.exp(np.where(np.isneginf(m), -np.inf, m - safe))
            l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., j:j + block_size, :], m_new
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def q_every_step(q, k, v, block_size=64, causal=False):  # re-reads the query block for every key block
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        rows = np.arange(i, min(i + block_size, T))[:, None]
        m = np.full(rows.shape[:1], -np.inf)[None].repeat(q.shape[0], 0).reshape(q.shape[:-2] + (len(rows),))
        l, acc = np.zeros_like(m), np.zeros(m.shape + (v.shape[-1],), dtype=q.dtype)
        for j in range(0, T, block_size):
            if causal and j > rows.max():
                break
            s = q[..., i:i + block_size, :] @ np.swapaxes(k[..., j:j + block_size, :], -1, -2) / np.sqrt(d)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1))
            p, alpha = np.exp(s - m_new[..., None]), np.exp(m - m_new)
            l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., j:j + block_size, :], m_new
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def float64_always(q, k, v, block_size=64, causal=False):  # upcasts: right numbers, wrong dtype for float32
    return flash_reference(q, k, v, block_size=block_size, causal=causal).astype(np.float64)


def flash_variant(mistake):
    """flash_reference with one slip: the mistakes below."""
    def fn(q, k, v, block_size=64, causal=False):
        T, d = q.shape[-2], q.shape[-1]
        out = np.empty_like(q)
        for i in range(0, T, block_size):
            q_i = q[..., i:i + block_size, :]
            if mistake == "scales_q_in_place":
                q_i *= q.dtype.type(1 / np.sqrt(d))
            elif mistake != "no_scale":
                q_i = q_i / q.dtype.type(np.sqrt(d))
            rows = np.arange(i, min(i + block_size, T))[:, None]
            m = np.full(q_i.shape[:-1], -np.inf, dtype=q.dtype)
            l, acc = np.zeros(q_i.shape[:-1], dtype=q.dtype), np.zeros(q_i.shape, dtype=q.dtype)
            for j in range(0, T, block_size):
                if causal and (j >= rows.max() if mistake == "skips_diagonal_block" else j > rows.max()):
                    break
                s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
                if causal:
                    cols = np.arange(j, min(j + block_size, T))[None, :]
                    s = np.where(cols < rows if mistake == "diagonal_masked" else cols <= rows, s, -np.inf)
                m_new = np.maximum(m, s.max(axis=-1))
                p, alpha = np.exp(s - m_new[..., None]), np.exp(m - m_new)
                l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., j:j + block_size, :], m_new
            out[..., i:i + block_size, :] = acc / l[..., None]
        return out
    fn.__name__ = mistake
    return fn


@pytest.mark.parametrize("wrong, case, words", [
    (flash_variant("scales_q_in_place"), "shape (1, 8, 4)", "changed its input in place"),  # q_i *= scale on a view of q
    (flash_variant("no_scale"), "shape (1, 8, 4)", "entries differ"),  # forgets 1/√d
    (flash_variant("diagonal_masked"), "shape (1, 100, 16), float64, block 32, causal=True", "NaN"),  # key < query: row 0 sees nothing
    (flash_variant("skips_diagonal_block"), "shape (2, 1, 8), float64, block 64, causal=True", "NaN"),  # j >= last row skips a needed block
    (full_scores, "shape (1, 8, 4)", "read 8 positions of the sequence"),
    (concatenate_blocks, "shape (1, 1024, 16), float64, block 32, causal=True, memory", "KiB beyond its output"),
    (no_running_max, "shape (1, 64, 16), float64, block 16, causal=True, scores ≈ ±1000", "NaN"),
    (no_running_max, "shape (1, 64, 16), float32", "NaN"),
    (no_rescaling, "shape (1, 100, 16), float64, block 32, causal=False", "entries differ"),
    (no_causal_skip, "shape (1, 100, 16), float64, block 32, causal=True", "skip key blocks wholly in the future"),
    (q_every_step, "shape (1, 100, 16), float64, block 32, causal=False", "each element of q up to 4 times"),
    (float64_always, "shape (1, 64, 16), float32", "should give a float32 output"),
])
def test_flash_attention_rejects(wrong, case, words, capsys):
    rejects(check_flash_attention, wrong, case, words, capsys)


def test_flash_attention_reference_passes_with_a_measured_cost(capsys):
    check_flash_attention(flash_reference)
    out = capsys.readouterr().out
    assert "all 10 cases pass" in out and "your function read Q 1×" in out, out
    assert "16,896 key-row reads in all (a loop that never skips makes 32,768)" in out, out


def test_use_switch_picks_the_learner_after_a_pass(capsys):
    from labutils.checks import use

    reset_session()
    assert use(flash_reference, kernels.flash_attention) is kernels.flash_attention
    check_flash_attention(flash_reference)
    assert use(flash_reference, kernels.flash_attention) is flash_reference
    with pytest.raises(CheckFailed):
        check_flash_attention(no_rescaling)
    assert use(no_rescaling, kernels.flash_attention) is kernels.flash_attention


# ----------------------------------------------------------------------------- 3.8 flash_attention_backward

def backward_reference(q, k, v, o, lse, do, block_size=64, causal=False):
    """The notebook's solution: D first, then key blocks outside, query blocks inside; P recomputed from L."""
    T, d = q.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(d)
    dq, dk, dv = np.zeros_like(q), np.empty_like(k), np.empty_like(v)
    D = np.empty(q.shape[:-1])
    for i in range(0, T, block_size):
        D[..., i:i + block_size] = (do[..., i:i + block_size, :] * o[..., i:i + block_size, :]).sum(-1)
    for j in range(0, T, block_size):
        k_j, v_j = k[..., j:j + block_size, :], v[..., j:j + block_size, :]
        dk_j, dv_j = np.zeros_like(k_j), np.zeros_like(v_j)
        cols = np.arange(j, min(j + block_size, T))[None, :]
        for i in range(0, T, block_size):
            rows = np.arange(i, min(i + block_size, T))[:, None]
            if causal and j > rows.max():
                continue
            q_i, do_i = q[..., i:i + block_size, :], do[..., i:i + block_size, :]
            s = q_i @ np.swapaxes(k_j, -1, -2) * scale
            if causal:
                s = np.where(cols <= rows, s, -np.inf)
            p = np.exp(s - lse[..., i:i + block_size, None])
            dv_j += np.swapaxes(p, -1, -2) @ do_i
            ds = p * (do_i @ np.swapaxes(v_j, -1, -2) - D[..., i:i + block_size, None])
            dq[..., i:i + block_size, :] += ds @ k_j * scale
            dk_j += np.swapaxes(ds, -1, -2) @ q_i * scale
        dk[..., j:j + block_size, :], dv[..., j:j + block_size, :] = dk_j, dv_j
    return dq, dk, dv


def backward_variant(mistake):
    """backward_reference with one line changed: the mistakes below."""
    def fn(q, k, v, o, lse, do, block_size=64, causal=False):
        T, d = q.shape[-2], q.shape[-1]
        scale = 1.0 if mistake == "no_scale" else 1.0 / np.sqrt(d)
        dq, dk, dv = np.zeros_like(q), np.empty_like(k), np.empty_like(v)
        D = np.empty(q.shape[:-1])
        for i in range(0, T, block_size):
            o_i = 1.0 if mistake == "D_without_O" else o[..., i:i + block_size, :]
            D[..., i:i + block_size] = (do[..., i:i + block_size, :] * o_i).sum(-1)
        for j in range(0, T, block_size):
            k_j, v_j = k[..., j:j + block_size, :], v[..., j:j + block_size, :]
            dk_j, dv_j = np.zeros_like(k_j), np.zeros_like(v_j)
            cols = np.arange(j, min(j + block_size, T))[None, :]
            for i in range(0, T, block_size):
                rows = np.arange(i, min(i + block_size, T))[:, None]
                if causal and j > rows.max() and mistake != "no_causal_skip":
                    continue
                q_i, do_i = q[..., i:i + block_size, :], do[..., i:i + block_size, :]
                if mistake == "in_place":
                    q_i *= 1 / np.sqrt(d)
                s = q_i @ np.swapaxes(k_j, -1, -2) / np.sqrt(d)
                if causal and mistake != "no_mask":
                    s = np.where(cols <= rows, s, -np.inf)
                if mistake == "block_softmax":
                    p = np.exp(s - s.max(-1, keepdims=True))
                    p = p / p.sum(-1, keepdims=True)
                else:
                    p = np.exp(s - lse[..., i:i + block_size, None])
                dv_j += (p if mistake == "dv_untransposed" else np.swapaxes(p, -1, -2)) @ do_i
                dp = (o[..., i:i + block_size, :] if mistake == "dP_from_O" else do_i) @ np.swapaxes(v_j, -1, -2)
                ds = p * dp if mistake == "no_D" else p * (dp - D[..., i:i + block_size, None])
                dq[..., i:i + block_size, :] += ds @ k_j * scale
                dk_j += np.swapaxes(ds, -1, -2) @ q_i * scale
            dk[..., j:j + block_size, :], dv[..., j:j + block_size, :] = dk_j, dv_j
        return dq, dk, dv
    fn.__name__ = mistake
    return fn


def full_backward(q, k, v, o, lse, do, block_size=64, causal=False):  # whole arrays: the T×T P and dS in memory
    q, k, v, do = (np.asarray(t) for t in (q, k, v, do))
    T, d = q.shape[-2], q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)
    if causal:
        s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k / np.sqrt(d), np.swapaxes(ds, -1, -2) @ q / np.sqrt(d), np.swapaxes(p, -1, -2) @ do


@pytest.mark.parametrize("wrong, case, words", [
    (backward_variant("no_D"), "shape (1, 8, 4)", "dq:"),  # dS = P ∘ dP: forgets the softmax's −D term
    (backward_variant("no_scale"), "shape (1, 8, 4)", "dq:"),  # drops 1/√d from dq and dk
    (backward_variant("block_softmax"), "shape (1, 100, 16), float64, block 32, causal=False", "entries differ"),  # normalises P per block, not with L
    (backward_variant("no_mask"), "shape (1, 100, 16), float64, block 32, causal=True", "entries differ"),  # keeps future keys
    (backward_variant("D_without_O"), "shape (1, 8, 4)", "dq:"),  # D = rowsum(dO), forgetting the ∘ O
    (backward_variant("dv_untransposed"), "shape (1, 8, 4)", "dv:"),  # dV += P·dO instead of Pᵀ·dO
    (backward_variant("dP_from_O"), "shape (1, 8, 4)", "dq:"),  # dP = O·Vᵀ: the output where dO belongs
    (backward_variant("in_place"), "shape (1, 8, 4)", "changed its input in place"),  # q_i *= scale on a view of q
    (backward_variant("no_causal_skip"), "shape (1, 100, 16), float64, block 32, causal=True", "skip pairs of blocks"),  # masks, but visits every block
    (full_backward, "shape (1, 8, 4)", "read 8 positions"),
])
def test_flash_attention_backward_rejects(wrong, case, words, capsys):
    from labutils.kernels import check_flash_attention_backward
    rejects(check_flash_attention_backward, wrong, case, words, capsys)


def test_flash_attention_backward_reference_passes_within_memory(capsys):
    from labutils.kernels import check_flash_attention_backward
    check_flash_attention_backward(backward_reference)
    out = capsys.readouterr().out
    assert "all 6 cases pass" in out and "beyond dq, dk, dv" in out, out
