"""Checkers for 05_factuality. Each runs fixed cases against an independent reference written here as a
plain loop over the definition (not the vectorised code in ``labutils.factuality``), and names the
mistake when a wrong answer matches a known one.

    >>> check_singleton_rate(lambda counts: float((np.asarray(counts) == 1).sum() / np.sum(counts)))
    Exercise 5.1 · singleton_rate — all 5 cases pass ✓
"""

from __future__ import annotations

import math

import numpy as np

from labutils.checks import Case, Exercise, run_cases

NOTEBOOK = "05_factuality"
EX_SINGLETON = Exercise(NOTEBOOK, "5.1", "singleton_rate")
EX_ECE = Exercise(NOTEBOOK, "5.2", "expected_calibration_error")
EX_BM25 = Exercise(NOTEBOOK, "5.3", "bm25_scores")
EX_CITATION = Exercise(NOTEBOOK, "5.4", "citation_precision_recall")
EX_VOTE = Exercise(NOTEBOOK, "5.5", "weighted_vote")


def _same(got, value) -> bool:
    try:
        return math.isclose(float(got), float(value), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _first_match(got, variants: dict):
    """The known mistakes whose answer equals ``got``, joined with "or" (None if none does)."""
    hits = [why.strip() for why, value in variants.items() if value is not None and _same(got, value)]
    return " — or — ".join(dict.fromkeys(hits)) or None


# ----------------------------------------------------------------------------- 5.1 singleton rate

def _sr_loop(counts) -> float:
    once = sum(1 for c in counts if c == 1)
    return once / sum(counts)


def check_singleton_rate(singleton_rate) -> None:
    rng = np.random.default_rng(51)
    zipf_counts = rng.poisson(40 / np.arange(1, 301) ** 1.1)  # mentions of 300 facts of Zipf popularity
    zipf_counts[0] = max(zipf_counts[0], 1)
    cases = [Case(f"counts = {c.tolist() if c.size <= 8 else f'{c.size} Zipf-popular facts'}", (c,),
                  _sr_loop(c.tolist()))
             for c in (np.array([1, 1, 2, 0, 5]), np.array([0, 0, 1, 3, 1, 1, 8]), np.array([1, 1, 1, 1]),
                       np.array([2, 3, 0, 4]), zipf_counts)]

    def diagnose(got, expected, case):
        c = np.asarray(case.args[0])
        n1 = int((c == 1).sum())
        return _first_match(got, {
            "divided by the number of distinct facts; Definition 2 divides by N, the number of training "
            "examples (mentions)": n1 / c.size,
            "divided by the number of facts seen at least once; the denominator is N, all mentions":
                n1 / max(1, (c > 0).sum()),
            "counted every fact seen at least once, not only those seen exactly once": (c >= 1).sum() / c.sum(),
            "counted the mentions of facts seen at most once (zeros included)": (c <= 1).sum() / c.sum(),
        })

    run_cases(EX_SINGLETON, singleton_rate, cases, rtol=1e-6, diagnose=diagnose,
              hint="sr = (number of facts whose count is exactly 1) / (sum of all counts) — Kalai et al. 2025, "
                   "Definition 2: N is the number of training examples, so the denominator sums the counts")


# ----------------------------------------------------------------------------- 5.2 ECE

def _ece_loop(confidence, correct, n_bins) -> float:
    """A direct histogram: every confidence in its bin, 1.0 in the last, weighted gaps."""
    members = [[] for _ in range(n_bins)]
    for c, ok in zip(confidence, correct):
        b = n_bins - 1 if c >= 1.0 else int(c * n_bins)
        members[b].append((c, ok))
    total = 0.0
    for m in members:
        if m:
            acc = sum(ok for _, ok in m) / len(m)
            conf = sum(c for c, _ in m) / len(m)
            total += len(m) / len(confidence) * abs(acc - conf)
    return total


def _ece_variants(conf, ok, n_bins) -> dict:
    conf, ok = np.asarray(conf, dtype=float), np.asarray(ok, dtype=float)
    b = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    used = [k for k in range(n_bins) if (b == k).any()]
    gaps = {k: ok[b == k].mean() - conf[b == k].mean() for k in used}
    keep = (conf * n_bins).astype(int) < n_bins
    dropped = "dropped the confidences equal to 1.0 (they belong in the last bin)"
    shut = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # bins (b/n, (b+1)/n]
    right_closed = float(sum((shut == k).mean() * abs(ok[shut == k].mean() - conf[shut == k].mean())
                             for k in range(n_bins) if (shut == k).any()))
    span = np.clip(np.searchsorted(np.histogram_bin_edges(conf, bins=n_bins), conf, side="right") - 1, 0, n_bins - 1)
    data_range = float(sum((span == k).mean() * abs(ok[span == k].mean() - conf[span == k].mean())
                           for k in range(n_bins) if (span == k).any()))
    return {
        "the bins span the confidences' min to max (np.histogram(conf, bins=n_bins) does that); they split [0, 1]":
            data_range if not (span == b).all() else None,
        "bins closed on the right: a confidence on an edge (0.5 with n_bins = 4) belongs to the bin it starts, "
        "[b/n_bins, (b+1)/n_bins)": right_closed if not (shut == b).all() else None,
        "averaged the bins' gaps without weighting them by n_b / n": float(np.mean([abs(g) for g in gaps.values()])),
        dropped: _ece_loop(conf[keep], ok[keep], n_bins) if keep.any() and not keep.all() else None,
        dropped + " ": _ece_loop(conf[keep], ok[keep], n_bins) * keep.mean() if keep.any() and not keep.all() else None,
        "used 10 bins whatever n_bins says": _ece_loop(conf, ok, 10) if n_bins != 10 else None,
        "summed signed gaps (accuracy − confidence) without the absolute value": abs(
            sum((b == k).mean() * g for k, g in gaps.items())),
        "used one bin for everything: |mean accuracy − mean confidence|": abs(ok.mean() - conf.mean()),
        "used each bin's midpoint instead of the mean confidence of the answers in it": float(sum(
            (b == k).mean() * abs(ok[b == k].mean() - (k + 0.5) / n_bins) for k in used)),
    }


def check_expected_calibration_error(expected_calibration_error) -> None:
    rng = np.random.default_rng(52)
    conf = rng.uniform(0.05, 0.999, size=400)
    ok = rng.random(400) < 0.3 + 0.4 * conf  # under-confident below 0.5, over-confident above: gaps of both signs
    sure = np.concatenate([np.ones(30), rng.uniform(0.3, 0.7, size=20)])
    sure_ok = np.concatenate([rng.random(30) < 0.8, rng.random(20) < 0.5])
    specs = [("4 answers: confidence [0.92, 0.88, 0.61, 0.64], correct [1, 0, 1, 1]",
              [0.92, 0.88, 0.61, 0.64], [True, False, True, True], 10),
             ("30 answers at confidence exactly 1.0, 20 in (0.3, 0.7)", sure, sure_ok, 10),
             ("400 answers, accuracy 0.3 + 0.4·confidence", conf, ok, 10),
             ("the same 400 answers, n_bins = 4", conf, ok, 4),
             ("the same 400 answers, n_bins = 15", conf, ok, 15),
             ("8 answers on the bin edges: confidence [0.5, 0.5, 0.5, 0.6, 0.25, 0.3, 0.75, 0.9], "
              "correct [1, 1, 0, 0, 0, 1, 1, 1]", [0.5, 0.5, 0.5, 0.6, 0.25, 0.3, 0.75, 0.9],
              [True, True, False, False, False, True, True, True], 4)]
    cases = [Case(f"{name}, n_bins={n}", (np.asarray(c), np.asarray(k)), _ece_loop(list(c), list(k), n),
                  kwargs=dict(n_bins=n)) for name, c, k, n in specs]

    def diagnose(got, expected, case):
        return _first_match(got, _ece_variants(case.args[0], case.args[1], case.kwargs["n_bins"]))

    run_cases(EX_ECE, expected_calibration_error, cases, rtol=1e-6, diagnose=diagnose,
              hint="bin b holds confidences in [b/n_bins, (b+1)/n_bins), and 1.0 goes in the last bin "
                   "(np.minimum((conf * n_bins).astype(int), n_bins - 1)); ECE = Σ_b (n_b / n)·|accuracy_b − "
                   "mean confidence_b| over non-empty bins, n the number of all answers")


# ----------------------------------------------------------------------------- 5.3 BM25

def _bm25_loop(query, documents, k1=1.2, b=0.75, *, idf_kind="lucene", length_norm=True, numerator=True,
               binary_tf=False, distinct=True) -> np.ndarray:
    """BM25 by the definition, one document and one query token at a time (variants model mistakes)."""
    N = len(documents)
    avgdl = sum(len(d) for d in documents) / N
    terms = list(dict.fromkeys(query)) if distinct else list(query)
    out = []
    for d in documents:
        s = 0.0
        for t in terms:
            n_t = sum(1 for doc in documents if t in doc)
            f = d.count(t)
            if f == 0:
                continue
            if binary_tf:
                f = 1
            idf = {"lucene": math.log(1 + (N - n_t + 0.5) / (n_t + 0.5)),
                   "robertson": math.log((N - n_t + 0.5) / (n_t + 0.5)),
                   "classic": math.log(N / n_t)}[idf_kind]
            norm = k1 * (1 - b + b * len(d) / avgdl) if length_norm else k1
            s += idf * f * ((k1 + 1) if numerator else 1) / (f + norm)
        out.append(s)
    return np.array(out)


def _bm25_cases() -> list:
    rng = np.random.default_rng(53)
    ragged = [rng.integers(0, 12, size=rng.integers(2, 14)).tolist() for _ in range(25)]
    common = [[1, 2], [1, 3, 3], [1, 4, 5, 6, 7], [1, 2, 8], [9, 9, 9, 2, 3, 4]]  # token 1 is in 4 of 5 documents
    specs = [([2, 6], [[1, 2, 3], [2, 2, 4, 5], [6]], {}),
             ([1, 3], common, {}),
             ([1, 3], common, dict(k1=2.0, b=0.0)),
             ([3, 9], common, dict(k1=0.9, b=1.0)),
             ([4, 4, 11, 30], ragged, {})]
    cases = []
    for q, docs, kw in specs:
        shown = docs if len(docs) <= 5 else f"{len(docs)} documents of 2–13 tokens"
        name = f"query_tokens={q}, documents={shown}, k1={kw.get('k1', 1.2)}, b={kw.get('b', 0.75)}"
        cases.append(Case(name, (q, docs), _bm25_loop(q, docs, **kw), kwargs=kw))
    return cases


def check_bm25_scores(bm25_scores) -> None:
    variants = {
        "the idf is negative for a token in more than half the documents: use ln(1 + (N − n_t + 0.5)/(n_t + 0.5))":
            dict(idf_kind="robertson"),
        "the idf is ln(N / n_t); BM25's is ln(1 + (N − n_t + 0.5)/(n_t + 0.5))": dict(idf_kind="classic"),
        "no length normalisation: the denominator is f + k1·(1 − b + b·|D|/avgdl)": dict(length_norm=False),
        "the numerator lacks the factor (k1 + 1)": dict(numerator=False),
        "counted whether a token occurs instead of how often (f is the count in the document)": dict(binary_tf=True),
        "a repeated query token counted twice; each distinct query token counts once": dict(distinct=False),
    }

    def diagnose(got, expected, case):
        got = np.asarray(got, dtype=float)
        for why, kw in variants.items():
            alt = _bm25_loop(*case.args, **case.kwargs, **kw)
            if got.shape == alt.shape and not np.allclose(alt, expected) and np.allclose(got, alt, rtol=1e-6):
                return why
        return None

    run_cases(EX_BM25, bm25_scores, _bm25_cases(), rtol=1e-6, atol=1e-9, diagnose=diagnose,
              hint="for each distinct query token t: idf = ln(1 + (N − n_t + 0.5)/(n_t + 0.5)), f = count of t in "
                   "the document, score += idf·f·(k1 + 1)/(f + k1·(1 − b + b·|D|/avgdl)); "
                   "return one score per document")


# ----------------------------------------------------------------------------- 5.4 citations

def _citation_loop(cited, supporting) -> tuple:
    """ALCE by its definition, for one answer whose supporting documents each state it in full."""
    cited = list(dict.fromkeys(cited))
    if not cited:
        return 0.0, 0.0
    supported = lambda docs: any(d in supporting for d in docs)  # the union entails iff one member does
    recall = 1.0 if supported(cited) else 0.0
    if recall == 0.0:
        return 0.0, 0.0  # ALCE credits a citation only when the statement is supported
    precise = 0
    for d in cited:
        rest = [x for x in cited if x != d]
        irrelevant = not supported([d]) and supported(rest)
        precise += not irrelevant
    return precise / len(cited), recall


def check_citation_precision_recall(citation_precision_recall) -> None:
    specs = [([3], {3, 7}), ([3, 5], {3}), ([5], {3}), ([], {3}), ([3, 7, 9], {3, 7}), ([5, 9], set()),
             ([4, 8], {4, 8}), ([5, 3], {3}), ([3, 5, 5], {3}), ([3, 3, 5], {3})]
    cases = [Case(f"cited={c}, supporting={sorted(s) if s else 'set()'}", (list(c), set(s)), _citation_loop(c, s))
             for c, s in specs]

    def diagnose(got, expected, case):
        cited, sup = case.args
        if not cited:
            return None
        hit = len(set(cited) & sup)
        if len(set(cited)) < len(cited) and isinstance(got, (tuple, list)) and len(got) == 2 and _same(
                got[0], sum(d in sup for d in cited) / len(cited)):
            return "a document cited twice was counted twice; it is one citation (count distinct documents)"
        if cited[0] not in sup and hit and isinstance(got, (tuple, list)) and len(got) == 2 and _same(got[1], 0.0):
            return "only the first citation was checked; the citations support the answer together, in any order"
        return _first_match(got[0] if isinstance(got, (tuple, list)) and len(got) == 2 else None, {
            "precision credited citations although the answer is unsupported (recall 0): ALCE gives precision only "
            "when the citations support the answer": 1.0 if hit == 0 else None,
            "precision divided by the supporting documents; it divides by the cited ones":
                hit / len(sup) if sup else None,
            "a redundant citation that supports the answer on its own was counted as irrelevant": 1 / len(cited)
            if hit > 1 else None,
        }) or _first_match(got[1] if isinstance(got, (tuple, list)) and len(got) == 2 else None, {
            "recall counted the share of supporting documents cited; ALCE's recall is 1 if the citations together "
            "support the answer": hit / len(sup) if sup and 0 < hit < len(sup) else None,
            "recall required every citation to support the answer; it asks whether they support it together":
                0.0 if 0 < hit < len(set(cited)) else None,
        })

    run_cases(EX_CITATION, citation_precision_recall, cases, rtol=1e-6, diagnose=diagnose,
              hint="recall = 1.0 if any cited document supports the answer, else 0.0; precision = |cited ∩ supporting| "
                   "/ |cited| when recall is 1.0, else 0.0; (0.0, 0.0) when nothing is cited")


# ----------------------------------------------------------------------------- 5.5 weighted vote

def _vote_loop(answers, reliabilities, n_values=None, *, weight="log_odds", clip=1e-6):
    V = n_values if n_values is not None else max(2, len(set(answers)))
    totals, order = {}, []
    for a, r in zip(answers, reliabilities):
        r = min(r, 1 - clip)
        w = {"log_odds": lambda: math.log(r * (V - 1) / (1 - r)), "raw": lambda: r, "one": lambda: 1.0,
             "plain_log_odds": lambda: math.log(r / (1 - r)),
             "floored": lambda: max(0.0, math.log(r * (V - 1) / (1 - r)))}[weight]()
        if a not in totals:
            totals[a], order = 0.0, order + [a]
        totals[a] += w
    best = order[0]
    for a in order[1:]:
        if totals[a] > totals[best]:
            best = a
    return best


def _vote_cases() -> list:
    specs = [(["Paris", "Lyon", "Lyon"], [0.99, 0.6, 0.6], 10),
             (["x", "y", "y"], [0.6, 0.35, 0.3], 3),
             (["a", "b", "b"], [0.9, 0.7, 0.7], None),
             (["a", "b", "b"], [0.9, 0.7, 0.7], 10),
             (["a", "b", "b", "b"], [1.0, 0.99, 0.99, 0.99], 5),
             (["b", "a"], [0.8, 0.8], None),
             (["a", "b"], [0.8, 0.8], None),
             (["a", "a"], [0.7, 0.9], None),
             (["x", "y", "y"], [0.6, 0.7, 0.2], 2),
             (["a", "b", "b"], [1.0, 0.999, 0.999], 2),
             (["a", "b", "b"], [0.95, 0.3, 0.3], None),
             ([4, 7, 7, 2, 4, 7, 9], [0.95, 0.55, 0.5, 0.9, 0.6, 0.5, 0.4], 20)]
    return [Case(f"answers={a}, reliabilities={r}, n_values={v}", (a, r), _vote_loop(a, r, v), kwargs=dict(n_values=v))
            for a, r, v in specs]


def check_weighted_vote(weighted_vote) -> None:
    def diagnose(got, expected, case):
        a, r = case.args
        v = case.kwargs["n_values"]
        hits = [why for why, kw in [
            ("summed the raw reliabilities; the weight is the log-odds ln(r·(V − 1)/(1 − r))", dict(weight="raw")),
            ("a majority vote: every source weighs the same", dict(weight="one")),
            ("weights ln(r/(1 − r)) leave out the V − 1 wrong values a source can choose from",
             dict(weight="plain_log_odds"))] if _vote_loop(a, r, v, **kw) == got != expected]
        if got == a[int(np.argmax(r))] != expected:
            hits.append("took the most reliable source's answer; add up the weights of every source per answer")
        if got == _vote_loop(a[::-1], r[::-1], v) != expected:
            hits.append("a tie went to the answer seen last (or to the first in some other order, sorted or a "
                        "set's); it goes to the answer seen first")
        if got == _vote_loop(a, r, v, weight="floored") != expected:
            hits.append("a source below chance (r < 1/V) has a negative weight and counts against its answer; "
                        "do not drop or floor it at 0")
        if 1.0 in r and got == _vote_loop(a, r, v, clip=1e-3) != expected:
            hits.append("a perfect source is clipped to r = 1 − 1e-6, no further")
        return " — or — ".join(hits) or None

    run_cases(EX_VOTE, weighted_vote, _vote_cases(), diagnose=diagnose,
              hint="each answer's total is Σ ln(r·(V − 1)/(1 − r)) over the sources giving it, with r clipped to "
                   "1 − 1e-6 and V = n_values or the number of distinct answers (at least 2); return the answer with "
                   "the largest total, the first seen on a tie")
