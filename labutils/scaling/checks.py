"""Checkers for 01_scaling_laws. Each compares the learner's function with the reference in
``labutils.scaling.law`` (or with ``labutils.model.count_params``) on fixed cases; where a wrong answer
has a recognisable symptom, ``diagnose`` names the mistake (tests/test_scaling_checkers.py tries them).

    >>> check_tinygpt_params(lambda d, L, V, T: (0, 0))   # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    CheckFailed: it prints which cases are wrong and why, then raises
"""

from __future__ import annotations

import math

import numpy as np

from labutils.checks import Case, Exercise, run_cases
from labutils.model import GPTConfig, count_params
from labutils.scaling.law import ChinchillaFit, isoflop_optimum, objective, predict_interval

NOTEBOOK = "01_scaling_laws"
EX_PARAMS = Exercise(NOTEBOOK, "1.1", "tinygpt_params")
EX_ISOFLOP = Exercise(NOTEBOOK, "1.2", "isoflop_vertex")
EX_OBJECTIVE = Exercise(NOTEBOOK, "1.3", "huber_objective")
EX_COMPUTE_OPTIMAL = Exercise(NOTEBOOK, "1.4", "compute_optimal")
EX_INTERVAL = Exercise(NOTEBOOK, "1.5", "prediction_interval")
EX_SCORE = Exercise(NOTEBOOK, "1.6", "score_prediction")


def _close(x, y, rtol=1e-6) -> bool:
    try:
        return math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _pair(got):
    """A learner's two-number answer as floats, or None when it is not two numbers."""
    try:
        a, b = got
        return float(a), float(b)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- 1.1 parameters

def _params_diagnose(got, want, case):
    d, L, V, T = case.args
    g = _pair(got)
    if g is None:
        return None
    da, dn = g[0] - want[0], g[1] - want[1]
    tables = [(V * d, "a V·d table (the token table or the untied head)"), (T * d, "the position table (T·d)")]
    if V == T:
        tables = [(V * d, "a V·d or T·d table (token table, head or position table)")]
    for size, what in tables:
        if da == -size and dn == 0:
            return f"all parameters are short by exactly {what}: count it"
        if dn == size:
            return f"{what} was counted as non-embedding; embedding means the token table, position table and head"
    inside = {9 * d * L: "the biases (9·d per block)",
              4 * d * L + 2 * d: "the LayerNorms (2·d weights and biases each)",
              4 * d * L: "the blocks' LayerNorms (two per block, 2·d each)",
              2 * d: "the final LayerNorm (2·d)"}
    for size, what in inside.items():
        if da == dn == -size:
            return f"both counts are short by exactly {what}"
    if g[1] == 12 * L * d * d:
        return ("12·n_layers·d² is Kaplan's approximation; the exercise asks for the exact count, "
                "biases and LayerNorms included")
    return None


