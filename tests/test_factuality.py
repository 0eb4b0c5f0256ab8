"""Lab 05's reference code against independent oracles: plain loops over each definition, brute force, the
world's known truth. Bad inputs raise ValueError naming the argument."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from labutils.factuality import (
    World,
    bm25_scores,
    citation_precision_recall,
    expected_calibration_error,
    singleton_rate,
    weighted_vote,
)
from labutils.factuality.calibration import abstention_curve, confidence_target_score, reliability_table
from labutils.factuality.retrieval import BM25Index, exact_match, top_k
from labutils.factuality.sources import estimate_reliabilities, majority_vote
from labutils.factuality.world import DOC


@pytest.fixture(scope="module")
def world():
    return World.generate(40, {"city": 6, "field": 4, "year": 5}, seed=3)


@pytest.fixture(scope="module")
def corpus(world):
    return world.corpus(300, zipf=1.0, sources={"wiki": 1.0, "blog": 0.7, "farm": 0.3}, seed=4, facts_per_document=2)


# ----------------------------------------------------------------------------- world and corpus

def test_world_is_seeded_and_uniform():
    a = World.generate(2000, {"x": 4, "y": 10}, seed=0)
    assert np.array_equal(a.truth, World.generate(2000, {"x": 4, "y": 10}, seed=0).truth)
    assert not np.array_equal(a.truth, World.generate(2000, {"x": 4, "y": 10}, seed=1).truth)
    for j, n in enumerate((4, 10)):  # every value equally likely: counts within 5 standard deviations
        counts = np.bincount(a.truth[:, j], minlength=n)
        assert counts.size == n and np.all(np.abs(counts - 2000 / n) < 5 * math.sqrt(2000 / n))


def test_tokens_are_distinct_and_decode(world):
    names = world.token_names()
    assert len(names) == world.vocab_size == len(set(names))
    toks = [world.attribute_token(2), world.entity_token(3), world.value_token(2, 4)]
    assert world.decode([DOC] + toks) == "<doc> year e3 year=4"
    assert world.value_tokens(1).tolist() == [world.value_token(1, v) for v in range(4)]


def test_corpus_records_match_its_documents(world, corpus):
    """fact_counts and supporting, recomputed by reading every document's tokens."""
    counts, support = Counter(), {}
    ent0, attr0 = world.entity_token(0), world.attribute_token(0)
    for d, doc in enumerate(corpus.documents):
        assert doc[0] == DOC and len(doc) == 2 + 3 * 2
        for i in range(1, len(doc) - 1, 3):
            a, e = doc[i] - attr0, doc[i + 1] - ent0
            v = doc[i + 2] - world.value_token(a, 0)
            counts[(e, a)] += 1
            if v == world.truth[e, a]:
                support.setdefault((e, a), set()).add(d)
    assert {k: v for k, v in corpus.fact_counts.items() if v} == dict(counts)
    assert {k: v for k, v in corpus.supporting.items() if v} == support
    assert len(corpus.fact_counts) == world.n_facts  # unmentioned facts are there, with count 0
    assert corpus.counts().sum() == corpus.n_mentions == 600


def test_source_reliability_and_consistent_errors(world):
    c = world.corpus(4000, zipf=0.5, sources={"good": 0.9, "bad": 0.4}, seed=1)
    for name, r in c.sources.items():
        rows = [d for d, s in enumerate(c.source_of) if s == name]
        f = c.facts[rows].reshape(-1, 3)
        right = np.mean(f[:, 2] == world.truth[f[:, 0], f[:, 1]])
        assert abs(right - r) < 4 * math.sqrt(r * (1 - r) / len(f))
        wrong = f[f[:, 2] != world.truth[f[:, 0], f[:, 1]]]  # one source always states the same wrong value
        per_fact = {}
        for e, a, v in wrong.tolist():
            per_fact.setdefault((e, a), set()).add(v)
        assert all(len(vals) == 1 for vals in per_fact.values())


