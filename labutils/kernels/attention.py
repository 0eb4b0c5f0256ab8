"""Kernel ideas in plain numpy: online softmax, FlashAttention's tiled loop, and fusion.

online_softmax streams over blocks keeping a running (max, sum) pair (Milakov & Gimelshein 2018,
arXiv 1805.02867); flash_attention is FlashAttention's tiling with that online softmax (Dao et al.
2022, arXiv 2205.14135), written as the loop a GPU kernel would run, one query block at a time.

Left out on purpose: the backward pass, dropout, and anything about GPU threads or warps — the
point is what each block reads, keeps and writes, which numpy shows as well as CUDA.

    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> online_softmax(x, block_size=2).round(3)
    array([[0.09 , 0.245, 0.665]])
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from labutils import positive_int


def _block(block_size) -> int:
    return positive_int("block_size", int(block_size) if isinstance(block_size, np.integer) else block_size)


def merge_softmax_stats(a: tuple, b: tuple) -> tuple:
    """Merge two (max, sum of exp(x - max)) pairs into the pair of the union; associative and commutative.

    >>> m, d = merge_softmax_stats((1.0, 1.0), (2.0, 1.0))   # softmax stats of [1] and [2] -> of [1, 2]
    >>> float(m), round(float(d), 4)                          # d = 1·e^(1−2) + 1·e^(2−2)
    (2.0, 1.3679)
    """
    (m_a, d_a), (m_b, d_b) = a, b
    m = np.maximum(m_a, m_b)
    # a side that has seen only -inf (a fully masked block) contributes nothing, without inf - inf = nan
    safe = np.where(np.isneginf(m), 0.0, m)
    d = d_a * np.exp(np.where(np.isneginf(m_a), -np.inf, m_a - safe)) + d_b * np.exp(np.where(np.isneginf(m_b), -np.inf, m_b - safe))
    return m, d


def online_softmax(x, axis: int = -1, *, block_size: int = 128) -> np.ndarray:
    """Softmax along ``axis`` reading x in blocks: one pass for the (max, sum) stats, one to normalise.

    Rows that are all -inf (fully masked) give nan, like torch.softmax. +inf and nan are refused.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.ndim == 0:
        raise ValueError("online_softmax needs at least one axis, got a scalar")
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("online_softmax got nan or +inf: softmax of those is undefined")
    bs = _block(block_size)
    x = np.moveaxis(x, axis, -1)  # (..., n)
    n = x.shape[-1]
    m = np.full(x.shape[:-1], -np.inf, dtype=x.dtype)  # running max
    d = np.zeros(x.shape[:-1], dtype=x.dtype)  # running sum of exp(x - m)
    for start in range(0, n, bs):
        blk = x[..., start:start + bs]
        m_blk = blk.max(axis=-1)
        d_blk = np.exp(blk - np.where(np.isneginf(m_blk), 0.0, m_blk)[..., None]).sum(axis=-1)
        m, d = merge_softmax_stats((m, d), (m_blk, d_blk))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.exp(x - m[..., None]) / d[..., None]
    return np.moveaxis(out.astype(x.dtype, copy=False), -1, axis)


def attention_reference(q, k, v, *, causal: bool = False) -> np.ndarray:
    """Standard attention softmax(q kᵀ / √d) v, materialising the (T, T) score matrix."""
    q, k, v = _check_qkv(q, k, v)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]).astype(q.dtype)  # (..., Tq, Tk)
    if causal:
        Tq, Tk = s.shape[-2:]
        s = np.where(np.tril(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def _check_qkv(q, k, v):
    q, k, v = (np.asarray(t) for t in (q, k, v))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ValueError(f"{name} must have shape (..., T, d), got shape {t.shape}")
        if not np.issubdtype(t.dtype, np.floating):
            raise ValueError(f"{name} must be a float array, got dtype {t.dtype}")
        if not np.isfinite(t).all():
            raise ValueError(f"{name} contains nan or inf")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim d, got q {q.shape} and k {k.shape}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k and v must have the same (..., T), got k {k.shape} and v {v.shape}")
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"q and k must have the same leading (batch, head) dims, got {q.shape[:-2]} and {k.shape[:-2]}")
    dtype = np.result_type(q, k, v)
    return q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False)


