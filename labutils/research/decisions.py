"""The value of an experiment, and research taste as a noisy estimator.

* **Expected value of sample information** (EVSI) of a discrete decision: states s with a prior,
  an experiment whose observation o has rows P(o | s), actions a with payoff(a, s). Deciding now
  earns max_a Σ_s P(s)·payoff(a, s); deciding after seeing o earns, on average over o,
  Σ_o max_a Σ_s P(s)·P(o | s)·payoff(a, s) (the 1/P(o) of each posterior cancels against the weight
  P(o)). Their difference is ≥ 0: information never hurts a decision made after it.
* **Taste.** Ideas have hidden values V ~ N(0, 1); a researcher sees an estimate X correlated with V at
  ρ. Then E[V | X] = ρ·X, so picking the best of n ideas by estimate earns ρ·E[max of n standard
  normals]; an oracle (ρ = 1) earns E[max]. ``expected_max_normal`` integrates
  E[M] = ∫_0^∞ (1 − Φ(x)^n − Φ(−x)^n) dx numerically.

Left out on purpose: the cost of the experiment (compare it with the EVSI yourself), sequential
experiments, and values that are not normal.

    >>> value_of_information([0.5, 0.5], [[1, 0], [0, 1]], [[1.0, -1.0], [0.0, 0.0]])  # a perfect test
    0.5
    >>> round(taste_value(1.0, 2), 6)   # E[max of 2] = 1/√π
    0.56419
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special

from labutils import positive_int


def _array(name: str, x, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def value_of_information(prior, likelihood, payoffs) -> float:
    """E_o[max_a E[payoff | o]] − max_a E[payoff]; prior (S,), likelihood (S, O) rows P(o | s), payoffs (A, S).

    >>> value_of_information([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[1.0, -1.0], [0.0, 0.0]])  # a useless test
    0.0
    """
    prior = _array("prior", prior, 1)
    likelihood = _array("likelihood", likelihood, 2)
    payoffs = _array("payoffs", payoffs, 2)
    S = len(prior)
    if np.any(prior < 0) or not math.isclose(prior.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"prior must be non-negative and sum to 1, got sum {prior.sum():.6g}")
    if likelihood.shape[0] != S:
        raise ValueError(f"likelihood must have one row per state ({S}), got shape {likelihood.shape}")
    if np.any(likelihood < 0) or not np.allclose(likelihood.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("likelihood rows must be probabilities P(o | s): non-negative, each summing to 1")
    if payoffs.shape[1] != S:
        raise ValueError(f"payoffs must have one column per state ({S}), got shape {payoffs.shape}")
    joint = prior[:, None] * likelihood  # (S, O): P(s, o)
    with_info = float(np.sum(np.max(payoffs @ joint, axis=0)))  # Σ_o max_a Σ_s payoff(a, s)·P(s, o)
    now = float(np.max(payoffs @ prior))
    gain = with_info - now  # ≥ 0 in exact arithmetic
    return gain if gain > 1e-12 * max(1.0, abs(now), abs(with_info)) else 0.0  # rounding is no information


def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals], by numerical integration.

    >>> round(expected_max_normal(3), 6)    # 3 / (2√π)
    0.846284
    """
    positive_int("n", n)
    if n == 1:
        return 0.0

    def tails(x):  # P(M > x) − P(M < −x), computed in log space so that large n stays accurate
        return -math.expm1(n * special.log_ndtr(x)) - math.exp(n * special.log_ndtr(-x))

    peak = math.sqrt(2 * math.log(n))  # the integrand falls from 1 to 0 near here
    value, _ = integrate.quad(tails, 0.0, 40.0, points=[peak], limit=200, epsabs=1e-13, epsrel=1e-12)
    return float(value)


def taste_value(rho, n: int) -> float:
    """Expected hidden value of the best of n ideas picked by an estimate correlated at ρ: ρ·E[max of n].

    >>> round(taste_value(0.6, 10), 4)
    0.9233
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating)) or not -1 <= rho <= 1:
        raise ValueError(f"rho must be a correlation in [-1, 1], got {rho!r}")
    return float(rho) * expected_max_normal(n)