def test_corpus_is_a_data_source(corpus):
    x = corpus.sample(5, 20, seed=[1, 2])
    assert x.dtype == torch.long and x.shape == (5, 20)
    assert torch.equal(x, corpus.sample(5, 20, seed=[1, 2])) and not torch.equal(x, corpus.sample(5, 20, seed=[1, 3]))
    assert torch.all(x[:, 0] == DOC) and torch.all(x[:, 8] == DOC)  # packed whole documents of 8 tokens
    assert x.max() < corpus.vocab_size
    again = dict(zipf=1.0, sources=corpus.sources, facts_per_document=2)
    assert corpus.fingerprint() == corpus.world.corpus(300, seed=4, **again).fingerprint()
    assert corpus.fingerprint() != corpus.world.corpus(300, seed=5, **again).fingerprint()


def test_queries_follow_popularity(corpus):
    q = corpus.draw_queries(20_000, seed=0)
    freq = np.bincount(q[:, 0], minlength=corpus.world.n_entities) / len(q)
    assert np.abs(freq - corpus.popularity).max() < 0.01


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_entities=0, attributes={"a": 3}), "n_entities"),
    (dict(n_entities=5, attributes={}), "attributes"),
    (dict(n_entities=5, attributes={"a": 1}), "attributes"),
    (dict(n_entities=5, attributes={"a b": 3}), "attributes"),
])
def test_world_bad_inputs(kwargs, word):
    with pytest.raises(ValueError, match=word):
        World.generate(**kwargs, seed=0)


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_documents=0), "n_documents"),
    (dict(zipf=-1.0), "zipf"),
    (dict(sources={}), "sources"),
    (dict(sources={"a": 1.5}), "sources"),
    (dict(sources={"a": 0.0}), "sources"),
    (dict(shares={"b": 1.0}), "shares"),
    (dict(facts_per_document=4), "facts_per_document"),
    (dict(seed=-1), "seed"),
])
def test_corpus_bad_inputs(world, kwargs, word):
    args = dict(n_documents=10, zipf=1.0, sources={"a": 1.0}, seed=0) | kwargs
    with pytest.raises(ValueError, match=word):
        world.corpus(args.pop("n_documents"), **args)


# ----------------------------------------------------------------------------- singleton rate

def test_singleton_rate_is_good_turing_n1_over_n(corpus):
    counts = list(corpus.fact_counts.values())
    n1 = sum(1 for c in counts if c == 1)
    assert singleton_rate(counts) == n1 / sum(counts)
    assert singleton_rate(corpus.fact_counts) == singleton_rate(counts)  # a dict of counts works too
    assert singleton_rate(np.array([[1, 0], [2, 1]])) == 0.5


def test_good_turing_predicts_missing_mass():
    """N1/N estimates the chance that a fresh draw is a fact never seen (Good 1953), averaged over corpora."""
    world = World.generate(300, {"a": 10, "b": 10}, seed=0)
    sr, missing = [], []
    for seed in range(20):
        c = world.corpus(600, zipf=1.0, sources={"s": 1.0}, seed=seed)
        sr.append(singleton_rate(c.fact_counts))
        q = c.draw_queries(4000, seed=seed)
        missing.append(np.mean(c.counts()[q[:, 0], q[:, 1]] == 0))
    assert abs(np.mean(sr) - np.mean(missing)) < 0.02


@pytest.mark.parametrize("counts, word", [([1, -1], "negative"), ([0, 0], "zero"), ([], "counts"),
                                          (["a"], "counts"), ([0.5, 1], "counts")])
def test_singleton_rate_bad_inputs(counts, word):
    with pytest.raises(ValueError, match=word):
        singleton_rate(counts)


# ----------------------------------------------------------------------------- calibration

def _ece_histogram(conf, ok, n_bins):
    """ECE from np.histogram's equal-width bins (its last bin is closed: 1.0 falls in it)."""
    edges = np.linspace(0, 1, n_bins + 1)
    n, _ = np.histogram(conf, edges)
    s_conf, _ = np.histogram(conf, edges, weights=conf)
    s_ok, _ = np.histogram(conf, edges, weights=ok.astype(float))
    used = n > 0
    return float(np.sum(np.abs(s_ok[used] - s_conf[used])) / len(conf))


