"""Lab 05's checkers: the reference passes; wrong answers that learners really write each fail with a message
that names the failing case (and, where the symptom is recognisable, the mistake); a stub is "not attempted";
garbage is explained in words."""

import math

import numpy as np
import pytest

from labutils.checks import CheckFailed
from labutils.factuality import (
    bm25_scores,
    citation_precision_recall,
    expected_calibration_error,
    singleton_rate,
    weighted_vote,
)
from labutils.factuality.checks import (
    check_bm25_scores,
    check_citation_precision_recall,
    check_expected_calibration_error,
    check_singleton_rate,
    check_weighted_vote,
)


def fails(checker, fn, capsys, *words):
    """The checker rejects fn with CheckFailed, names a failing case, and prints every word given."""
    with pytest.raises(CheckFailed):
        checker(fn)
    out = capsys.readouterr().out
    assert "✗ case" in out, out
    for w in words:
        assert w in out, f"{w!r} not in:\n{out}"
    return out


# ----------------------------------------------------------------------------- 5.1 singleton rate

def sr_over_distinct_facts(counts):  # divides by the number of facts instead of the number of mentions N
    c = np.asarray(counts)
    return float((c == 1).sum() / c.size)


def sr_over_seen_facts(counts):  # divides by the facts seen at least once
    c = np.asarray(counts)
    return float((c == 1).sum() / (c > 0).sum())


def sr_counts_every_seen_fact(counts):  # counts facts seen ≥ 1 times instead of exactly once
    c = np.asarray(counts)
    return float((c >= 1).sum() / c.sum())


def sr_integer_division(counts):  # integer division: 0 whenever fewer singletons than mentions
    c = np.asarray(counts)
    return int((c == 1).sum()) // int(c.sum())


@pytest.mark.parametrize("wrong, words", [
    (sr_over_distinct_facts, ["distinct facts"]),
    (sr_over_seen_facts, ["at least once"]),
    (sr_counts_every_seen_fact, ["not only those seen exactly once"]),
    (sr_integer_division, ["expected"]),
])
def test_singleton_rate_wrong_answers(wrong, words, capsys):
    fails(check_singleton_rate, wrong, capsys, *words)


# ----------------------------------------------------------------------------- 5.2 ECE

def _bins(conf, n_bins):
    return np.minimum((np.asarray(conf) * n_bins).astype(int), n_bins - 1)


def ece_unweighted(confidence, correct, n_bins=10):  # averages the bins' gaps instead of weighting by n_b / n
    b, c, k = _bins(confidence, n_bins), np.asarray(confidence), np.asarray(correct, dtype=float)
    return float(np.mean([abs(k[b == i].mean() - c[b == i].mean()) for i in range(n_bins) if (b == i).any()]))


def ece_drops_one(confidence, correct, n_bins=10):  # bin = int(c·n): confidence 1.0 lands in bin n and is lost
    c, k = np.asarray(confidence), np.asarray(correct, dtype=float)
    b = (c * n_bins).astype(int)
    return float(sum((b == i).sum() / len(c) * abs(k[b == i].mean() - c[b == i].mean())
                     for i in range(n_bins) if (b == i).any()))


def ece_fixed_ten_bins(confidence, correct, n_bins=10):  # ignores n_bins
    return expected_calibration_error(confidence, correct, n_bins=10)


def ece_signed(confidence, correct, n_bins=10):  # no absolute value: over- and under-confidence cancel
    b, c, k = _bins(confidence, n_bins), np.asarray(confidence), np.asarray(correct, dtype=float)
    used = [i for i in range(n_bins) if (b == i).any()]
    return float(abs(sum((b == i).mean() * (k[b == i].mean() - c[b == i].mean()) for i in used)))


def ece_bin_midpoints(confidence, correct, n_bins=10):  # compares accuracy with the bin's midpoint, not its mean
    b, k = _bins(confidence, n_bins), np.asarray(correct, dtype=float)
    used = [i for i in range(n_bins) if (b == i).any()]
    return float(sum((b == i).mean() * abs(k[b == i].mean() - (i + 0.5) / n_bins) for i in used))


def ece_right_closed_bins(confidence, correct, n_bins=10):  # bins (b/n, (b+1)/n]: 0.5 falls one bin too low
    c, k = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    b = np.clip(np.ceil(c * n_bins).astype(int) - 1, 0, n_bins - 1)
    return float(sum((b == i).mean() * abs(k[b == i].mean() - c[b == i].mean()) for i in range(n_bins) if (b == i).any()))


