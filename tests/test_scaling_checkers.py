"""Notebook 01's checkers: the reference passes, and wrong answers learners really write each fail,
naming the case and (where the symptom is recognisable) the mistake."""

import math

import numpy as np
import pytest

from labutils import checks
from labutils.checks import CheckFailed, use
from labutils.scaling import (
    check_compute_optimal,
    check_huber_objective,
    check_isoflop_vertex,
    check_prediction_interval,
    check_score_prediction,
    check_tinygpt_params,
    objective,
    predict_interval,
    score_reference,
)

# ----------------------------------------------------------------------------- 1.1 tinygpt_params

def params_reference(d, L, V, T):
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    non_emb = L * per_block + 2 * d
    return non_emb + V * d + T * d + V * d, non_emb


def params_tied_head(d, L, V, T):  # counts the head once with the token table (weight tying, which TinyGPT lacks)
    total, non_emb = params_reference(d, L, V, T)
    return total - V * d, non_emb


def params_no_biases(d, L, V, T):  # forgets every bias in the blocks
    total, non_emb = params_reference(d, L, V, T)
    return total - 9 * d * L, non_emb - 9 * d * L


def params_no_layernorm(d, L, V, T):  # forgets the LayerNorms' weights and biases
    total, non_emb = params_reference(d, L, V, T)
    return total - 4 * d * L - 2 * d, non_emb - 4 * d * L - 2 * d


def params_positions_nonemb(d, L, V, T):  # counts the position table as non-embedding
    total, non_emb = params_reference(d, L, V, T)
    return total, non_emb + T * d


def params_kaplan_approx(d, L, V, T):  # Kaplan's 12·L·d² shortcut instead of the exact count
    return 12 * L * d * d + 2 * V * d + T * d, 12 * L * d * d


@pytest.mark.parametrize("wrong, case, words", [
    (params_tied_head, "d_model=8, n_layers=1, V=64, T=64", "short by exactly a V·d or T·d table"),
    (params_no_biases, "d_model=8, n_layers=1, V=64, T=64", "the biases (9·d per block)"),
    (params_no_layernorm, "d_model=8, n_layers=1, V=64, T=64", "the LayerNorms"),
    (params_positions_nonemb, "d_model=64, n_layers=4, V=64, T=128",
     "the position table (T·d) was counted as non-embedding"),
    (params_kaplan_approx, "d_model=8, n_layers=1, V=64, T=64", "Kaplan's approximation"),
])
def test_tinygpt_params_rejects(wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check_tinygpt_params(wrong)
    out = capsys.readouterr().out
    assert f"({case})" in out and words in out, out


# ----------------------------------------------------------------------------- 1.2 isoflop_vertex

def vertex_reference(N, loss):
    c2, c1, _ = np.polyfit(np.log(N), loss, 2)
    return float(np.exp(-c1 / (2 * c2)))


def vertex_parabola_in_n(N, loss):  # fits the parabola in N, not log N
    c2, c1, _ = np.polyfit(N, loss, 2)
    return float(-c1 / (2 * c2))


def vertex_best_sample(N, loss):  # returns the best sampled size instead of the fitted vertex
    return float(N[np.argmin(loss)])


def vertex_log(N, loss):  # returns log N at the vertex, forgets exp
    c2, c1, _ = np.polyfit(np.log(N), loss, 2)
    return float(-c1 / (2 * c2))


def vertex_no_two(N, loss):  # vertex at −c1/c2
    c2, c1, _ = np.polyfit(np.log(N), loss, 2)
    return float(np.exp(-c1 / c2))


def vertex_coefficients_reversed(N, loss):  # reads np.polyfit's coefficients lowest power first
    c0, c1, c2 = np.polyfit(np.log(N), loss, 2)
    return float(np.exp(-c1 / (2 * c2)))


@pytest.mark.parametrize("wrong, words", [
    (vertex_parabola_in_n, "fitted in N; fit it in log N"),
    (vertex_best_sample, "best *sampled* size"),
    (vertex_log, "that is log N at the vertex"),
    (vertex_no_two, "the factor 2 is missing"),
    (vertex_coefficients_reversed, "highest power first"),
])
def test_isoflop_vertex_rejects(wrong, words, capsys):
    with pytest.raises(CheckFailed):
        check_isoflop_vertex(wrong)
    out = capsys.readouterr().out
    assert "(budget 1: 6 sizes" in out and words in out, out


# ----------------------------------------------------------------------------- 1.3 huber_objective

def _pred(theta, logN, logD):
    a, b, e, al, be = theta
    return np.logaddexp.reduce([a - al * logN, b - be * logD, np.full_like(logN, e)], axis=0)


def huber_reference(theta, logN, logD, logL, delta=1e-3):
    r = _pred(theta, logN, logD) - logL
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


def huber_no_half_delta(theta, logN, logD, logL, delta=1e-3):  # linear branch δ·|r|, drops the −δ/2
    r = _pred(theta, logN, logD) - logL
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * np.abs(r))))


