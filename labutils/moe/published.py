"""Lab 04: what published all-to-all timings say about α, and the EP-vs-PP verdict as a function of it.

DeepEP's low-latency kernels (github.com/deepseek-ai/DeepEP, README; H800, 128 tokens per rank,
hidden 7168, top-8, fp8 dispatch + bf16 combine) are the best public numbers for one MoE layer's
dispatch + combine. The README's table changed: the first version (commit ebfe47e, 2025-02-24) ran
pure RDMA; after PR #173 (commit de8cfca, 2025-06-05) the kernels use NVLink within a node, which
changed the EP8–EP64 rows. Both are kept, with their dates. At 128 tokens per rank the kernels are
bandwidth-bound, so the rows pin α (per peer message) only loosely:

    >>> lo, hi = alpha_range(DEEPEP_RDMA_2025_02)
    >>> hi > 10 * lo   # pairs of rows disagree by more than 10×
    True

Left out on purpose: topology (NVLink vs InfiniBand peers inside one all-to-all), GPU-initiated RDMA
details, and overlap of the two halves; the fit uses this lab's (P − 1)·α + bytes ÷ β form as is.
"""

from __future__ import annotations

import itertools

import numpy as np

# (EP ranks, dispatch µs, combine µs), DeepEP README's low-latency table.
DEEPEP_RDMA_2025_02 = ((8, 163, 318), (16, 173, 329), (32, 182, 350), (64, 186, 353), (128, 192, 369), (256, 194, 360))
DEEPEP_NVLINK_2025_06 = ((8, 77, 114), (16, 118, 195), (32, 155, 273), (64, 173, 314), (128, 192, 369), (256, 194, 360))
DEEPEP_SHAPE = dict(tokens=128, d_model=7168, k=8, dispatch_bytes=1, combine_bytes=2)


def a2a_terms(P: int, *, tokens: int = 128, d_model: int = 7168, k: int = 8, dispatch_bytes: float = 1,
              combine_bytes: float = 2) -> tuple[float, float]:
    """(peer messages, bytes) one rank sends in one MoE layer's dispatch + combine under this lab's model:
    2·(P − 1) messages; tokens·k·(P − 1)/P rows out at (d_model + 1)·dispatch_bytes and back at d_model·combine_bytes.

    >>> a2a_terms(2, tokens=1, d_model=4, k=2)
    (2, 13.0)
    """
    rows = tokens * k * (P - 1) / P
    return 2 * (P - 1), rows * ((d_model + 1) * dispatch_bytes + d_model * combine_bytes)


def _design(rows, shape):
    A = np.array([a2a_terms(P, **shape) for P, _, _ in rows], dtype=float)  # (n, 2): messages, bytes
    t = np.array([(d + c) * 1e-6 for _, d, c in rows])  # (n,) s
    return A, t


def fit_alpha_beta(rows, **shape) -> tuple[float, float, np.ndarray]:
    """Least squares on relative error, α and 1/β ≥ 0: (alpha_s, beta_Bps, relative error per row).

    >>> a, b, err = fit_alpha_beta(((2, 1.0, 0.0), (3, 1.5, 0.0)), tokens=1, d_model=1, k=1)
    >>> round(a * 1e6, 3), bool(abs(err).max() < 1e-9)
    (0.125, True)
    """
    from scipy.optimize import nnls

    A, t = _design(rows, {**DEEPEP_SHAPE, **shape})
    x, _ = nnls(A / t[:, None], np.ones_like(t))  # minimise Σ (model/t − 1)²
    pred = A @ x
    return float(x[0]), (1 / x[1] if x[1] > 0 else float("inf")), pred / t - 1


def alpha_from_pairs(rows, **shape) -> list[float]:
    """α solved exactly from every pair of rows (two equations, two unknowns); negative solutions kept."""
    A, t = _design(rows, {**DEEPEP_SHAPE, **shape})
    out = []
    for i, j in itertools.combinations(range(len(t)), 2):
        M = A[[i, j]]
        if abs(np.linalg.det(M / M.max(0))) > 1e-12:
            out.append(float(np.linalg.solve(M, t[[i, j]])[0]))
    return out


def alpha_range(rows, **shape) -> tuple[float, float]:
    """(smallest, largest) positive α among the pairs of rows: the spread the data allow."""
    pos = [a for a in alpha_from_pairs(rows, **shape) if a > 0]
    return min(pos), max(pos)


def alpha_profile(rows, alphas, **shape) -> np.ndarray:
    """For each α: the worst |relative error| over the rows with the best β for that α (least squares on
    relative error). Where it stays near the best fit's, the data cannot tell those α apart.

    >>> rows = ((2, 1.0, 0.0), (3, 1.5, 0.0))
    >>> [round(float(e), 3) for e in alpha_profile(rows, [0.125e-6, 0.0], tokens=1, d_model=1, k=1)]
    [0.0, 0.062]
    """
    A, t = _design(rows, {**DEEPEP_SHAPE, **shape})
    worst = []
    for a in alphas:
        rest, b = t - a * A[:, 0], A[:, 1]  # remaining time, bytes: fit rest ≈ b/β with 1/β ≥ 0
        w = b / t
        inv_beta = max(0.0, float((w * rest / t).sum() / (w * w).sum()))
        worst.append(np.abs((a * A[:, 0] + inv_beta * b) / t - 1).max())
    return np.array(worst)


def winner_map(latency, alphas, batches) -> np.ndarray:
    """(len(alphas), len(batches)) array of PP time ÷ EP time; latency(layout, alpha_s, batch) -> seconds.
    Above 1, expert parallelism is faster.

    >>> winner_map(lambda lay, a, B: (a if lay == "ep" else 1.0) * B, [0.5, 2.0], [1, 3]).tolist()
    [[2.0, 2.0], [0.5, 0.5]]
    """
    return np.array([[latency("pp", a, B) / latency("ep", a, B) for B in batches] for a in alphas])
