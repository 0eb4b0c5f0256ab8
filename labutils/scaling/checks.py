"""Checkers for 01_scaling_laws. Each compares the learner's function with the reference in
``labutils.scaling.law`` (or with ``labutils.model.count_params``) on fixed cases.

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


def check_tinygpt_params(tinygpt_params) -> None:
    shapes = [(8, 1, 64, 64), (32, 2, 64, 64), (64, 4, 64, 128), (768, 12, 50257, 1024)]
    cases = []
    for d, L, V, T in shapes:
        cfg = GPTConfig(V, T, d, L, max(1, d // 64))
        want = (count_params(cfg, embeddings=True), count_params(cfg, embeddings=False))
        cases.append(Case(f"d_model={d}, n_layers={L}, V={V}, T={T}", (d, L, V, T), want, rtol=0, atol=0, unit="params"))
    run_cases(EX_PARAMS, tinygpt_params, cases,
              hint="per block: two LayerNorms (2·d each), qkv (3d² + 3d), proj (d² + d), up (4d² + 4d), down (4d² + d); "
                   "then token and position tables (V·d, T·d), the final LayerNorm (2d) and the head (V·d, no bias)",
              cost=lambda: f"GPT-2-small shape with an untied head: {_embedding_share(768, 12, 50257, 1024):.0%} of all parameters are embeddings or head")


def _embedding_share(d, L, V, T) -> float:
    cfg = GPTConfig(V, T, d, L, max(1, d // 64))
    return 1 - count_params(cfg, embeddings=False) / count_params(cfg, embeddings=True)


def check_isoflop_vertex(isoflop_vertex) -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i, (n0, curv) in enumerate([(2e4, 0.1), (3e5, 0.03), (5e3, 0.2)]):
        N = np.exp(np.linspace(math.log(n0) - 1.5, math.log(n0) + 2.0, 6))
        loss = 3.5 + curv * (np.log(N) - math.log(n0)) ** 2 + 0.002 * rng.standard_normal(6)
        cases.append(Case(f"budget {i + 1} (6 sizes)", (N, loss), isoflop_optimum(N, loss), rtol=1e-6, unit="params"))
    run_cases(EX_ISOFLOP, isoflop_vertex, cases,
              hint="fit loss = c2·x² + c1·x + c0 with x = log N (np.polyfit(x, loss, 2)); the vertex is x* = −c1 / (2·c2); return exp(x*)")


def check_compute_optimal(compute_optimal) -> None:
    laws = [ChinchillaFit(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491),  # Hoffmann et al. 2022
            ChinchillaFit(E=1.817, A=482.0, B=2085.0, alpha=0.348, beta=0.366),  # Besiroglu et al. 2024
            ChinchillaFit(E=3.2, A=30.0, B=80.0, alpha=0.5, beta=0.4)]
    cases = [Case(f"{name}, C = {C:.2e} FLOPs", (law, C), law.compute_optimal(C), rtol=1e-6)
             for name, law, C in [("Chinchilla (unrounded)", laws[0], 5.76e23), ("Epoch refit", laws[1], 5.76e23),
                                  ("a tiny law", laws[2], 1e12)]]
    run_cases(EX_COMPUTE_OPTIMAL, compute_optimal, cases,
              hint="G = (α·A / (β·B))^(1/(α+β)); N_opt = G·(C/6)^(β/(α+β)); D_opt = (C/6)^(α/(α+β)) / G — return (N_opt, D_opt)",
              cost=lambda: f"Chinchilla's unrounded law puts {laws[0].compute_optimal(5.76e23)[0] / 1e9:.0f}B parameters at the Gopher budget")


def check_huber_objective(huber_objective) -> None:
    rng = np.random.default_rng(1)
    logN = np.log(np.logspace(4, 6, 12))
    logD = np.log(np.logspace(5, 8, 12))[rng.permutation(12)]
    logL = np.log(3.3 + 40 / np.exp(logN) ** 0.4 + 90 / np.exp(logD) ** 0.35) + 0.01 * rng.standard_normal(12)
    thetas = [np.array([3.7, 4.5, 1.19, 0.4, 0.35]), np.array([0.0, 5.0, -1.0, 0.5, 1.0]), np.array([5.0, 5.0, 1.2, 0.3, 0.3])]
    cases = [Case(f"theta = {np.round(t, 2).tolist()}, δ = {dl:g}", (t, logN, logD, logL, dl),
                  float(objective(t, logN, logD, logL, dl)), rtol=1e-7)
             for t, dl in [(thetas[0], 1e-3), (thetas[1], 1e-3), (thetas[2], 1e-3), (thetas[0], 0.5)]]
    run_cases(EX_OBJECTIVE, huber_objective, cases,
              hint="prediction = logaddexp of (a − α·logN, b − β·logD, e); residual r = prediction − logL; "
                   "Huber is r²/2 where |r| ≤ δ and δ·(|r| − δ/2) elsewhere; sum over points")


def check_prediction_interval(prediction_interval) -> None:
    rng = np.random.default_rng(2)
    fits = [ChinchillaFit(E=3.2 + 0.05 * rng.standard_normal(), A=30.0 * math.exp(0.2 * rng.standard_normal()),
                          B=80.0, alpha=0.5 + 0.03 * rng.standard_normal(), beta=0.4) for _ in range(50)]
    cases = [Case(f"50 fits, N={N:.0e}, D={D:.0e}, level={lv}", (fits, N, D, lv), predict_interval(fits, N, D, lv), rtol=1e-9, unit="nats")
             for N, D, lv in [(1e4, 1e6, 0.8), (1e5, 1e7, 0.8), (1e5, 1e7, 0.95)]]
    run_cases(EX_INTERVAL, prediction_interval, cases,
              hint="predict the loss with every fit, then take np.percentile at 50·(1 − level) and 50·(1 + level); return (lo, hi)")


def score_reference(predicted: float, measured: float, floor: float) -> tuple[float, float]:
    """(relative error on the total loss, relative error on the reducible loss measured − floor)."""
    return abs(predicted - measured) / measured, abs(predicted - measured) / (measured - floor)


def check_score_prediction(score_prediction) -> None:
    cases = [Case(f"predicted {p}, measured {m}, floor {f}", (p, m, f), score_reference(p, m, f), rtol=1e-9)
             for p, m, f in [(3.50, 3.45, 3.10), (2.0, 2.2, 1.5), (3.20, 3.21, 3.19)]]
    run_cases(EX_SCORE, score_prediction, cases,
              hint="both errors share the numerator |predicted − measured|; divide once by the measured loss, "
                   "once by what is left above the floor (measured − floor)")
