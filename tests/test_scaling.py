"""Tests for labutils.scaling: the parametric fit against known laws and closed forms, the bootstrap,
bad inputs, and a reproduction of stored sweep points."""

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from labutils import torch_threads
from labutils.scaling import (
    ChinchillaFit,
    bootstrap_fits,
    chinchilla_loss,
    fit_chinchilla,
    fit_intervals,
    isoflop_optimum,
    lbfgs,
    objective,
    percentile_interval,
    predict_interval,
)

CHINCHILLA_UNROUNDED = dict(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)  # Hoffmann et al. 2022 (arXiv 2203.15556), unrounded
GOPHER_FLOPS = 5.76e23  # Hoffmann et al. 2022


def synthetic(noise, seed=0, law=None, budgets=9, sizes=8):
    """A Chinchilla-like IsoFLOP grid (9 budgets × 8 sizes) from a known law, multiplicative noise."""
    law = law or dict(E=1.8, A=450.0, B=1500.0, alpha=0.35, beta=0.36)
    rng = np.random.default_rng(seed)
    N, D = [], []
    for C in np.logspace(18, 22, budgets):
        n_opt = math.sqrt(C / (6 * 20))
        for n in n_opt * np.logspace(-1, 1, sizes):
            N.append(n)
            D.append(C / (6 * n))
    N, D = np.array(N), np.array(D)
    L = chinchilla_loss(N, D, **law) * (1 + noise * rng.standard_normal(len(N)))
    return N, D, L, law


def test_chinchilla_loss_matches_formula():
    got = chinchilla_loss(np.array([1e9, 7e10]), np.array([2e10, 1.4e12]), **CHINCHILLA_UNROUNDED)
    want = [1.6934 + 406.40 / n**0.33917 + 410.72 / d**0.28491 for n, d in [(1e9, 2e10), (7e10, 1.4e12)]]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_recovery_from_known_law():
    N, D, L, law = synthetic(noise=0.01)
    fit = fit_chinchilla(N, D, L)
    assert abs(fit.alpha - law["alpha"]) < 0.03 and abs(fit.beta - law["beta"]) < 0.03, fit
    C = 10 * (6 * N * D).max()
    n, d = ChinchillaFit(**law).compute_optimal(C)
    assert abs(fit.predict(n, d) / chinchilla_loss(n, d, **law) - 1) < 0.01


def test_fit_reaches_the_optimum():
    """No optimiser started from the fit (Nelder–Mead, tight L-BFGS) finds a lower objective."""
    N, D, L, _ = synthetic(noise=0.01, seed=3)
    fit = fit_chinchilla(N, D, L)
    theta = np.array([math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta])
    args = (np.log(N), np.log(D), np.log(L))
    nm = minimize(objective, theta, args=args, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-16, maxiter=20000))
    assert nm.fun >= fit.objective * (1 - 1e-6)
    assert math.isclose(objective(theta, *args), fit.objective, rel_tol=1e-9)
    # scipy's default tolerances stop early on this tiny objective (Besiroglu et al. 2024)
    start = theta + np.array([0.3, -0.3, 0.05, 0.02, -0.02])
    default = lbfgs(start, N, D, L)
    assert default.fun > fit.objective * 1.01


def test_fit_is_deterministic():
    N, D, L, _ = synthetic(noise=0.02, seed=1, budgets=4, sizes=5)
    assert fit_chinchilla(N, D, L).params == fit_chinchilla(N, D, L).params


def test_compute_optimal_matches_brute_force():
    law = ChinchillaFit(E=1.8, A=450.0, B=1500.0, alpha=0.35, beta=0.36)
    for C in (1e12, 1e18, 5.76e23):
        n, d = law.compute_optimal(C)
        res = minimize_scalar(lambda logn: float(law.predict(math.exp(logn), C / (6 * math.exp(logn)))),
                              bounds=(0, 60), method="bounded", options=dict(xatol=1e-10))
        assert math.isclose(n, math.exp(res.x), rel_tol=1e-4)
        assert math.isclose(6 * n * d, C, rel_tol=1e-12)


