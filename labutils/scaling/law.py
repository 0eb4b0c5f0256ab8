"""Lab 01: scaling laws — fit Chinchilla's parametric law the way the paper did, with error bars.

L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, Approach 3), fitted by minimising
Σ_i Huber_δ(LSE(a − α·log N_i, b − β·log D_i, e) − log L_i) with A = e^a, B = e^b, E = e^e and
δ = 1e-3, from a grid of starts, with L-BFGS. Two details follow Besiroglu et al. 2024 (Epoch):
the objective is tiny (Huber with δ = 1e-3), so L-BFGS needs tolerances far tighter than scipy's
defaults or it stops early; and the uncertainty comes from a bootstrap over runs.

The paper's grid has 4,500 starts. Running L-BFGS from each is slow on a laptop, so the grid is
evaluated vectorised and only the best few starts are polished; a bootstrap refit warm-starts
from the full-data optimum as well.

Left out on purpose: Approach 1 (envelope of training curves), Kaplan's L(N, D) form, fitting
the learning rate or batch size against compute. The sweep that produces data lives in
``labutils.scaling.sweep`` (``python -m labutils.scaling sweep``).

    >>> fit = ChinchillaFit(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)
    >>> N, D = fit.compute_optimal(5.76e23)     # ≈ 40B parameters (the paper's unrounded law)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from labutils import positive_int

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, Approach 3
# The paper's grid of initial points (Hoffmann et al. 2022, Appendix D.2): 5·5·5·6·6 = 4,500 starts.
GRID_ALPHA = GRID_BETA = np.arange(0.0, 2.01, 0.5)
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_A = GRID_B = np.arange(0.0, 25.01, 5.0)
N_POLISH = 3  # best grid starts polished with L-BFGS (the paper polished all 4,500)
# Tight tolerances: the objective is ~1e-5 per point, far below what scipy's defaults resolve.
TIGHT = dict(ftol=1e-13, gtol=1e-11, maxiter=10_000)
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
# A warm-started refit converges in ≈50–100 steps; the rare resample that needs thousands is sliding
# along a flat valley of the objective (e.g. E → 0 traded against A). It is kept where it stops.
BOOTSTRAP_MAXITER = 500


def chinchilla_loss(N, D, E, A, B, alpha, beta):
    """L(N, D) = E + A/N^α + B/D^β, numpy-vectorised over N and D (broadcast)."""
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return E + A / N**alpha + B / D**beta


@dataclass(frozen=True)
class ChinchillaFit:
    """A fitted (or published) law. ``ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = float("nan")  # Huber objective at the optimum (nan for a published law)
    message: str = ""  # the optimiser's termination message
    n_points: int = 0

    def __post_init__(self):
        for name in PARAM_NAMES:
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.number)) and math.isfinite(v)):
                raise ValueError(f"ChinchillaFit.{name} must be a finite number, got {v!r}")
        if self.A <= 0 or self.B <= 0 or self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"A, B, alpha and beta must be > 0 (got A={self.A}, B={self.B}, alpha={self.alpha}, beta={self.beta})")

    @property
    def params(self) -> dict:
        return {k: float(getattr(self, k)) for k in PARAM_NAMES}

    def predict(self, N, D):
        """Predicted loss (nats/token) for N parameters trained on D tokens."""
        N, D = _positive("N", N), _positive("D", D)
        return chinchilla_loss(N, D, **self.params)

    def compute_optimal(self, C):
        """(N_opt, D_opt) minimising the law along C = 6·N·D (Hoffmann et al. 2022, eq. 4)."""
        C = _positive("C", C)
        a, b = self.alpha, self.beta
        G = (a * self.A / (b * self.B)) ** (1 / (a + b))
        N = G * (C / 6) ** (b / (a + b))
        D = (C / 6) ** (a / (a + b)) / G
        return (float(N), float(D)) if np.ndim(N) == 0 else (N, D)

    def __repr__(self) -> str:
        return (f"ChinchillaFit(E={self.E:.4g}, A={self.A:.4g}, B={self.B:.4g}, "
                f"alpha={self.alpha:.4g}, beta={self.beta:.4g})")


# ----------------------------------------------------------------------------- validation

def _positive(name, x) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {type(x).__name__}") from None
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite (min {np.min(arr):.3g})")
    return arr


def _validate(N, D, loss, *, min_points: int = 5):
    N, D, L = _positive("N", N).ravel(), _positive("D", D).ravel(), _positive("loss", loss).ravel()
    if not (len(N) == len(D) == len(L)):
        raise ValueError(f"N, D and loss must have the same length, got {len(N)}, {len(D)}, {len(L)}")
    if len(N) < min_points:
        raise ValueError(f"need at least {min_points} points to fit {min_points} parameters, got {len(N)}")
    return N, D, L


