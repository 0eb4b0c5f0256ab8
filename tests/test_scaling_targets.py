"""Lab 01 v2: the honest FLOP count, a fit driven by any objective, Approach 2 on noise-free data,
the compute-only law, the frozen targets' design, and the benchmark command."""

import math

import numpy as np
import pytest

from labutils.model import GPTConfig, count_params, flops_per_token, honest_train_flops, train_flops
from labutils.scaling import ChinchillaFit, fit_chinchilla, isoflop_optimum, load_sweep, objective
from labutils.scaling.extras import approach2_vertices, fit_with_objective
from labutils.scaling.targets import (
    FAR_FACTOR,
    LIVE_FACTOR,
    SEEDS,
    compute_only_law,
    design_hash,
    load_targets,
    predict_compute_only,
    target_design,
)


def test_honest_flops_counts_matmuls_not_lookups():
    cfg = GPTConfig(vocab_size=64, context_length=64, d_model=12, n_layers=1, n_heads=2)
    n_all = count_params(cfg, embeddings=True)
    lookups = (cfg.vocab_size + cfg.context_length) * cfg.d_model
    attention = cfg.n_layers * cfg.context_length * cfg.d_model  # 6·L·T·d per token, divided by 6
    assert honest_train_flops(cfg, 10) == pytest.approx(6 * (n_all - lookups + attention) * 10)
    assert honest_train_flops(cfg, 10) == flops_per_token(cfg) * 10
    two = GPTConfig(64, 64, 16, 2, 2)  # at T = 64 two layers' attention equals the look-ups exactly
    assert honest_train_flops(two, 1) == train_flops(count_params(two, embeddings=True), 1)
    with pytest.raises(ValueError, match="n_tokens"):
        honest_train_flops(cfg, -1)


def test_fit_with_objective_matches_fit_chinchilla():
    sweep = load_sweep()
    N, D, L = (np.array([r[k] for r in sweep["runs"]], dtype=float) for k in ("n_params", "tokens", "eval_loss"))
    ref = fit_chinchilla(N, D, L)
    got = fit_with_objective(objective, N, D, L)
    assert abs(got.alpha - ref.alpha) < 1e-4 and abs(got.E - ref.E) < 1e-4, (got, ref)
    assert got.objective <= ref.objective * (1 + 1e-6)


def test_fit_with_objective_uses_the_given_function():
    N = np.repeat([1e4, 3e4, 1e5], 3)
    D = np.tile([1e6, 1e7, 1e8], 3)
    L = ChinchillaFit(E=3.0, A=40.0, B=90.0, alpha=0.4, beta=0.35).predict(N, D)
    calls = []

    def counting(theta, logN, logD, logL, delta):
        calls.append(1)
        return objective(theta, logN, logD, logL, delta)

    fit_with_objective(counting, N, D, L)
    assert len(calls) > 4500  # the grid, then the polish
    with pytest.raises(ValueError, match="function"):
        fit_with_objective(3.0, N, D, L)
    with pytest.raises(ValueError, match="no finite value"):
        fit_with_objective(lambda *a: float("nan"), N, D, L)


def test_approach2_vertices_recovers_a_symmetric_valley_and_shows_the_bias():
    law = ChinchillaFit(E=3.2, A=30.0, B=80.0, alpha=0.5, beta=0.4)
    C = 1e11
    n_opt = law.compute_optimal(C)[0]
    narrow = n_opt * np.exp(np.linspace(-0.05, 0.05, 5))  # a narrow window: the valley is locally a parabola
    wide = n_opt * np.exp(np.linspace(-1.5, 3.0, 9))  # a wide, lopsided window: the vertex moves
    got = approach2_vertices(law, [narrow, wide], [C, C])
    assert abs(got[0] / n_opt - 1) < 1e-3 and abs(got[1] / n_opt - 1) > 0.02, got
    assert approach2_vertices(law, [narrow], [C], isoflop_optimum)[0] == pytest.approx(got[0])
    with pytest.raises(ValueError, match="one window"):
        approach2_vertices(law, [narrow], [C, C])


def test_compute_only_law_recovers_known_parameters():
    C = np.logspace(9, 11, 6)
    E, a, b = compute_only_law(C, 3.0 + 0.5 * (C / C[0]) ** -0.3)
    assert (E, a, b) == pytest.approx((3.0, 0.5, 0.3), rel=1e-4)
    assert predict_compute_only((E, a, b), C[0], C[0]) == pytest.approx(3.5, rel=1e-6)
    with pytest.raises(ValueError, match="≥ 3 budgets"):
        compute_only_law(C[:2], [3.0, 2.9])


def test_stored_targets_follow_their_frozen_design():
    """The stored file's design is what the stored sweep gives (on another CPU the floats may move a little)."""
    stored = load_targets()
    assert stored["design_hash"] == design_hash(stored["design"])
    d, s = target_design(load_sweep()), stored["design"]
    for name, factor in (("live", LIVE_FACTOR), ("far", FAR_FACTOR)):
        assert d[name]["size"] == s[name]["size"] and d[name]["tokens"] == s[name]["tokens"]
        assert d[name]["budget"] == factor * max(d["sweep_budgets"])
        assert d[name]["n_params"] > d["largest_best_n"]  # beyond the sweep in N as well as D
        assert math.isclose(d[name]["prediction"], s[name]["prediction"], rel_tol=1e-6)
    assert d["off_frontier"]["tokens"] == s["off_frontier"]["tokens"]
    for name, runs in stored["runs"].items():  # every stored run is one of the frozen seeds, once
        assert sorted(r["seed"] for r in runs) == sorted(set(r["seed"] for r in runs))
        assert {r["seed"] for r in runs} <= set(SEEDS[name])


def test_design_hash_changes_with_the_design():
    d = dict(a=1, b=[1, 2])
    assert design_hash(d) == design_hash(dict(b=[1, 2], a=1)) and design_hash(d) != design_hash(dict(a=1, b=[1, 3]))


def test_bench_reports_positive_times():
    from labutils.scaling.bench import bench

    rows = bench(steps=2, sizes=[0], warmup=1, quiet=True)
    assert rows[0]["n_params"] == 1020 and rows[0]["tokens_per_s"] > 0
    with pytest.raises(ValueError, match="out of range"):
        bench(steps=1, sizes=[99], quiet=True)
