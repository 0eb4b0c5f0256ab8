"""What a model can know, how sure it should be, and when it should not answer.

* ``singleton_rate``: Kalai, Nachum, Vempala & Zhang 2025 ("Why Language Models Hallucinate",
  arXiv 2509.04664), Definition 2: sr = |S| / N, S the prompts that appear exactly once among the N
  training examples. It is Good's (1953) estimate N₁/N of the probability that a fresh example is of a
  kind never seen; the denominator counts examples (mentions), not distinct facts.
* ``expected_calibration_error``: equal-width bins over [0, 1], Σ_b (n_b / n)·|accuracy_b − confidence_b|
  (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks", arXiv 1706.04599, §2).
* ``confidence_target_score``: Kalai et al. 2025's "explicit confidence targets" — answer only when confident, +1 right,
  −t/(1 − t) wrong, 0 for "I don't know". Answering with confidence c then earns c − (1 − c)·t/(1 − t)
  in expectation, which is positive exactly when c > t: abstaining is optimal below t.

Left out on purpose: adaptive (equal-mass) bins, temperature scaling, calibration of free-form text.

    >>> singleton_rate([1, 1, 2, 0, 5])           # two facts seen once, among 9 mentions
    0.2222222222222222
    >>> round(expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1]), 4)   # |0.5 − 0.9|/2 + |1 − 0.6|/2
    0.4
"""

from __future__ import annotations

import numpy as np


def _counts_array(counts) -> np.ndarray:
    if isinstance(counts, dict):
        counts = list(counts.values())
    try:
        arr = np.asarray(counts)
    except (TypeError, ValueError):
        raise ValueError(f"counts must be a list, array or dict of non-negative ints, "
                         f"got {type(counts).__name__}") from None
    if arr.ndim == 0 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or
                                              (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
        raise ValueError(f"counts must be a non-empty list, array or dict of whole numbers, got {counts!r:.80}")
    if np.any(arr < 0):
        raise ValueError(f"counts must be >= 0, got a negative count ({arr.min()})")
    return arr.astype(np.int64).ravel()


def singleton_rate(counts) -> float:
    """#(counts == 1) / sum(counts): the share of training examples whose fact appears exactly once.

    ``counts`` holds one mention count per fact (zeros allowed), or is a dict fact -> count.
    """
    arr = _counts_array(counts)
    if arr.sum() == 0:
        raise ValueError("counts sum to zero: there are no training examples, so the singleton rate is undefined")
    return float(np.count_nonzero(arr == 1) / arr.sum())


def _confidence_correct(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    try:
        conf = np.asarray(confidence, dtype=np.float64)
        ok = np.asarray(correct)
    except (TypeError, ValueError):
        raise ValueError("confidence must be numbers and correct booleans (or 0/1)") from None
    if conf.ndim != 1 or conf.size == 0:
        raise ValueError(f"confidence must be a non-empty vector, got shape {conf.shape}")
    if ok.shape != conf.shape:
        raise ValueError(f"correct must have the same shape as confidence {conf.shape}, got {ok.shape}")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must lie in [0, 1] (and be finite)")
    if ok.dtype != bool and not np.all(np.isin(ok, [0, 1])):
        raise ValueError("correct must hold booleans or 0/1")
    return conf, ok.astype(bool)


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: [0, 1/n), [1/n, 2/n), …, [(n−1)/n, 1] — 1.0 is in the last bin."""
    return np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)


def reliability_table(confidence, correct, *, n_bins: int = 10) -> dict:
    """Per bin: ``count``, mean ``confidence`` and ``accuracy`` (NaN for an empty bin), and bin ``edges``."""
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    conf, ok = _confidence_correct(confidence, correct)
    b = bin_index(conf, n_bins)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=ok.astype(np.float64), minlength=n_bins) / count
    return dict(count=count, confidence=mean_conf, accuracy=acc, edges=np.linspace(0, 1, n_bins + 1))


def expected_calibration_error(confidence, correct, *, n_bins: int = 10) -> float:
    """Σ_b (n_b / n)·|accuracy_b − mean confidence_b| over equal-width bins (empty bins add nothing)."""
    t = reliability_table(confidence, correct, n_bins=n_bins)
    used = t["count"] > 0
    gaps = np.abs(t["accuracy"][used] - t["confidence"][used])
    return float(np.sum(t["count"][used] / t["count"].sum() * gaps))


def _check_t(t, name: str = "t") -> float:
    if not isinstance(t, (int, float, np.floating)) or isinstance(t, bool) or not 0 <= t < 1:
        raise ValueError(f"{name} must be a confidence target in [0, 1), got {t!r}")
    return float(t)


def confidence_target_score(confidence, correct, t: float, *, threshold: float | None = None) -> float:
    """Mean score when answering only at confidence ≥ threshold (default: t): +1 right, −t/(1−t) wrong, 0 abstain.

    t = 0 is binary grading (a wrong answer costs nothing, so guessing always pays).

    >>> confidence_target_score([0.9, 0.6, 0.3], [True, False, False], 0.75)   # answers only the first
    0.3333333333333333
    """
    t = _check_t(t)
    threshold = t if threshold is None else _check_t(threshold, "threshold")
    conf, ok = _confidence_correct(confidence, correct)
    answered = conf >= threshold
    return float(np.mean(np.where(answered, np.where(ok, 1.0, -t / (1 - t)), 0.0)))


def abstention_curve(confidence, correct, thresholds) -> dict:
    """For each threshold: ``coverage`` (share answered) and ``accuracy`` of the answered (NaN if none)."""
    conf, ok = _confidence_correct(confidence, correct)
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim != 1 or th.size == 0 or not np.all(np.isfinite(th)):
        raise ValueError(f"thresholds must be a non-empty vector of numbers, got {thresholds!r:.80}")
    answered = conf[None, :] >= th[:, None]  # (n_thresholds, n)
    n_ans = answered.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (answered & ok[None, :]).sum(axis=1) / n_ans
    return dict(thresholds=th, coverage=n_ans / conf.size, accuracy=acc)