def huber_squared(theta, logN, logD, logL, delta=1e-3):  # plain squared error, no Huber at all
    r = _pred(theta, logN, logD) - logL
    return float(np.sum(0.5 * r**2))


def huber_mean(theta, logN, logD, logL, delta=1e-3):  # averages over runs instead of summing
    r = _pred(theta, logN, logD) - logL
    return float(np.mean(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


def huber_fixed_delta(theta, logN, logD, logL, delta=1e-3):  # ignores the delta argument
    return huber_reference(theta, logN, logD, logL, 1e-3)


def huber_linear_params(theta, logN, logD, logL, delta=1e-3):  # uses a, b, e as A, B, E (forgets they are logs)
    a, b, e, al, be = theta
    r = np.log(np.abs(e + a / np.exp(logN) ** al + b / np.exp(logD) ** be) + 1e-300) - logL
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


@pytest.mark.parametrize("wrong, case, words", [
    (huber_no_half_delta, "theta = [0.0, 5.0, -1.0, 0.5, 1.0], δ = 0.001, 12 runs, 0 of 12 with |r| ≤ δ",
     "the linear branch is δ·(|r| − δ/2), not δ·|r|"),
    (huber_squared, "theta = [3.7, 4.5, 1.19, 0.4, 0.35], δ = 0.001", "plain squared error"),
    (huber_mean, "theta = [3.7, 4.5, 1.19, 0.4, 0.35], δ = 0.001", "mean over the 12 runs"),
    (huber_fixed_delta, "δ = 0.5, 12 runs", "use the argument"),
    (huber_linear_params, "theta = [3.7, 4.5, 1.19, 0.4, 0.35], δ = 0.001", "a, b, e are logs"),
])
def test_huber_objective_rejects(wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check_huber_objective(wrong)
    out = capsys.readouterr().out
    assert case in out and words in out, out


def test_huber_dropped_half_delta_prints_numbers_that_differ(capsys):
    """The old message printed 'expected 0.02957, got 0.02957'; now the digits differ and the difference shows."""
    with pytest.raises(CheckFailed):
        check_huber_objective(huber_no_half_delta)
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "✗ case 2" in s)
    assert "expected 0.029566, got 0.029572 (got − expected = +6e-06)" in line, line


# ----------------------------------------------------------------------------- 1.4 compute_optimal

def optimal_reference(law, C):
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b)), (C / 6) ** (a / (a + b)) / G


def optimal_2nd(law, C):  # C = 2·N·D: counts the forward pass only
    return optimal_reference(law, 3 * C)


def optimal_swapped_exponents(law, C):  # puts α on top of N's exponent
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    return G * (C / 6) ** (a / (a + b)), (C / 6) ** (b / (a + b)) / G


def optimal_inverted_g(law, C):  # G = (βB/αA)^(1/(α+β))
    a, b = law.alpha, law.beta
    G = (b * law.B / (a * law.A)) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b)), (C / 6) ** (a / (a + b)) / G


def optimal_swapped_outputs(law, C):  # returns (D, N)
    n, d = optimal_reference(law, C)
    return d, n


@pytest.mark.parametrize("wrong, words", [
    (optimal_2nd, "C = 2·N·D"),
    (optimal_swapped_exponents, "β/(α+β)"),
    (optimal_inverted_g, "G is inverted"),
    (optimal_swapped_outputs, "N and D are swapped"),
])
def test_compute_optimal_rejects(wrong, words, capsys):
    with pytest.raises(CheckFailed):
        check_compute_optimal(wrong)
    out = capsys.readouterr().out
    assert "(Chinchilla (unrounded): A=406.4, B=410.72, α=0.33917, β=0.28491; C = 5.76e+23 FLOPs)" in out, out
    assert words in out, out


# ----------------------------------------------------------------------------- 1.5 prediction_interval