def ece_digitize_right(confidence, correct, n_bins=10):  # np.digitize(..., right=True): edges go to the lower bin
    c, k = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    b = np.digitize(c, np.linspace(0, 1, n_bins + 1)[1:-1], right=True)
    return float(sum((b == i).mean() * abs(k[b == i].mean() - c[b == i].mean()) for i in range(n_bins) if (b == i).any()))


def ece_bins_over_data_range(confidence, correct, n_bins=10):  # np.histogram's bins span min..max, not [0, 1]
    c, k = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    b = np.clip(np.searchsorted(np.histogram_bin_edges(c, bins=n_bins), c, side="right") - 1, 0, n_bins - 1)
    return float(sum((b == i).mean() * abs(k[b == i].mean() - c[b == i].mean()) for i in range(n_bins) if (b == i).any()))


@pytest.mark.parametrize("wrong, words", [
    (ece_bins_over_data_range, ["min to max", "n_bins = 4"]),
    (ece_right_closed_bins, ["bins closed on the right", "8 answers on the bin edges"]),
    (ece_digitize_right, ["bins closed on the right", "8 answers on the bin edges"]),
    (ece_unweighted, ["without weighting"]),
    (ece_drops_one, ["1.0", "dropped"]),
    (ece_fixed_ten_bins, ["n_bins = 4", "10 bins"]),
    (ece_signed, ["absolute value"]),
    (ece_bin_midpoints, ["midpoint"]),
])
def test_ece_wrong_answers(wrong, words, capsys):
    fails(check_expected_calibration_error, wrong, capsys, *words)


# ----------------------------------------------------------------------------- 5.3 BM25

def _bm25(query, documents, k1=1.2, b=0.75, *, idf=None, norm=True, numerator=True, binary=False, distinct=True):
    N, avgdl = len(documents), sum(map(len, documents)) / len(documents)
    out = []
    for d in documents:
        s = 0.0
        for t in (dict.fromkeys(query) if distinct else query):
            f = d.count(t)
            if not f:
                continue
            n_t = sum(t in x for x in documents)
            w = idf(N, n_t) if idf else math.log(1 + (N - n_t + 0.5) / (n_t + 0.5))
            f = 1 if binary else f
            s += w * f * ((k1 + 1) if numerator else 1) / (f + (k1 * (1 - b + b * len(d) / avgdl) if norm else k1))
        out.append(s)
    return np.array(out)


def bm25_negative_idf(query_tokens, documents, k1=1.2, b=0.75):  # Robertson's idf without the 1 +: negative if common
    return _bm25(query_tokens, documents, k1, b, idf=lambda N, n: math.log((N - n + 0.5) / (n + 0.5)))


def bm25_no_length_norm(query_tokens, documents, k1=1.2, b=0.75):  # forgets |D| / avgdl
    return _bm25(query_tokens, documents, k1, b, norm=False)


def bm25_classic_idf(query_tokens, documents, k1=1.2, b=0.75):  # idf = ln(N / n_t)
    return _bm25(query_tokens, documents, k1, b, idf=lambda N, n: math.log(N / n))


def bm25_no_k1_plus_one(query_tokens, documents, k1=1.2, b=0.75):  # drops (k1 + 1) from the numerator
    return _bm25(query_tokens, documents, k1, b, numerator=False)


def bm25_binary_tf(query_tokens, documents, k1=1.2, b=0.75):  # presence instead of the count
    return _bm25(query_tokens, documents, k1, b, binary=True)


def bm25_repeats_query_tokens(query_tokens, documents, k1=1.2, b=0.75):  # a repeated query token counts twice
    return _bm25(query_tokens, documents, k1, b, distinct=False)


def bm25_returns_list(query_tokens, documents, k1=1.2, b=0.75):  # right numbers, but ignores k1 and b
    return _bm25(query_tokens, documents).tolist()


@pytest.mark.parametrize("wrong, words", [
    (bm25_negative_idf, ["idf is negative"]),
    (bm25_no_length_norm, ["no length normalisation"]),
    (bm25_classic_idf, ["ln(N / n_t)"]),
    (bm25_no_k1_plus_one, ["(k1 + 1)"]),
    (bm25_binary_tf, ["how often"]),
    (bm25_repeats_query_tokens, ["counted twice"]),
    (bm25_returns_list, ["k1=2.0, b=0.0"]),
])
def test_bm25_wrong_answers(wrong, words, capsys):
    fails(check_bm25_scores, wrong, capsys, *words)


# ----------------------------------------------------------------------------- 5.4 citations