def flash_attention(q, k, v, *, block_size: int = 64, causal: bool = False) -> np.ndarray:
    """softmax(q kᵀ / √d) v without ever holding more than a (block × block) piece of the score matrix.

    Shapes (..., T, d) for q and (..., S, d) for k, v; any T, S (the last block may be short). With
    causal=True, query i sees keys j <= i + S - T (bottom-right aligned, as torch's is_causal for S == T).
    Computed in the inputs' dtype: float64 in, float64 out.
    """
    q, k, v = _check_qkv(q, k, v)
    bs = _block(block_size)
    T, S, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = q.dtype.type(1.0 / np.sqrt(d))
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (..., T, dv)
    for i in range(0, T, bs):  # one query block: its rows of the output are finished when this loop ends
        q_i = q[..., i:i + bs, :] * scale  # (..., Br, d)
        rows = np.arange(i, min(i + bs, T))[:, None] + (S - T)  # last key each query may see
        m = np.full(q_i.shape[:-1], -np.inf, dtype=q.dtype)  # (..., Br) running max
        l = np.zeros(q_i.shape[:-1], dtype=q.dtype)  # (..., Br) running sum
        acc = np.zeros(q_i.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (..., Br, dv) unnormalised output
        for j in range(0, S, bs):
            if causal and j > rows.max():
                break  # every later key block is in the future of every query here
            s = q_i @ np.swapaxes(k[..., j:j + bs, :], -1, -2)  # (..., Br, Bc)
            if causal:
                s = np.where(np.arange(j, min(j + bs, S))[None, :] <= rows, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1))
            safe = np.where(np.isneginf(m_new), 0.0, m_new)  # rows that saw only -inf so far
            p = np.exp(s - safe[..., None])  # (..., Br, Bc)
            alpha = np.exp(np.where(np.isneginf(m), -np.inf, m - safe))  # rescales what was accumulated
            l = alpha * l + p.sum(axis=-1)
            acc = alpha[..., None] * acc + p @ v[..., j:j + bs, :]
            m = m_new
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., i:i + bs, :] = acc / l[..., None]  # a row with no visible key gives nan, like torch
    return out


# ----------------------------------------------------------------------------- fusion


def memory_passes(n_ops: int, *, fused: bool) -> int:
    """Full-array memory passes of a chain of ``n_ops`` elementwise ops: each op reads and writes the
    array unfused (2·n_ops); fused, the chain reads once and writes once (2). Horace He's x.cos().cos(): 4 vs 2."""
    positive_int("n_ops", n_ops)
    return 2 if fused else 2 * n_ops


_COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import torch
    from torch._inductor.utils import run_and_get_code
    torch.set_num_threads(int(sys.argv[2]))
    def chain(x):  # five cheap elementwise ops: 10 memory passes eager, 2 fused
        return (x * 2.0 + 1.0).relu() * 3.0 - 0.5
    n = int(sys.argv[1])
    x = torch.randn(n)
    t0 = time.perf_counter()
    fused = torch.compile(chain)
    _, codes = run_and_get_code(fused, x)
    compile_s = time.perf_counter() - t0
    def best(fn):
        fn(); ts = []
        for _ in range(5):
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return min(ts)
    torch.testing.assert_close(fused(x), chain(x))
    print(json.dumps(dict(compile_s=compile_s, eager_s=best(lambda: chain(x)), fused_s=best(lambda: fused(x)),
                          code=codes[0] if codes else "")))
