"""HMMLanguage against brute-force enumeration on a tiny model (S = 3, V = 4)."""

import itertools

import numpy as np
import pytest
import torch

from labutils.data import HMMLanguage, default_language


@pytest.fixture(scope="module")
def tiny():
    return HMMLanguage.random(3, 4, seed=7, concentration=0.7)


def brute_force_prob(lang, seq):
    """p(x_0..x_{T-1}) by summing over every hidden path — exponential, exact."""
    total = 0.0
    for path in itertools.product(range(lang.n_states), repeat=len(seq)):
        p = lang.initial[path[0]] * lang.emission[path[0], seq[0]]
        for t in range(1, len(seq)):
            p *= lang.transition[path[t - 1], path[t]] * lang.emission[path[t], seq[t]]
        total += p
    return total


@pytest.mark.parametrize("length", [1, 2, 5])
def test_nll_matches_brute_force(tiny, length):
    seqs = list(itertools.product(range(4), repeat=length))
    probs = np.array([brute_force_prob(tiny, s) for s in seqs])
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)  # enumeration covers every sequence
    x = torch.tensor(seqs)
    for i, s in enumerate(seqs[:: max(1, len(seqs) // 50)]):
        want = -np.log(brute_force_prob(tiny, s)) / length
        assert tiny.nll(torch.tensor([s])) == pytest.approx(want, rel=1e-10)
    # the mean over a batch is the mean of per-sequence NLLs
    assert tiny.nll(x) == pytest.approx(np.mean(-np.log(probs)) / length, rel=1e-10)


def test_nll_from_position_is_conditional(tiny):
    s = (0, 3, 1, 2, 2)
    p_all, p_prefix = brute_force_prob(tiny, s), brute_force_prob(tiny, s[:2])
    want = -np.log(p_all / p_prefix) / 3  # positions 2, 3, 4 given the first two tokens
    assert tiny.nll(torch.tensor([s]), from_position=2) == pytest.approx(want, rel=1e-10)


def test_next_token_probs_match_brute_force(tiny):
    s = (1, 0, 3, 3)
    probs = tiny.next_token_probs(torch.tensor([s]))
    assert probs.shape == (1, 4, 4)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 4, dtype=torch.float64), atol=1e-12)
    for t in range(4):
        prefix = brute_force_prob(tiny, s[:t]) if t else 1.0
        want = [brute_force_prob(tiny, s[:t] + (v,)) / prefix for v in range(4)]
        assert probs[0, t].numpy() == pytest.approx(want, rel=1e-10)


def test_sample_frequencies_match_marginals(tiny):
    x = tiny.sample(40_000, 4, seed=3)
    assert x.dtype == torch.long and x.shape == (40_000, 4)
    state = tiny.initial.copy()
    for t in range(4):
        want = state @ tiny.emission
        got = np.bincount(x[:, t].numpy(), minlength=4) / x.shape[0]
        # binomial standard error at n = 40k is <= 0.0025; 4 sigma keeps the test from flaking
        assert np.abs(got - want).max() < 0.01, (t, got, want)
        state = state @ tiny.transition


def test_sample_is_deterministic(tiny):
    assert torch.equal(tiny.sample(5, 7, seed=1), tiny.sample(5, 7, seed=1))
    assert not torch.equal(tiny.sample(50, 7, seed=1), tiny.sample(50, 7, seed=2))


def test_default_language_is_fixed():
    lang = default_language()
    assert (lang.n_states, lang.vocab_size) == (256, 64)
    assert lang.fingerprint() == default_language().fingerprint()


def test_default_language_leaves_much_to_learn():
    """The scaling lab needs structure beyond bigrams: the exact floor is far below what one token of
    context allows (a bigram model's best loss, computed exactly from the stationary chain)."""
    lang = default_language()
    x = lang.sample(400, 64, seed=3)
    floor = lang.nll(x, from_position=32)  # far from the start: the entropy rate
    A, B = lang.transition, lang.emission
    pi = np.linalg.matrix_power(A, 400)[0]  # stationary state distribution
    joint = (pi[:, None] * B).T @ A @ B  # (V, V): p(x_t = a, x_t+1 = b) in the stationary chain
    cond = joint / joint.sum(1, keepdims=True)
    bigram = float(-(joint * np.log(cond)).sum())
    assert bigram - floor > 0.4, (bigram, floor)


def test_sticky_language_structure():
    lang = HMMLanguage.sticky(16, 8, seed=0, stay=0.8, zipf=0.5, transition_concentration=0.05,
                              emission_concentration=0.1)
    assert np.all(np.diag(lang.transition) >= 0.8 - 1e-9)  # each state keeps itself at least `stay` of the time
    zipf = np.arange(1, 17) ** -0.5
    np.testing.assert_allclose(lang.initial, zipf / zipf.sum())
    assert lang.fingerprint() == HMMLanguage.sticky(16, 8, seed=0, stay=0.8, zipf=0.5, transition_concentration=0.05,
                                                    emission_concentration=0.1).fingerprint()


@pytest.mark.parametrize("kw, words", [(dict(stay=1.0), "stay"), (dict(zipf=-1.0), "zipf"),
                                       (dict(transition_concentration=0.0), "transition_concentration"),
                                       (dict(emission_concentration=float("nan")), "emission_concentration")])
def test_sticky_bad_arguments(kw, words):
    args = dict(seed=0, stay=0.5, zipf=1.0, transition_concentration=0.1, emission_concentration=0.1) | kw
    with pytest.raises(ValueError, match=words):
        HMMLanguage.sticky(8, 4, **args)


GOOD = dict(initial=[0.5, 0.5], transition=[[0.9, 0.1], [0.2, 0.8]], emission=[[0.5, 0.5], [0.1, 0.9]])


@pytest.mark.parametrize(
    "arg, value, words",
    [
        ("initial", [0.5, 0.6], "sum to 1"),
        ("initial", [[0.5, 0.5]], "dimension"),
        ("initial", [1.5, -0.5], "negative"),
        ("initial", [float("nan"), 1.0], "NaN"),
        ("transition", [[0.9, 0.1]], "shape"),
        ("transition", [[0.9, 0.2], [0.2, 0.8]], "sum to 1"),
        ("emission", [[0.5, 0.5]], "rows"),
        ("emission", [[0.5, 0.5], [0.1, 0.900002]], "sum to 1"),
        ("emission", "abc", "emission"),
    ],
)
def test_bad_arguments_raise_value_error(arg, value, words):
    kwargs = dict(GOOD, **{arg: value})
    with pytest.raises(ValueError, match=arg) as info:
        HMMLanguage(**kwargs)
    assert words.lower() in str(info.value).lower()


def test_row_sum_tolerance_is_1e_6():
    HMMLanguage(**dict(GOOD, initial=[0.5, 0.5 + 5e-7]))  # within 1e-6: accepted


def test_bad_tokens(tiny):
    with pytest.raises(ValueError, match="token ids"):
        tiny.nll(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="integer"):
        tiny.nll(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="from_position"):
        tiny.nll(torch.tensor([[0, 1]]), from_position=2)
