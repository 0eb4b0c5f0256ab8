"""When sources disagree: majority vote, reliability-weighted vote, and reliabilities learnt from agreement.

A source of reliability r states the truth with probability r and otherwise one of the V − 1 wrong
values. If wrong values were equally likely and sources independent, the posterior log-odds of a value
is the sum, over the documents stating it, of w = ln(r·(V − 1)/(1 − r)) — the weighted vote. Dawid &
Skene 1979 ("Maximum Likelihood Estimation of Observer Error-Rates Using the EM Algorithm", Applied
Statistics 28(1):20–28) estimate unknown reliabilities from agreement alone with EM; ``estimate_reliabilities``
is their method with one accuracy per source (the "one-coin" model).

Left out on purpose: per-value confusion matrices, priors over values, sources that copy each other
(the corpus's sources repeat their *own* mistakes, which the one-coin model does not know).

    >>> weighted_vote(["Paris", "Lyon", "Lyon"], [0.99, 0.6, 0.6], n_values=10)   # 4.6 + ln 9 vs 2 × (0.4 + ln 9)
    'Paris'
    >>> majority_vote(["Paris", "Lyon", "Lyon"])
    'Lyon'
"""

from __future__ import annotations

import math

import numpy as np

PERFECT = 1 - 1e-6  # a perfect source's reliability is clipped here, so its weight stays finite


def _check_answers(answers) -> list:
    if isinstance(answers, np.ndarray):
        answers = answers.tolist()
    if not isinstance(answers, (list, tuple)) or not answers:
        raise ValueError(f"answers must be a non-empty list, got {answers!r:.80}")
    try:
        [hash(a) for a in answers]
    except TypeError:
        raise ValueError("answers must be hashable values (ints, strings)") from None
    return list(answers)


def majority_vote(answers):
    """The most frequent answer; ties go to the answer seen first."""
    answers = _check_answers(answers)
    counts = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    return max(counts, key=counts.get)  # dicts keep first-seen order and max keeps the first maximum


def log_odds_weight(reliability: float, n_values: int) -> float:
    """w = ln(r·(V − 1)/(1 − r)): 0 for a source no better than chance (r = 1/V), negative below it."""
    r = min(float(reliability), PERFECT)
    return math.log(r * (n_values - 1) / (1 - r))


