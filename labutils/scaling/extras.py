"""Lab 01 helpers around the law: a fit driven by any objective (the learner's own, through
``labutils.checks.use``) and Approach 2 on noise-free data (how far IsoFLOP vertices sit from the
true N_opt when the valley is asymmetric).

    >>> law = ChinchillaFit(E=3.2, A=30.0, B=80.0, alpha=0.5, beta=0.4)
    >>> N = np.logspace(3, 5, 9)               # one IsoFLOP row of sizes at C = 1e11 (N_opt ≈ 1.5e4)
    >>> round(float(approach2_vertices(law, [N], [1e11])[0] / law.compute_optimal(1e11)[0]), 3)
    1.067
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from labutils.scaling.law import HUBER_DELTA, ChinchillaFit, _validate, isoflop_optimum, paper_grid

N_STARTS = 3  # best grid starts polished, as in fit_chinchilla


def fit_with_objective(objective_fn, N, D, loss, *, delta: float = HUBER_DELTA) -> ChinchillaFit:
    """Fit the law by minimising ``objective_fn(theta, logN, logD, logL, delta)`` (Exercise 1.3's signature).

    The paper's 4,500 starts are scored with ``objective_fn``; the best three are polished with
    Nelder–Mead (no gradient needed) on centred coordinates, the objective scaled by 1/δ² so its
    tolerances are not relative to a tiny number. On the stored sweep it reaches the same optimum as
    ``fit_chinchilla`` (α to ≈1e-7) in well under a second.

        >>> from labutils.scaling.law import objective
        >>> N = np.repeat([1e4, 3e4, 1e5], 3); D = np.tile([1e6, 1e7, 1e8], 3)
        >>> law = ChinchillaFit(E=3.0, A=40.0, B=90.0, alpha=0.4, beta=0.35)
        >>> fit = fit_with_objective(objective, N, D, law.predict(N, D))
        >>> round(fit.alpha, 3), round(fit.E, 3)
        (0.4, 3.0)
    """
    if not callable(objective_fn):
        raise ValueError(f"objective_fn must be a function, got {type(objective_fn).__name__}")
    N, D, L = _validate(N, D, loss)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    grid = paper_grid()
    values = np.array([float(objective_fn(t, logN, logD, logL, delta)) for t in grid])
    if not np.isfinite(values).any():
        raise ValueError("objective_fn returned no finite value on the grid of starts")
    values[~np.isfinite(values)] = np.inf
    cN, cD = logN.mean(), logD.mean()
    shift = np.array([cN, cD, 0.0, 0.0, 0.0])
    # centred coordinates a' = a − α·mean(log N), b' = b − β·mean(log D); scaled by 1/δ²
    f = lambda x: float(objective_fn(x, logN - cN, logD - cD, logL, delta)) / delta**2
    best = None
    for theta0 in grid[np.argsort(values, kind="stable")[:N_STARTS]]:
        x0 = theta0 - shift * np.array([theta0[3], theta0[4], 0, 0, 0])
        res = minimize(f, x0, method="Nelder-Mead",
                       options=dict(xatol=1e-10, fatol=1e-14, maxiter=20_000, maxfev=40_000))
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, al, be = best.x + shift * np.array([best.x[3], best.x[4], 0, 0, 0])
    if al <= 0 or be <= 0:
        raise ValueError(f"the fit found a non-positive exponent (alpha={al:.3g}, beta={be:.3g})")
    return ChinchillaFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(al), beta=float(be),
                         objective=float(best.fun) * delta**2, message=str(best.message), n_points=len(N))


def approach2_vertices(law: ChinchillaFit, windows, budgets, vertex_fn=isoflop_optimum) -> np.ndarray:
    """Approach 2 on noise-free data: per budget C, the vertex of ``vertex_fn`` fitted to the law's own
    losses at that budget's model sizes (its window), D = C/(6N). Returns one N per budget.

    Compare with ``law.compute_optimal(C)[0]``, the true N_opt of the same law: the ratio is the bias
    of a parabola in log N on a valley that is not symmetric in log N.
    """
    if len(windows) != len(budgets):
        raise ValueError(f"need one window of sizes per budget, got {len(windows)} and {len(budgets)}")
    out = []
    for N, C in zip(windows, budgets):
        N = np.asarray(N, dtype=np.float64)
        out.append(float(vertex_fn(N, law.predict(N, C / (6 * N)))))
    return np.array(out)