def cite_precision_without_recall_gate(cited, supporting):  # ALCE's irrelevance rule applied even when recall is 0
    if not cited:
        return 0.0, 0.0
    sup = lambda docs: any(d in supporting for d in docs)
    irrelevant = sum(not sup([d]) and sup([x for x in cited if x != d]) for d in cited)
    return 1 - irrelevant / len(cited), float(sup(cited))


def cite_precision_over_supporting(cited, supporting):  # divides by |supporting| instead of |cited|
    if not cited:
        return 0.0, 0.0
    hit = len(set(cited) & supporting)
    return (hit / len(supporting) if hit else 0.0), float(hit > 0)


def cite_recall_as_share(cited, supporting):  # recall = share of the supporting documents that were cited
    if not cited or not supporting:
        return 0.0, 0.0
    hit = len(set(cited) & supporting)
    return (hit / len(cited) if hit else 0.0), hit / len(supporting)


def cite_redundant_is_irrelevant(cited, supporting):  # only one supporting citation counts as precise
    if not cited:
        return 0.0, 0.0
    hit = len(set(cited) & supporting)
    return (1 / len(cited) if hit else 0.0), float(hit > 0)


def cite_crashes_on_empty(cited, supporting):  # divides by len(cited) without checking for an empty list
    hit = len(set(cited) & supporting)
    return hit / len(cited), float(hit > 0)


def cite_all_must_support(cited, supporting):  # recall demands that every citation supports the answer
    ok = bool(cited) and all(d in supporting for d in cited)
    return (1.0, 1.0) if ok else (0.0, 0.0)


def cite_repeats_count(cited, supporting):  # a document cited twice counts twice in |cited|
    hit = sum(d in supporting for d in cited)
    return (hit / len(cited), 1.0) if hit else (0.0, 0.0)


def cite_first_only(cited, supporting):  # judges only the first citation
    if not cited or cited[0] not in supporting:
        return 0.0, 0.0
    return len(set(cited) & supporting) / len(set(cited)), 1.0


@pytest.mark.parametrize("wrong, words", [
    (cite_repeats_count, ["cited twice", "cited=[3, 5, 5]"]),
    (cite_first_only, ["only the first citation", "cited=[5, 3]"]),
    (cite_precision_without_recall_gate, ["unsupported (recall 0)", "cited=[5], supporting=[3]"]),
    (cite_precision_over_supporting, ["divided by the supporting"]),
    (cite_recall_as_share, ["share of supporting documents"]),
    (cite_redundant_is_irrelevant, ["redundant citation"]),
    (cite_crashes_on_empty, ["ZeroDivisionError", "cited=[]"]),
    (cite_all_must_support, ["every citation"]),
])
def test_citation_wrong_answers(wrong, words, capsys):
    fails(check_citation_precision_recall, wrong, capsys, *words)


# ----------------------------------------------------------------------------- 5.5 weighted vote

def _vote(answers, weights):
    totals = {}
    for a, w in zip(answers, weights):
        totals[a] = totals.get(a, 0.0) + w
    return max(totals, key=totals.get)


def vote_raw_reliabilities(answers, reliabilities, n_values=None):  # sums r instead of log-odds weights
    return _vote(answers, reliabilities)


def vote_majority(answers, reliabilities, n_values=None):  # ignores the reliabilities
    return _vote(answers, [1.0] * len(answers))


def vote_plain_log_odds(answers, reliabilities, n_values=None):  # ln(r/(1−r)): forgets the V − 1 wrong values
    return _vote(answers, [math.log(min(r, 1 - 1e-6) / (1 - min(r, 1 - 1e-6))) for r in reliabilities])


def vote_no_clip(answers, reliabilities, n_values=None):  # a perfect source divides by zero
    V = n_values or max(2, len(set(answers)))
    return _vote(answers, [math.log(r * (V - 1) / (1 - r)) for r in reliabilities])


def vote_ties_to_last(answers, reliabilities, n_values=None):  # breaks ties toward the answer seen last
    V = n_values or max(2, len(set(answers)))
    totals = {}
    for a, r in zip(answers, reliabilities):
        r = min(r, 1 - 1e-6)
        totals[a] = totals.get(a, 0.0) + math.log(r * (V - 1) / (1 - r))
    return max(reversed(list(totals)), key=totals.get)


def vote_most_reliable(answers, reliabilities, n_values=None):  # trusts the single most reliable source
    return answers[int(np.argmax(reliabilities))]


def _log_odds_totals(answers, reliabilities, V, clip=1e-6, floor=None):
    totals = {}
    for a, r in zip(answers, reliabilities):
        r = min(r, 1 - clip)
        w = math.log(r * (V - 1) / (1 - r))
        totals[a] = totals.get(a, 0.0) + (w if floor is None else max(floor, w))
    return totals