@pytest.mark.parametrize("seed, n_bins", [(0, 10), (1, 5), (2, 15), (3, 1)])
def test_ece_matches_a_direct_histogram(seed, n_bins):
    rng = np.random.default_rng(seed)
    conf = np.concatenate([rng.random(500), np.ones(20)])  # random floats never sit exactly on an inner edge
    ok = rng.random(520) < conf**1.5
    want = _ece_histogram(conf, ok, n_bins)
    assert expected_calibration_error(conf, ok, n_bins=n_bins) == pytest.approx(want, abs=1e-12)


def test_ece_of_a_calibrated_model_is_small_and_table_adds_up():
    rng = np.random.default_rng(0)
    conf = rng.random(200_000)
    ok = rng.random(200_000) < conf
    assert expected_calibration_error(conf, ok) < 0.005
    t = reliability_table(conf, ok, n_bins=10)
    assert t["count"].sum() == 200_000 and np.allclose(t["accuracy"], t["confidence"], atol=0.01)


@pytest.mark.parametrize("conf, ok, kw, word", [
    ([0.5, 1.2], [1, 0], {}, "confidence"), ([0.5, float("nan")], [1, 0], {}, "confidence"),
    ([0.5], [1, 0], {}, "correct"), ([], [], {}, "confidence"), ([0.5], [2], {}, "correct"),
    ([0.5], [1], dict(n_bins=0), "n_bins"),
])
def test_ece_bad_inputs(conf, ok, kw, word):
    with pytest.raises(ValueError, match=word):
        expected_calibration_error(conf, ok, **kw)


def test_confidence_target_score_by_hand():
    conf, ok = np.array([0.95, 0.8, 0.6, 0.3]), np.array([True, False, True, False])
    assert confidence_target_score(conf, ok, 0.0) == pytest.approx(0.5)  # binary grading: 2 of 4 right
    assert confidence_target_score(conf, ok, 0.75) == pytest.approx((1 - 3) / 4)  # answers 2: one right, one −3
    assert confidence_target_score(conf, ok, 0.9) == pytest.approx(1 / 4)
    assert confidence_target_score(conf, ok, 0.9, threshold=0.0) == pytest.approx((2 - 2 * 9) / 4)
    with pytest.raises(ValueError, match="t"):
        confidence_target_score(conf, ok, 1.0)


def test_abstaining_below_t_is_optimal_for_a_calibrated_model():
    rng = np.random.default_rng(1)
    conf = rng.random(100_000)
    ok = rng.random(100_000) < conf
    for t in (0.5, 0.75, 0.9):
        scores = {th: confidence_target_score(conf, ok, t, threshold=th) for th in np.linspace(0, 0.99, 100)}
        best = max(scores, key=scores.get)
        assert abs(best - t) < 0.05


def test_abstention_curve():
    c = abstention_curve([0.9, 0.7, 0.2], [True, False, True], [0.0, 0.5, 0.95])
    assert c["coverage"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert c["accuracy"][:2].tolist() == pytest.approx([2 / 3, 0.5]) and math.isnan(c["accuracy"][2])


# ----------------------------------------------------------------------------- BM25

def _bm25_plain(query, docs, k1=1.2, b=0.75):
    N, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    scores = []
    for d in docs:
        s = 0.0
        for t in set(query):
            n_t = sum(t in x for x in docs)
            f = d.count(t)
            if f:
                idf = math.log(1 + (N - n_t + 0.5) / (n_t + 0.5))
                s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return np.array(scores)


@pytest.mark.parametrize("seed, k1, b", [(0, 1.2, 0.75), (1, 2.0, 0.0), (2, 0.5, 1.0), (3, 0.0, 0.5)])
def test_bm25_matches_a_plain_loop(seed, k1, b):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 15, size=rng.integers(1, 12)).tolist() for _ in range(30)]
    q = rng.integers(0, 18, size=4).tolist()  # may include tokens no document holds
    assert np.allclose(bm25_scores(q, docs, k1=k1, b=b), _bm25_plain(q, docs, k1, b), rtol=1e-12, atol=1e-12)