def test_chinchilla_unrounded_is_40B_at_gopher_budget():
    n, _ = ChinchillaFit(**CHINCHILLA_UNROUNDED).compute_optimal(GOPHER_FLOPS)
    assert abs(n / 40e9 - 1) < 0.03, n
    n_rounded, _ = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28).compute_optimal(GOPHER_FLOPS)
    assert abs(n_rounded / 32e9 - 1) < 0.03, n_rounded  # rounding alone moves N_opt by 20%


def test_bootstrap_intervals_shrink_with_noise_and_are_seeded():
    widths = []
    for noise in (0.03, 0.003):
        N, D, L, _ = synthetic(noise=noise, seed=2, budgets=5, sizes=5)
        fits = bootstrap_fits(N, D, L, n_resamples=20, seed=0)
        lo, hi = fit_intervals(fits)["alpha"]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3, widths
    N, D, L, _ = synthetic(noise=0.01, seed=2, budgets=4, sizes=5)
    a = bootstrap_fits(N, D, L, n_resamples=5, seed=7)
    b = bootstrap_fits(N, D, L, n_resamples=5, seed=7)
    assert [f.params for f in a] == [f.params for f in b]
    lo, hi = predict_interval(a, 1e10, 2e11)
    preds = [float(f.predict(1e10, 2e11)) for f in a]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(preds, [10, 90])), rel=1e-12)  # level 0.8: 10th and 90th
    assert min(preds) <= lo < hi <= max(preds)  # resampled fits disagree, so the interval has width


def test_percentile_interval():
    assert np.allclose(percentile_interval(np.arange(101), 0.8), (10.0, 90.0))
    with pytest.raises(ValueError, match="level"):
        percentile_interval([1, 2], 1.5)


def test_isoflop_optimum_recovers_parabola_vertex():
    N = np.logspace(3, 6, 7)
    loss = 3.0 + 0.1 * (np.log(N) - math.log(2e4)) ** 2
    assert math.isclose(isoflop_optimum(N, loss), 2e4, rel_tol=1e-9)
    with pytest.raises(ValueError, match="valley"):
        isoflop_optimum(N, 3.0 - 0.1 * (np.log(N) - 9) ** 2)


@pytest.mark.parametrize("N, D, L, match", [
    ([1, 2, 3, 4, -5], [1] * 5, [1] * 5, "N must be positive"),
    ([1] * 5, [1, 2, 0, 4, 5], [1] * 5, "D must be positive"),
    ([1] * 5, [1] * 5, [1, 2, 3, 4, float("nan")], "loss contains NaN"),
    ([1] * 5, [1] * 4, [1] * 5, "same length"),
    ([1] * 4, [1] * 4, [1] * 4, "at least 5 points"),
    (["a"] * 5, [1] * 5, [1] * 5, "N must be numbers"),
])
def test_bad_inputs(N, D, L, match):
    with pytest.raises(ValueError, match=match):
        fit_chinchilla(N, D, L)


def test_bad_law_and_budget():
    with pytest.raises(ValueError, match="alpha"):
        ChinchillaFit(E=1.0, A=1.0, B=1.0, alpha=-0.3, beta=0.3)
    with pytest.raises(ValueError, match="C must be positive"):
        ChinchillaFit(**CHINCHILLA_UNROUNDED).compute_optimal(0.0)
    with pytest.raises(ValueError, match="3 distinct"):
        isoflop_optimum([1, 2], [3, 4])


# ----------------------------------------------------------------------------- the stored sweep

def test_stored_sweep_design():
    from labutils.scaling import BIG_FACTOR, load_sweep

    s = load_sweep()
    budgets = sorted({r["budget"] for r in s["runs"]})
    assert len(budgets) >= 4 and math.log10(budgets[-1] / budgets[0]) >= 1.2
    for C in budgets:
        rows = [r for r in s["runs"] if r["budget"] == C]
        assert len(rows) >= 5
        assert all(abs(r["flops"] / C - 1) < 0.05 for r in rows)  # whole steps: a little under budget
    assert s["big"]["budget"] >= BIG_FACTOR * budgets[-1] and len(s["big"]["runs"]) >= 3
    assert {"command", "versions", "design", "best_lr"} <= set(s["meta"])