def interval_reference(fits, N, D, level=0.8):
    preds = np.array([f.predict(N, D) for f in fits], dtype=float)
    lo, hi = np.percentile(preds, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def interval_wrong_percentiles(fits, N, D, level=0.8):  # (20th, 80th): a 60% interval
    preds = np.array([f.predict(N, D) for f in fits], dtype=float)
    return tuple(float(v) for v in np.percentile(preds, [100 * (1 - level), 100 * level]))


def interval_nearest(fits, N, D, level=0.8):  # nearest-rank percentiles instead of linear interpolation
    preds = np.array([f.predict(N, D) for f in fits], dtype=float)
    return tuple(float(v) for v in np.percentile(preds, [50 * (1 - level), 50 * (1 + level)], method="nearest"))


def interval_normal(fits, N, D, level=0.8):  # mean ± z·std instead of percentiles
    preds = np.array([f.predict(N, D) for f in fits], dtype=float)
    z = {0.8: 1.2816, 0.95: 1.96}[level]
    return float(preds.mean() - z * preds.std()), float(preds.mean() + z * preds.std())


def interval_parameter_percentiles(fits, N, D, level=0.8):  # percentiles over the parameter axis, then predicts
    P = np.array([[f.E, f.A, f.B, f.alpha, f.beta] for f in fits])  # (fits, 5)
    lo, hi = np.percentile(P, [50 * (1 - level), 50 * (1 + level)], axis=0)
    pred = lambda p: p[0] + p[1] / N ** p[3] + p[2] / D ** p[4]
    return float(pred(lo)), float(pred(hi))


def interval_swapped(fits, N, D, level=0.8):  # returns (hi, lo)
    lo, hi = interval_reference(fits, N, D, level)
    return hi, lo


@pytest.mark.parametrize("wrong, words", [
    (interval_wrong_percentiles, "a 60% interval"),
    (interval_nearest, "method='nearest'"),
    (interval_normal, "normal approximation"),
    (interval_parameter_percentiles, "over each parameter separately"),
    (interval_swapped, "ends are swapped"),
])
def test_prediction_interval_rejects(wrong, words, capsys):
    with pytest.raises(CheckFailed):
        check_prediction_interval(wrong)
    out = capsys.readouterr().out
    assert "(50 fits, N=1e+04, D=1e+06, level=0.8)" in out and words in out, out


# ----------------------------------------------------------------------------- 1.6 score_prediction

def score_signed(predicted, measured, floor):  # signed errors; the convention is absolute
    err = predicted - measured
    return err / measured, err / (measured - floor)


def score_total_twice(predicted, measured, floor):  # scores the reducible part on the total loss
    err = abs(predicted - measured)
    return err / measured, err / measured


def score_by_prediction(predicted, measured, floor):  # divides by the prediction instead of the measurement
    err = abs(predicted - measured)
    return err / predicted, err / (predicted - floor)


def score_percent(predicted, measured, floor):  # percent instead of fractions
    err = abs(predicted - measured)
    return 100 * err / measured, 100 * err / (measured - floor)


@pytest.mark.parametrize("wrong, case, words", [
    (score_signed, "predicted 2.0, measured 2.2, floor 1.5 (under-prediction)", "absolute error"),
    (score_total_twice, "predicted 3.5, measured 3.45, floor 3.1", "divides by the reducible loss"),
    (score_by_prediction, "predicted 3.5, measured 3.45, floor 3.1", "not by the prediction"),
    (score_percent, "predicted 3.5, measured 3.45, floor 3.1", "percentage"),
])
def test_score_prediction_rejects(wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check_score_prediction(wrong)
    out = capsys.readouterr().out
    assert f"({case}" in out and words in out, out


# ----------------------------------------------------------------------------- references and the use switch

def test_references_pass(capsys):
    check_tinygpt_params(params_reference)
    check_isoflop_vertex(vertex_reference)
    check_huber_objective(huber_reference)
    check_compute_optimal(optimal_reference)
    check_prediction_interval(interval_reference)
    check_score_prediction(score_reference)
    assert capsys.readouterr().out.count("cases pass ✓") == 6


def test_use_picks_the_learner_only_after_a_pass(capsys):
    checks.reset_session()
    assert use(huber_reference, objective) is objective  # not checked yet
    check_huber_objective(huber_reference)
    assert use(huber_reference, objective) is huber_reference
    with pytest.raises(CheckFailed):
        check_huber_objective(huber_no_half_delta)
    assert use(huber_no_half_delta, objective) is objective
    assert use(interval_reference, predict_interval) is predict_interval  # a pass of 1.3 says nothing about 1.5
    out = capsys.readouterr().out
    assert "Using your huber_reference" in out and "Using the course's reference for huber_no_half_delta" in out
    checks.reset_session()


def test_stub_is_not_attempted(capsys):
    def score_prediction(predicted, measured, floor):
        raise NotImplementedError("Exercise 1.6: return the two errors")
    check_score_prediction(score_prediction)
    assert "not attempted yet" in capsys.readouterr().out
    assert math.isfinite(score_reference(3.5, 3.45, 3.1)[1])