def vote_ties_alphabetical_last(answers, reliabilities, n_values=None):  # ties go to the last answer in sorted order
    t = _log_odds_totals(answers, reliabilities, n_values or max(2, len(set(answers))))
    return max(sorted(t, reverse=True), key=t.get)


def vote_floors_weights(answers, reliabilities, n_values=None):  # drops a below-chance source instead of counting it
    t = _log_odds_totals(answers, reliabilities, n_values or max(2, len(set(answers))), floor=0.0)
    return max(t, key=t.get)


def vote_clips_too_far(answers, reliabilities, n_values=None):  # clips r to 0.999, not 1 − 1e-6
    t = _log_odds_totals(answers, reliabilities, n_values or max(2, len(set(answers))), clip=1e-3)
    return max(t, key=t.get)


def vote_V_without_minimum(answers, reliabilities, n_values=None):  # V = distinct answers, even 1: ln(0) fails
    t = _log_odds_totals(answers, reliabilities, n_values or len(set(answers)))
    return max(t, key=t.get)


@pytest.mark.parametrize("wrong, words", [
    (vote_ties_alphabetical_last, ["answers=['a', 'b'], reliabilities=[0.8, 0.8]", "seen first"]),
    (vote_floors_weights, ["answers=['x', 'y', 'y']", "below chance"]),
    (vote_clips_too_far, ["reliabilities=[1.0, 0.999, 0.999]", "no further"]),
    (vote_V_without_minimum, ["answers=['a', 'a']"]),
    (vote_raw_reliabilities, ["raw reliabilities"]),
    (vote_majority, ["majority vote"]),
    (vote_plain_log_odds, ["V − 1"]),
    (vote_no_clip, ["ZeroDivisionError", "reliabilities=[1.0"]),
    (vote_ties_to_last, ["answers=['b', 'a']"]),
    (vote_most_reliable, ["most reliable"]),
])
def test_vote_wrong_answers(wrong, words, capsys):
    fails(check_weighted_vote, wrong, capsys, *words)


# ----------------------------------------------------------------------------- every checker

CHECKERS = [(check_singleton_rate, singleton_rate), (check_expected_calibration_error, expected_calibration_error),
            (check_bm25_scores, bm25_scores), (check_citation_precision_recall, citation_precision_recall),
            (check_weighted_vote, weighted_vote)]


@pytest.mark.parametrize("checker, reference", CHECKERS, ids=lambda x: getattr(x, "__name__", ""))
def test_reference_passes(checker, reference, capsys):
    assert checker(reference) is None
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("checker, reference", CHECKERS, ids=lambda x: getattr(x, "__name__", ""))
def test_stub_is_not_attempted(checker, reference, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise 5.x")

    checker(stub)
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("garbage", [lambda *a, **k: None, lambda *a, **k: "text", lambda *a, **k: float("nan"),
                                     lambda *a, **k: [1, 2]])
@pytest.mark.parametrize("checker, reference", CHECKERS, ids=lambda x: getattr(x, "__name__", ""))
def test_garbage_is_explained_without_traceback(checker, reference, garbage, capsys):
    with pytest.raises(CheckFailed):
        checker(garbage)
    out = capsys.readouterr().out
    assert "✗ case 1" in out and "Traceback" not in out


def test_not_a_function(capsys):
    with pytest.raises(CheckFailed):
        check_weighted_vote("weighted_vote")
    assert "expected a function" in capsys.readouterr().out


def test_stub_text_has_no_formula():
    """The learner's stub says what to write, never the formula: formulas appear only in a failure's hint."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "solutions" / "05_factuality.ipynb").read_text())
    markers = [line for c in nb["cells"] if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
               if "### BEGIN SOLUTION" in line]
    assert len(markers) >= 5
    for m in markers:
        assert not any(s in m for s in ("ln(", "log(", "Σ", "/ (", "k1 + 1")), m


def test_float32_answers_pass(capsys):
    """A right answer computed in float32 (numpy or torch) is not rejected for its last digits."""
    check_singleton_rate(lambda counts: np.float32(singleton_rate(counts)))
    check_expected_calibration_error(lambda c, k, n_bins=10: np.float32(expected_calibration_error(c, k, n_bins=n_bins)))
    check_citation_precision_recall(lambda c, s: tuple(np.float32(x) for x in citation_precision_recall(c, s)))
    check_bm25_scores(lambda q, d, k1=1.2, b=0.75: bm25_scores(q, d, k1=k1, b=b).astype(np.float32))
    assert capsys.readouterr().out.count("pass ✓") == 4