_BLAS = []  # one ThreadpoolController, made on first use: it scans the loaded libraries once (≈3 ms)


def _one_blas_thread():
    """Run BLAS single-threaded for a while (threadpoolctl). L-BFGS-B makes thousands of tiny BLAS calls;
    on a busy 2-core machine a second BLAS thread spin-waits and made each fit ≈15× slower (measured here)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())  # numpy's and scipy's BLAS are loaded by now (imports above)
    return _BLAS[0].limit(limits=1, user_api="blas")


# ----------------------------------------------------------------------------- the objective

def huber(r, delta: float = HUBER_DELTA):
    """Huber loss: r²/2 inside |r| ≤ δ, δ·(|r| − δ/2) outside."""
    r = np.asarray(r, dtype=np.float64)
    return np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def _terms(theta, logN, logD):
    """The three LSE arguments for parameter rows theta (..., 5) = (a, b, e, α, β); shape (..., n, 3)."""
    a, b, e, al, be = (theta[..., i : i + 1] for i in range(5))  # each (..., 1)
    return np.stack([a - al * logN, b - be * logD, np.broadcast_to(e, (a - al * logN).shape)], axis=-1)


def objective(theta, logN, logD, logL, delta: float = HUBER_DELTA):
    """Σ_i Huber_δ(LSE(a − α log N_i, b − β log D_i, e) − log L_i); theta (5,) or (k, 5) for many at once."""
    theta = np.asarray(theta, dtype=np.float64)
    r = np.logaddexp.reduce(_terms(theta, logN, logD), axis=-1) - logL  # (..., n)
    return huber(r, delta).sum(axis=-1)


def _objective_and_grad(theta, logN, logD, logL, delta):
    """The objective for one theta and its exact gradient (written out: L-BFGS calls it thousands of times)."""
    a, b, e, al, be = theta
    t1, t2 = a - al * logN, b - be * logD  # (n,)
    m = np.maximum(np.maximum(t1, t2), e)
    w1, w2, w3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = w1 + w2 + w3
    r = m + np.log(s) - logL  # residual in log space (n,)
    ar = np.abs(r)
    inside = ar <= delta
    f = np.where(inside, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
    g = np.clip(r, -delta, delta) / s  # Huber's derivative times the softmax normaliser
    gw1, gw2 = g @ w1, g @ w2
    return float(f), np.array([gw1, gw2, g @ w3, -(g * w1) @ logN, -(g * w2) @ logD])


def _to_fit(theta, obj, message, n) -> ChinchillaFit:
    a, b, e, al, be = (float(v) for v in theta)
    return ChinchillaFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=al, beta=be,
                         objective=float(obj), message=message, n_points=n)


def paper_grid() -> np.ndarray:
    """The paper's 4,500 starts as rows (a, b, e, α, β)."""
    return np.array(list(itertools.product(GRID_A, GRID_B, GRID_E, GRID_ALPHA, GRID_BETA)))


def lbfgs(theta0, N, D, loss, *, delta: float = HUBER_DELTA, options: dict | None = None):
    """One L-BFGS run from theta0 = (a, b, e, α, β); ``options=None`` uses scipy's default tolerances.

    Returns scipy's OptimizeResult (``.fun``, ``.x``, ``.nit``, ``.message``). The notebook uses it
    to show that the defaults stop early on this tiny objective.
    """
    N, D, L = _validate(N, D, loss)
    args = (np.log(N), np.log(D), np.log(L), delta)
    with _one_blas_thread():
        return minimize(_objective_and_grad, np.asarray(theta0, dtype=np.float64), args=args, jac=True,
                        method="L-BFGS-B", options=options or {})


def _theta(fit: ChinchillaFit) -> np.ndarray:
    return np.array([math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta])