def test_stored_sweep_reproduces():
    """Re-train the two cheapest stored points with the cache bypassed.

    Tolerance 0.01 nats: with the same seed, thread count and torch build the run is bit-for-bit
    the same (difference 0); another CPU or torch version changes float rounding in the matmuls,
    which over these few dozen Adam steps moves the final loss by well under 0.01 nats — below the
    0.02–0.1 nats that separate neighbouring sizes of an IsoFLOP valley, so a pass means the stored
    valley is real. The cheapest points (fewest steps) keep the test to seconds.
    """

    from labutils.data import default_language
    from labutils.model import GPTConfig
    from labutils.scaling import load_sweep
    from labutils.train import train_lm

    s = load_sweep()
    smallest = min(r["budget"] for r in s["runs"])
    rows = sorted((r for r in s["runs"] if r["budget"] == smallest), key=lambda r: -r["n_params"])[:2]  # fewest steps
    with torch_threads(s["meta"]["torch_threads"]):
        for r in rows:
            got = train_lm(GPTConfig(**r["config"]), default_language(), tokens=r["tokens"],
                           batch_size=s["meta"]["design"]["batch_size"], lr=r["lr"], seed=r["seed"],
                           cache=False, progress=False)
            assert abs(got.eval_loss - r["eval_loss"]) < 0.01, (r["config"], got.eval_loss, r["eval_loss"])
            assert got.tokens == r["tokens"] and got.n_params == r["n_params"]


# ----------------------------------------------------------------------------- the sweep machinery

@pytest.mark.slow
def test_run_sweep_tiny_resumes_after_an_interruption(tmp_path, monkeypatch):
    """The ``tiny`` preset end to end: interrupted after two runs, a second call trains only what is
    missing and ends with what an uninterrupted sweep stores."""
    import labutils.train
    from labutils.scaling import design, load_sweep, run_sweep

    real, calls = labutils.train.train_lm, []

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        if interrupt_after is not None and len(calls) > interrupt_after:
            raise KeyboardInterrupt  # what Ctrl-C does mid-sweep
        return real(*args, **kwargs)

    monkeypatch.setattr(labutils.train, "train_lm", counting)
    out = tmp_path / "sweep.json"
    interrupt_after = 2
    with pytest.raises(KeyboardInterrupt):
        run_sweep("tiny", out=out, progress=False)
    partial = load_sweep(out)
    assert len(partial["lr_sweep"]) == 2 and partial["runs"] == [] and "finished" not in partial["meta"]

    d = design("tiny")
    n_lr = len({g["size"] for g in d["grid"]}) * len(d["lrs"])
    total = n_lr + len(d["grid"]) + len(d["big_seeds"])  # every run the sweep records
    calls.clear()
    interrupt_after = None
    res = run_sweep("tiny", out=out, progress=False)
    assert len(calls) == total - 2  # the two stored runs were not trained (or even looked up) again
    assert json.loads(json.dumps(res)) == load_sweep(out) and "finished" in res["meta"]  # what was returned was saved
    assert len(res["lr_sweep"]) == n_lr and len(res["runs"]) == len(d["grid"])
    assert [r["seed"] for r in res["big"]["runs"]] == d["big_seeds"]
    assert res["big"]["interval"][0] < res["big"]["prediction"] < res["big"]["interval"][1]
    assert res["lr_sweep"][:2] == partial["lr_sweep"]  # kept, not redone

    fresh = run_sweep("tiny", out=tmp_path / "fresh.json", progress=False)  # uninterrupted (cache hits)
    key = lambda rows: [(r.get("size"), r.get("budget"), r.get("seed"), r["eval_loss"]) for r in rows]  # noqa: E731
    for part in ("lr_sweep", "runs"):
        assert key(res[part]) == key(fresh[part])
    assert key(res["big"]["runs"]) == key(fresh["big"]["runs"]) and res["big"]["interval"] == fresh["big"]["interval"]