def test_bm25_weights_are_never_negative_and_index_agrees(corpus):
    docs = [[1, 2]] * 9 + [[3]]  # token 1 is in 90% of the documents
    assert np.all(bm25_scores([1], docs)[:9] > 0)
    index = BM25Index(corpus.documents)
    q = corpus.documents[7][1:3]  # an attribute and an entity
    assert np.allclose(index.scores(q), _bm25_plain(q, corpus.documents))
    assert index.top_k(q, 3)[0] in {d for d, doc in enumerate(corpus.documents) if set(q) <= set(doc)}


def test_exact_match_and_top_k():
    assert exact_match([1, 2], [[1, 2, 3], [1, 4], [2, 1]]) == [0, 2]
    assert top_k([0.5, 2.0, 2.0, 1.0], 3) == [1, 2, 3]


@pytest.mark.parametrize("args, kw, word", [
    (([1], []), {}, "documents"), (([1], [[1], "ab"]), {}, "documents"), ((["a"], [[1]]), {}, "query_tokens"),
    (([1], [[1]]), dict(k1=-1.0), "k1"), (([1], [[1]]), dict(b=2.0), "b"),
])
def test_bm25_bad_inputs(args, kw, word):
    with pytest.raises(ValueError, match=word):
        bm25_scores(*args, **kw)


# ----------------------------------------------------------------------------- citations

def _alce(cited, supporting):
    """ALCE's rules by brute force over subsets: recall = the union entails; a citation is irrelevant iff it does
    not entail alone and the rest still entail. A union entails iff one member states the fact."""
    cited = list(dict.fromkeys(cited))
    entails = lambda docs: any(d in supporting for d in docs)
    if not cited or not entails(cited):
        return 0.0, 0.0
    irrelevant = sum(not entails([d]) and entails([x for x in cited if x != d]) for d in cited)
    return 1 - irrelevant / len(cited), 1.0


def test_citations_match_alce_on_every_small_case():
    docs = range(5)
    for mask_c in range(32):
        for mask_s in range(32):
            cited = [d for d in docs if mask_c >> d & 1]
            sup = {d for d in docs if mask_s >> d & 1}
            assert citation_precision_recall(cited, sup) == pytest.approx(_alce(cited, sup))


@pytest.mark.parametrize("cited, supporting, word", [(None, {1}, "cited"), ([1], None, "supporting"),
                                                      (["a"], {1}, "cited"), ([1], [1], "supporting")])
def test_citations_bad_inputs(cited, supporting, word):
    with pytest.raises(ValueError, match=word):
        citation_precision_recall(cited, supporting)


# ----------------------------------------------------------------------------- voting

def _posterior_argmax(answers, rel, V):
    """Brute-force Bayes: p(truth = v) ∝ Π_i [r_i if a_i = v else (1 − r_i)/(V − 1)], over claimed values."""
    best, best_p = None, -1.0
    for v in dict.fromkeys(answers):
        p = math.prod(min(r, 1 - 1e-6) if a == v else (1 - min(r, 1 - 1e-6)) / (V - 1) for a, r in zip(answers, rel))
        if p > best_p * (1 + 1e-12):
            best, best_p = v, p
    return best


def test_weighted_vote_is_the_bayes_answer():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n, V = rng.integers(1, 8), int(rng.integers(2, 12))
        answers = rng.integers(0, V, size=n).tolist()
        rel = rng.uniform(0.05, 1.0, size=n).round(3).tolist()
        assert weighted_vote(answers, rel, n_values=V) == _posterior_argmax(answers, rel, V)


def test_vote_ties_and_defaults():
    assert weighted_vote(["b", "a"], [0.8, 0.8]) == "b" and majority_vote(["b", "a", "a", "b"]) == "b"
    assert weighted_vote(["a", "b", "b"], [0.9, 0.7, 0.7]) == "a"  # V = 2 distinct answers
    assert weighted_vote(["a", "b", "b"], [0.9, 0.7, 0.7], n_values=10) == "b"
    assert weighted_vote(["a", "b"], [1.0, 0.999]) == "a"  # a perfect source is clipped, not infinite