def check_tinygpt_params(tinygpt_params) -> None:
    shapes = [(8, 1, 64, 64), (32, 2, 64, 64), (64, 4, 64, 128), (768, 12, 50257, 1024)]
    cases = []
    for d, L, V, T in shapes:
        cfg = GPTConfig(V, T, d, L, max(1, d // 64))
        want = (count_params(cfg, embeddings=True), count_params(cfg, embeddings=False))
        cases.append(Case(f"d_model={d}, n_layers={L}, V={V}, T={T}", (d, L, V, T), want, rtol=0, atol=0, unit="params"))
    run_cases(EX_PARAMS, tinygpt_params, cases, diagnose=_params_diagnose,
              hint="per block: two LayerNorms (2·d each), qkv (3d² + 3d), proj (d² + d), up (4d² + 4d), down (4d² + d); "
                   "then token and position tables (V·d, T·d), the final LayerNorm (2d) and the head (V·d, no bias)",
              cost=lambda: f"GPT-2-small shape with an untied head: {_embedding_share(768, 12, 50257, 1024):.0%} of all parameters are embeddings or head")


def _embedding_share(d, L, V, T) -> float:
    cfg = GPTConfig(V, T, d, L, max(1, d // 64))
    return 1 - count_params(cfg, embeddings=False) / count_params(cfg, embeddings=True)


# ----------------------------------------------------------------------------- 1.2 IsoFLOP vertex

def _isoflop_diagnose(got, want, case):
    N, loss = case.args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None
    c2, c1, _ = np.polyfit(N, loss, 2)
    d2, d1, _ = np.polyfit(np.log(N), loss, 2)
    if _close(g, -c1 / (2 * c2)):
        return "the parabola was fitted in N; fit it in log N (the valley is symmetric in log N, not in N)"
    if _close(g, N[int(np.argmin(loss))]):
        return "that is the best *sampled* size; the vertex of the fitted parabola lies between the samples"
    if _close(g, math.log(want)):
        return "that is log N at the vertex: return N = exp(x*)"
    if _close(g, math.exp(-d1 / d2)):
        return "the vertex of c2·x² + c1·x + c0 is at −c1 / (2·c2): the factor 2 is missing"
    d0 = np.polyfit(np.log(N), loss, 2)[2]
    if _close(g, math.exp(-d1 / (2 * d0))):
        return "np.polyfit returns the highest power first: c2, c1, c0 = np.polyfit(x, y, 2)"
    return None


def check_isoflop_vertex(isoflop_vertex) -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i, (n0, curv) in enumerate([(2e4, 0.1), (3e5, 0.03), (5e3, 0.2)]):
        N = np.exp(np.linspace(math.log(n0) - 1.5, math.log(n0) + 2.0, 6))
        loss = 3.5 + curv * (np.log(N) - math.log(n0)) ** 2 + 0.002 * rng.standard_normal(6)
        label = f"budget {i + 1}: 6 sizes {N[0]:.3g}–{N[-1]:.3g}, valley near N = {n0:.0e}, noise 0.002 nats"
        cases.append(Case(label,
                          (N, loss), isoflop_optimum(N, loss), rtol=1e-6, unit="params"))
    run_cases(EX_ISOFLOP, isoflop_vertex, cases, diagnose=_isoflop_diagnose,
              hint="fit loss = c2·x² + c1·x + c0 with x = log N (np.polyfit(x, loss, 2)); the vertex is x* = −c1 / (2·c2); return exp(x*)")


# ----------------------------------------------------------------------------- 1.3 Huber objective

def _residuals(theta, logN, logD, logL):
    a, b, e, al, be = theta
    return np.logaddexp.reduce([a - al * logN, b - be * logD, np.full_like(logN, e)], axis=0) - logL


def _huber_diagnose(got, want, case):
    theta, logN, logD, logL, delta = case.args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None
    r = _residuals(theta, logN, logD, logL)
    out = np.abs(r) > delta
    if out.any() and _close(g, want + out.sum() * delta**2 / 2, 1e-9):
        return "each point outside δ costs δ²/2 too much: the linear branch is δ·(|r| − δ/2), not δ·|r|"
    if _close(g, 0.5 * np.sum(r**2), 1e-9):
        return "that is the plain squared error r²/2 everywhere: points with |r| > δ must use the linear branch"
    if _close(g, want / len(r), 1e-9):
        return f"that is the mean over the {len(r)} runs; the objective is their sum"
    if delta != 1e-3 and _close(g, float(objective(theta, logN, logD, logL, 1e-3)), 1e-9):
        return "that used δ = 1e-3 whatever `delta` was passed: use the argument"
    a, b, e, al, be = theta
    lin = np.log(e + a / np.exp(logN) ** al + b / np.exp(logD) ** be) if min(a, b, e) > 0 else None
    if lin is not None and _close(g, np.where(np.abs(lin - logL) <= delta, 0.5 * (lin - logL) ** 2,
                                              delta * (np.abs(lin - logL) - delta / 2)).sum(), 1e-9):
        return ("a, b, e are logs: the prediction is LSE(a − α·logN, b − β·logD, e), "
                "i.e. A = e^a, B = e^b, E = e^e")
    return None


def check_huber_objective(huber_objective) -> None:
    rng = np.random.default_rng(1)
    logN = np.log(np.logspace(4, 6, 12))
    logD = np.log(np.logspace(5, 8, 12))[rng.permutation(12)]
    logL = np.log(3.3 + 40 / np.exp(logN) ** 0.4 + 90 / np.exp(logD) ** 0.35) + 0.01 * rng.standard_normal(12)
    true = np.array([math.log(40), math.log(90), math.log(3.3), 0.4, 0.35])
    thetas = [np.array([3.7, 4.5, 1.19, 0.4, 0.35]), np.array([0.0, 5.0, -1.0, 0.5, 1.0]),
              np.array([5.0, 5.0, 1.2, 0.3, 0.3]), true]
    cases = []
    for t, dl in [(thetas[0], 1e-3), (thetas[1], 1e-3), (thetas[2], 1e-3), (thetas[0], 0.5), (thetas[3], 0.01)]:
        n_in = int((np.abs(_residuals(t, logN, logD, logL)) <= dl).sum())
        cases.append(Case(f"theta = {np.round(t, 2).tolist()}, δ = {dl:g}, 12 runs, {n_in} of 12 with |r| ≤ δ",
                          (t, logN, logD, logL, dl), float(objective(t, logN, logD, logL, dl)), rtol=1e-7))
    run_cases(EX_OBJECTIVE, huber_objective, cases, diagnose=_huber_diagnose,
              hint="prediction = logaddexp of (a − α·logN, b − β·logD, e); residual r = prediction − logL; "
                   "Huber is r²/2 where |r| ≤ δ and δ·(|r| − δ/2) elsewhere; sum over points")


# ----------------------------------------------------------------------------- 1.4 compute-optimal

def _allocation(law, C, c_per=6.0):
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    return G * (C / c_per) ** (b / (a + b)), (C / c_per) ** (a / (a + b)) / G


def _optimal_diagnose(got, want, case):
    law, C = case.args
    g = _pair(got)
    if g is None:
        return None
    for c_per, what in [(2.0, "C = 2·N·D (forward pass only)"), (1.0, "C = N·D (the 6 was dropped)")]:
        if _close(g[0], _allocation(law, C, c_per)[0]):
            return f"that allocation uses {what}; training costs C = 6·N·D"
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    if _close(g[0], G * (C / 6) ** (a / (a + b))):
        return "N_opt's exponent is β/(α+β) (the data exponent on top), not α/(α+β)"
    if _close(g[0], (C / 6) ** (b / (a + b)) / G):
        return "G is inverted: G = (α·A / (β·B))^(1/(α+β))"
    if _close(g[0], want[1]) and _close(g[1], want[0]):
        return "N and D are swapped: return (N_opt, D_opt)"
    return None


def check_compute_optimal(compute_optimal) -> None:
    laws = [("Chinchilla (unrounded)", ChinchillaFit(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491),
             5.76e23),
            ("Epoch refit", ChinchillaFit(E=1.817, A=482.0, B=2085.0, alpha=0.348, beta=0.366), 5.76e23),
            ("a tiny law", ChinchillaFit(E=3.2, A=30.0, B=80.0, alpha=0.5, beta=0.4), 1e12)]
    cases = [Case(f"{name}: A={law.A:g}, B={law.B:g}, α={law.alpha:g}, β={law.beta:g}; C = {C:.2e} FLOPs",
                  (law, C), law.compute_optimal(C), rtol=1e-6) for name, law, C in laws]
    run_cases(EX_COMPUTE_OPTIMAL, compute_optimal, cases, diagnose=_optimal_diagnose,
              hint="G = (α·A / (β·B))^(1/(α+β)); N_opt = G·(C/6)^(β/(α+β)); D_opt = (C/6)^(α/(α+β)) / G — return (N_opt, D_opt)",
              cost=lambda: f"Chinchilla's unrounded law puts {laws[0][1].compute_optimal(5.76e23)[0] / 1e9:.0f}B parameters at the Gopher budget")


# ----------------------------------------------------------------------------- 1.5 interval

def _interval_diagnose(got, want, case):
    fits, N, D, level = case.args
    g = _pair(got)
    if g is None:
        return None
    preds = np.array([float(f.predict(N, D)) for f in fits])
    q = [50 * (1 - level), 50 * (1 + level)]
    if _close(g[0], want[1], 1e-9) and _close(g[1], want[0], 1e-9):
        return "the ends are swapped: return (lo, hi)"
    if _close(g[0], np.percentile(preds, 100 * (1 - level))) and _close(g[1], np.percentile(preds, 100 * level)):
        return (f"those are the {100 * (1 - level):g}th and {100 * level:g}th percentiles, "
                f"a {2 * level - 1:.0%} interval; "
                f"a central {level:.0%} interval leaves {50 * (1 - level):g}% in each tail")
    for method in ("lower", "higher", "nearest", "midpoint", "hazen", "weibull", "median_unbiased"):
        if np.allclose(g, np.percentile(preds, q, method=method), rtol=1e-12) and not np.allclose(g, want, rtol=1e-9):
            return (f"np.percentile(..., method='{method}'); "
                    "the convention here is numpy's default, linear interpolation")
    P = np.array([[f.E, f.A, f.B, f.alpha, f.beta] for f in fits])  # (fits, 5)
    ends = np.percentile(P, q, axis=0)  # (2, 5): each parameter's own percentiles
    if _close(g[0], ChinchillaFit(*ends[0]).predict(N, D)) or _close(g[0], ChinchillaFit(*ends[1]).predict(N, D)):
        return ("those percentiles were taken over each parameter separately, then plugged into the law; "
                "take them over the fits' *predictions* at (N, D), one prediction per fit")
    z = {0.8: 1.2816, 0.95: 1.96}.get(level, 0)
    if z and abs(g[0] - (preds.mean() - z * preds.std())) < 1e-3 * preds.std() + 1e-4:
        return "that is mean ± z·std, a normal approximation; take percentiles of the predictions themselves"
    return None


def check_prediction_interval(prediction_interval) -> None:
    rng = np.random.default_rng(2)
    fits = [ChinchillaFit(E=3.2 + 0.05 * rng.standard_normal(), A=30.0 * math.exp(0.2 * rng.standard_normal()),
                          B=80.0, alpha=0.5 + 0.03 * rng.standard_normal(), beta=0.4) for _ in range(50)]
    cases = [Case(f"50 fits, N={N:.0e}, D={D:.0e}, level={lv}", (fits, N, D, lv), predict_interval(fits, N, D, lv),
                  rtol=1e-9, unit="nats")
             for N, D, lv in [(1e4, 1e6, 0.8), (1e5, 1e7, 0.8), (1e5, 1e7, 0.95)]]
    run_cases(EX_INTERVAL, prediction_interval, cases, diagnose=_interval_diagnose,
              hint="predict the loss with every fit, then take np.percentile at 50·(1 − level) and 50·(1 + level); return (lo, hi)")


# ----------------------------------------------------------------------------- 1.6 score

def score_reference(predicted: float, measured: float, floor: float) -> tuple[float, float]:
    """(relative error on the total loss, relative error on the reducible loss measured − floor).

    Absolute errors, as fractions (not percent):

        >>> [round(x, 4) for x in score_reference(3.50, 3.45, 3.10)]
        [0.0145, 0.1429]
    """
    return abs(predicted - measured) / measured, abs(predicted - measured) / (measured - floor)


def _score_diagnose(got, want, case):
    p, m, f = case.args
    g = _pair(got)
    if g is None:
        return None
    if p < m and g[0] < 0:
        return "a negative error: the convention is the absolute error |predicted − measured|"
    if _close(g[1], want[0]) and _close(g[0], want[0]):
        return "both errors divide by the total loss; the second divides by the reducible loss, measured − floor"
    if _close(g[0], want[0] * 100) or _close(g[1], want[1] * 100):
        return "that is a percentage; return fractions (0.10 for 10%)"
    if _close(g[0], abs(p - m) / p) or _close(g[1], abs(p - m) / (p - f)):
        return "divide by the *measured* loss (and measured − floor), not by the prediction"
    return None


def check_score_prediction(score_prediction) -> None:
    cases = [Case(f"predicted {p}, measured {m}, floor {f} ({'over' if p > m else 'under'}-prediction)", (p, m, f),
                  score_reference(p, m, f), rtol=1e-9)
             for p, m, f in [(3.50, 3.45, 3.10), (2.0, 2.2, 1.5), (3.20, 3.21, 3.19)]]
    run_cases(EX_SCORE, score_prediction, cases, diagnose=_score_diagnose,
              hint="both errors share the numerator |predicted − measured|; divide once by the measured loss, "
                   "once by what is left above the floor (measured − floor)")