def weighted_vote(answers, reliabilities, *, n_values: int | None = None):
    """The answer with the largest sum of log-odds weights ln(r·(V − 1)/(1 − r)); ties go to the first seen.

    V is ``n_values``, or else the number of distinct answers (at least 2). Reliabilities lie in (0, 1];
    a perfect source (r = 1) is clipped to 1 − 1e-6.
    """
    answers = _check_answers(answers)
    try:
        rel = np.asarray(reliabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("reliabilities must be numbers in (0, 1]") from None
    if rel.shape != (len(answers),):
        raise ValueError(f"reliabilities must have one number per answer ({len(answers)}), got shape {rel.shape}")
    if not np.all(np.isfinite(rel)) or np.any(rel <= 0) or np.any(rel > 1):
        raise ValueError(f"reliabilities must lie in (0, 1], got {rel.tolist()}")
    distinct = list(dict.fromkeys(answers))
    if n_values is None:
        V = max(2, len(distinct))
    elif not isinstance(n_values, (int, np.integer)) or isinstance(n_values, bool) or n_values < max(2, len(distinct)):
        raise ValueError(f"n_values must be an int >= 2 and >= the {len(distinct)} distinct answers, got {n_values!r}")
    else:
        V = int(n_values)
    total = dict.fromkeys(distinct, 0.0)
    for a, r in zip(answers, rel):
        total[a] += log_odds_weight(r, V)
    return max(total, key=total.get)


def estimate_reliabilities(claims, n_values, n_sources: int, *, n_iter: int = 10, start: float = 0.7) -> tuple:
    """EM for the one-coin Dawid–Skene model. Returns (reliabilities (n_sources,), posterior answers).

    claims:   one list per item (a fact) of (source index, value) pairs;
    n_values: the number of possible values of each item (an int, or one int per item).
    E-step: the posterior over each item's true value given the reliabilities (uniform prior; the values
    nobody claimed share the all-wrong likelihood). M-step: a source's reliability is the expected share
    of its claims that are true. Starts from every source at ``start``.
    """
    if not isinstance(claims, (list, tuple)) or not claims:
        raise ValueError("claims must be a non-empty list of lists of (source, value) pairs")
    V = np.broadcast_to(np.asarray(n_values, dtype=np.int64), (len(claims),))
    if np.any(V < 2):
        raise ValueError("n_values must be >= 2 for every item")
    rel = np.full(int(n_sources), float(start))
    for _ in range(int(n_iter)):
        hits, totals = np.zeros(len(rel)), np.zeros(len(rel))
        for item, v_count in zip(claims, V):
            post = _posterior(item, rel, int(v_count))
            for s, value in item:
                hits[s] += post.get(value, 0.0)
                totals[s] += 1
        rel = np.where(totals > 0, np.clip(hits / np.maximum(totals, 1), 1e-3, PERFECT), rel)
    answers = [max(p := _posterior(item, rel, int(v)), key=p.get) if item else None for item, v in zip(claims, V)]
    return rel, answers


def _posterior(item, rel: np.ndarray, n_values: int) -> dict:
    """p(true value = v | claims) for each claimed v (the unclaimed values take the rest of the mass)."""
    if not item:
        return {}
    wrong = np.log((1 - rel) / (n_values - 1))  # log p(claim | it is not the truth), per source
    base = sum(wrong[s] for s, _ in item)  # log-likelihood when every claim is wrong
    logp = {}
    for s, value in item:  # each claim of v turns one "wrong" factor into "right"
        logp[value] = logp.get(value, base) + math.log(rel[s]) - wrong[s]
    n_unclaimed = n_values - len(logp)
    m = max(max(logp.values()), base)
    z = sum(math.exp(v - m) for v in logp.values()) + n_unclaimed * math.exp(base - m)
    return {v: math.exp(lp - m) / z for v, lp in logp.items()}


def claims_about(corpus, facts) -> list:
    """For each fact (entity, attribute): the (source index, value stated) of every document mentioning it."""
    names = list(corpus.sources)
    src = np.array([names.index(s) for s in corpus.source_of])
    by_fact = {}
    doc_of = np.repeat(np.arange(len(src)), corpus.facts.shape[1])  # the document of each mention
    for d, (e, a, v) in zip(doc_of, corpus.facts.reshape(-1, 3).tolist()):
        by_fact.setdefault((e, a), []).append((int(src[d]), int(v)))
    return [by_fact.get((int(e), int(a)), []) for e, a in np.asarray(facts).reshape(-1, 2)]


def vote_accuracies(corpus, facts, vote=weighted_vote, *, n_iter: int = 10) -> dict:
    """Accuracy of majority vote, ``vote`` with the true reliabilities, and the weighted vote with reliabilities
    estimated by EM, over the questions (facts) that at least one document mentions — and, under the keys
    ``contested_…``, over those whose documents disagree (two or more values); plus the EM estimates."""
    facts = np.asarray(facts).reshape(-1, 2)
    claims = claims_about(corpus, facts)
    keep = [i for i, c in enumerate(claims) if c]
    truth = corpus.world.truth[facts[keep, 0], facts[keep, 1]]
    V = corpus.world.n_values[facts[keep, 1]]
    rel = np.array(list(corpus.sources.values()))
    unique = {}
    for i in keep:  # EM sees each fact once, whatever the queries' repeats
        unique.setdefault(tuple(facts[i]), claims[i])
    keys = list(unique)
    est, _ = estimate_reliabilities([unique[k] for k in keys], corpus.world.n_values[[k[1] for k in keys]], len(rel),
                                    n_iter=n_iter)
    out, contested = dict(majority=[], weighted=[], em=[]), []
    for i, t, v in zip(keep, truth, V):
        values, srcs = [val for _, val in claims[i]], [s for s, _ in claims[i]]
        contested.append(len(set(values)) > 1)
        out["majority"].append(majority_vote(values) == t)
        out["weighted"].append(vote(values, [float(rel[s]) for s in srcs], n_values=int(v)) == t)
        out["em"].append(weighted_vote(values, [float(est[s]) for s in srcs], n_values=int(v)) == t)
    hard = np.array(contested)
    res = {k: float(np.mean(v)) for k, v in out.items()}
    res |= {f"contested_{k}": float(np.mean(np.array(v)[hard])) if hard.any() else float("nan") for k, v in out.items()}
    return res | dict(em_reliabilities=est, n_facts=len(keep), contested_share=float(hard.mean()))