@pytest.mark.parametrize("args, kw, word", [
    (([], []), {}, "answers"), ((["a"], [0.5, 0.5]), {}, "reliabilities"), ((["a"], [0.0]), {}, "reliabilities"),
    ((["a"], [1.5]), {}, "reliabilities"), ((["a", "b"], [0.5, 0.5]), dict(n_values=1), "n_values"),
    (([["x"]], [0.5]), {}, "answers"),
])
def test_vote_bad_inputs(args, kw, word):
    with pytest.raises(ValueError, match=word):
        weighted_vote(*args, **kw)


def test_em_recovers_reliabilities_of_independent_sources():
    """With independent uniform errors (the one-coin model's own assumption) EM finds each source's reliability."""
    rng = np.random.default_rng(0)
    true_r, V, claims = np.array([0.9, 0.75, 0.5, 0.3]), 8, []
    for _ in range(3000):
        truth = rng.integers(V)
        item = []
        for s in rng.choice(4, size=rng.integers(2, 5), replace=False):
            v = truth if rng.random() < true_r[s] else (truth + rng.integers(1, V)) % V
            item.append((int(s), int(v)))
        claims.append(item)
    est, _ = estimate_reliabilities(claims, V, 4, n_iter=20)
    assert np.allclose(est, true_r, atol=0.03)


# ----------------------------------------------------------------------------- reader and stored data

def test_reader_task_layout_and_mask():
    from labutils.factuality.reader import ReaderTask, answer_mask
    from labutils.factuality.world import END, QUERY

    task = ReaderTask(World.generate(30, {"city": 6, "field": 4}, seed=0), n_worlds=2, n_documents=200, seed=0)
    x = task.sample(8, task.length, seed=[0, 1])
    assert x.shape == (8, task.length) and torch.equal(x, task.sample(8, task.length, seed=[0, 1]))
    mask = answer_mask(x)
    for row, m in zip(x, mask):
        q = (row == QUERY).nonzero().flatten().tolist()
        assert q[0] == task.prefix - 3 and len(q) == task.n_questions
        first = row[q[0] + 3 :][: (row[q[0] + 3 :] == END).nonzero()[0, 0] + 1]  # value, citations, <end>
        assert torch.equal(row[m][: len(first)], first)
        assert not m[: task.prefix].any()


def test_stored_readers_load_and_read():
    from labutils.factuality.reader import K_DOCS, query_tokens, read
    from labutils.factuality.retrieval import BM25Index
    from labutils.factuality.stored import ATTRIBUTES, N_ENTITIES, load_readers

    readers, meta = load_readers()
    assert len(readers) == 3 and meta["command"] == "python -m labutils.factuality train"
    w = World.generate(N_ENTITIES, ATTRIBUTES, seed=0)
    c = w.corpus(3000, zipf=1.0, sources={"a": 1.0}, seed=0)
    facts = np.argwhere(c.counts() >= 1)[:300]
    index = BM25Index(c.documents)
    ret = [index.top_k(query_tokens(w, e, a), K_DOCS) for e, a in facts.tolist()]
    values, conf, cited = read(readers[0], w, c.documents, ret, facts)
    assert np.mean(values == w.truth[facts[:, 0], facts[:, 1]]) > 0.5  # far above guessing (≈ 0.06)
    assert all(set(ci) <= set(r) for ci, r in zip(cited, ret)) and np.all((conf > 0) & (conf <= 1))


def test_stored_sample_reproduces():
    """The package command's recipe, re-run for its short sample, gives the stored training curve."""
    from labutils.factuality.stored import DATA_PATH, train_reader

    sample = torch.load(DATA_PATH, weights_only=False)["sample"]
    run = train_reader(sample["seed"], tokens=sample["tokens"], cache=False, progress=False)
    got, want = np.array([l for _, l in run.curve]), np.array([l for _, l in sample["curve"]])
    assert got.shape == want.shape and np.allclose(got, want, atol=0.02), np.abs(got - want).max()