""")


def compile_demo(n: int = 1 << 22, *, timeout_s: float = 60.0, threads: int | None = None) -> dict:
    """torch.compile ``(x * 2 + 1).relu() * 3 - 0.5`` in a fresh subprocess with a time limit.

    Returns {'ok': True, 'compile_s', 'eager_s', 'fused_s', 'kernel' (the generated C++ loop)} or
    {'ok': False, 'reason': ...} when the compile fails (e.g. no C++ compiler) or runs out of time.
    """
    import torch

    threads = threads or torch.get_num_threads()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_COMPILE_SCRIPT)
    try:
        done = subprocess.run([sys.executable, f.name, str(int(n)), str(threads)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return dict(ok=False, reason=f"the compile did not finish within {timeout_s:.0f} s (a cold compile runs a C++ compiler)")
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return dict(ok=False, reason=f"torch.compile failed: {last}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    code = res.pop("code")
    start = code.find("extern \"C\"")
    kernel = code[start:code.find("''')", start)] if start >= 0 else code
    return dict(ok=True, kernel=kernel.strip(), **res)


# ----------------------------------------------------------------------------- the backward pass


def flash_attention_lse(q, k, v, *, block_size: int = 64, causal: bool = False) -> tuple:
    """flash_attention's output O and the log-sum-exp L = m + log l of every score row, (..., T): all the
    backward needs to recompute P = exp(S − L) block by block (Dao 2023, arXiv 2307.08691, Algorithm 1)."""
    q, k, v = _check_qkv(q, k, v)
    bs, T, S = _block(block_size), q.shape[-2], k.shape[-2]
    out = flash_attention(q, k, v, block_size=bs, causal=causal)
    lse = np.empty(q.shape[:-1], dtype=q.dtype)  # (..., T)
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    for i in range(0, T, bs):
        rows = np.arange(i, min(i + bs, T))[:, None] + (S - T)
        m = np.full(q.shape[:-2] + (rows.shape[0],), -np.inf, dtype=q.dtype)
        l = np.zeros_like(m)
        for j in range(0, S, bs):
            s = _scores(q[..., i:i + bs, :] * scale, k[..., j:j + bs, :], rows, j, causal)
            m_new = np.maximum(m, s.max(axis=-1))
            safe = np.where(np.isneginf(m_new), 0.0, m_new)
            l = l * np.exp(np.where(np.isneginf(m), -np.inf, m - safe)) + np.exp(s - safe[..., None]).sum(axis=-1)
            m = m_new
        lse[..., i:i + bs] = m + np.log(l)
    return out, lse


def _scores(q_i, k_j, rows, j, causal):
    s = q_i @ np.swapaxes(k_j, -1, -2)  # (..., Br, Bc)
    if causal:
        s = np.where(np.arange(j, j + k_j.shape[-2])[None, :] <= rows, s, -np.inf)
    return s


def flash_attention_backward(q, k, v, o, lse, do, *, block_size: int = 64, causal: bool = False) -> tuple:
    """(dq, dk, dv) of O = softmax(q kᵀ/√d) v given dO, never holding more than a block of the T×T matrices:
    key blocks outside, query blocks inside (Dao 2023, Algorithm 2). P = exp(S − L) is recomputed from the
    saved log-sum-exp; D = rowsum(dO ∘ O) replaces rowsum(dP ∘ P); dS = P ∘ (dP − D)."""
    q, k, v = _check_qkv(q, k, v)
    bs, T, S = _block(block_size), q.shape[-2], k.shape[-2]
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    dq, dk, dv = np.zeros_like(q), np.empty_like(k), np.empty_like(v)
    D = np.empty(q.shape[:-1], dtype=q.dtype)  # (..., T)
    for i in range(0, T, bs):
        D[..., i:i + bs] = (do[..., i:i + bs, :] * o[..., i:i + bs, :]).sum(axis=-1)
    for j in range(0, S, bs):
        k_j, v_j = k[..., j:j + bs, :], v[..., j:j + bs, :]  # (..., Bc, d)
        dk_j, dv_j = np.zeros_like(k_j), np.zeros_like(v_j)
        for i in range(0, T, bs):
            rows = np.arange(i, min(i + bs, T))[:, None] + (S - T)
            if causal and j > rows.max():
                continue  # this key block is in the future of every query here
            q_i, do_i = q[..., i:i + bs, :], do[..., i:i + bs, :]
            p = np.exp(_scores(q_i * scale, k_j, rows, j, causal) - lse[..., i:i + bs, None])  # (..., Br, Bc)
            dv_j += np.swapaxes(p, -1, -2) @ do_i
            ds = p * (do_i @ np.swapaxes(v_j, -1, -2) - D[..., i:i + bs, None])
            dq[..., i:i + bs, :] += ds @ k_j * scale
            dk_j += np.swapaxes(ds, -1, -2) @ q_i * scale
        dk[..., j:j + bs, :], dv[..., j:j + bs, :] = dk_j, dv_j
    return dq, dk, dv