def fit_chinchilla(N, D, loss, *, delta: float = HUBER_DELTA, warm_start=None, maxiter: int = TIGHT["maxiter"]) -> ChinchillaFit:
    """Fit L = E + A/N^α + B/D^β as in Hoffmann et al. 2022 (Approach 3), converged to the optimum.

    The 4,500-point grid is evaluated at once and the best ``N_POLISH`` starts are polished by
    L-BFGS with tight tolerances; the lowest objective wins. ``warm_start`` (a ChinchillaFit, e.g.
    the full-data fit inside a bootstrap) replaces the grid with that single start.
    Deterministic: no random starts. ``maxiter`` caps L-BFGS steps per start.
    """
    N, D, L = _validate(N, D, loss)
    if not (isinstance(delta, (int, float)) and delta > 0):
        raise ValueError(f"delta must be a positive number, got {delta!r}")
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    if warm_start is None:
        grid = paper_grid()
        values = np.concatenate([objective(chunk, logN, logD, logL, delta) for chunk in np.array_split(grid, 9)])
        starts = [grid[i] for i in np.argsort(values, kind="stable")[:N_POLISH]]
    else:
        starts = [_theta(warm_start)]
    # L-BFGS runs on centred coordinates a' = a − α·mean(log N), b' = b − β·mean(log D): the same
    # objective and optimum, but a and α no longer move together, so it converges in far fewer steps.
    cN, cD = logN.mean(), logD.mean()
    shift = lambda th, sign: th + sign * np.array([th[3] * cN, th[4] * cD, 0.0, 0.0, 0.0])
    best = None
    with _one_blas_thread():
        for theta0 in starts:
            res = minimize(_objective_and_grad, shift(np.asarray(theta0, dtype=np.float64), -1),
                           args=(logN - cN, logD - cD, logL, delta), jac=True, method="L-BFGS-B",
                           options=dict(TIGHT, maxiter=maxiter))
            if best is None or res.fun < best.fun - 1e-18:
                best = res
    best.x = shift(best.x, +1)
    if best.x[3] <= 0 or best.x[4] <= 0:
        raise ValueError(f"the fit found a non-positive exponent (alpha={best.x[3]:.3g}, beta={best.x[4]:.3g}); "
                         "the data do not look like a power law in N and D")
    return _to_fit(best.x, best.fun, str(best.message), len(N))


# ----------------------------------------------------------------------------- uncertainty

def bootstrap_fits(N, D, loss, *, n_resamples: int, seed: int, delta: float = HUBER_DELTA) -> list[ChinchillaFit]:
    """Refit on ``n_resamples`` resamples of the runs drawn with replacement (Besiroglu et al. 2024).

    Each refit warm-starts from the full-data optimum (the grid is not re-run) with at most
    ``BOOTSTRAP_MAXITER`` L-BFGS steps.
    """
    N, D, L = _validate(N, D, loss)
    positive_int("n_resamples", n_resamples)
    full = fit_chinchilla(N, D, L, delta=delta)
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(N), len(N))
        while len(np.unique(idx)) < 5:  # a resample needs 5 distinct runs to pin 5 parameters
            idx = rng.integers(0, len(N), len(N))
        try:
            fits.append(fit_chinchilla(N[idx], D[idx], L[idx], delta=delta, warm_start=full, maxiter=BOOTSTRAP_MAXITER))
        except ValueError:  # a degenerate resample (non-positive exponent): skip it, as Epoch did
            continue
    return fits


def percentile_interval(values, level: float = 0.8) -> tuple[float, float]:
    """Central ``level`` interval of samples, e.g. level=0.8 → (10th, 90th) percentiles."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.any(np.isnan(v)):
        raise ValueError("need a non-empty array of numbers without NaN")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def fit_intervals(fits, level: float = 0.8) -> dict:
    """{'E': (lo, hi), 'A': …, 'alpha': …, 'beta': …} from bootstrap fits."""
    if not fits:
        raise ValueError("fits is empty")
    return {k: percentile_interval([getattr(f, k) for f in fits], level) for k in PARAM_NAMES}


def predict_interval(fits, N, D, level: float = 0.8) -> tuple[float, float]:
    """Central interval of the predicted loss at (N, D) over bootstrap fits."""
    if not fits:
        raise ValueError("fits is empty")
    return percentile_interval([float(f.predict(N, D)) for f in fits], level)


# ----------------------------------------------------------------------------- approach 2

def isoflop_optimum(N, loss) -> float:
    """N at the minimum of a parabola fitted to loss vs log N (one compute budget; Approach 2)."""
    N, L = _positive("N", N).ravel(), _positive("loss", loss).ravel()
    if len(N) != len(L):
        raise ValueError(f"N and loss must have the same length, got {len(N)} and {len(L)}")
    if len(np.unique(N)) < 3:
        raise ValueError(f"a parabola needs at least 3 distinct model sizes, got {len(np.unique(N))}")
    c2, c1, _ = np.polyfit(np.log(N), L, 2)
    if c2 <= 0:
        raise ValueError("loss vs log N curves downward (no valley): add smaller and larger models to this budget")
    return float(np.exp(-c1 / (2 * c2)))


def power_law_fit(C, y) -> tuple[float, float]:
    """(k, a) with y ≈ k·C^a, least squares in log-log space (N_opt(C), D_opt(C))."""
    C, y = _positive("C", C).ravel(), _positive("y", y).ravel()
    if len(C) != len(y) or len(C) < 2:
        raise ValueError(f"need two equally long arrays with >= 2 points, got {len(C)} and {len(y)}")
    a, logk = np.polyfit(np.log(C), np.log(y), 1)
    return float(np.exp(logk)), float(a)

