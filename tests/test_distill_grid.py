"""Lab 02's stored experiments and recipes: a sample of the stored runs reproduces, and the new functions
(floor targets, the KD/CE mix, teacher text, the exposure-bias measurement) match independent references."""

import math

import pytest
import torch

from labutils.data import HMMLanguage
from labutils.distill import grid, recipes
from labutils.distill.onpolicy import exposure_bias
from labutils.model import GPTConfig, TinyGPT


@pytest.fixture(scope="module")
def stored():
    return grid.load()


def test_stored_file_says_how_it_was_made(stored):
    meta = stored["meta"]
    assert meta["command"].startswith("python -m labutils.distill.grid") and meta["torch"] and meta["date"]
    assert {r["spec"]["exp"] for r in stored["runs"]} >= {"efficiency", "temperature", "sparse"}
    for exp in {r["spec"]["exp"] for r in stored["runs"]}:  # every experiment has at least 3 seeds
        assert len({r["spec"]["seed"] for r in grid.select(stored, exp=exp)}) >= 3, exp


@pytest.mark.parametrize("where", [
    dict(exp="efficiency", method="hard", tokens=recipes.TOKENS),
    dict(exp="efficiency", method="kd", teacher="oracle"),
    dict(exp="horizon", teacher="d48 L2", tokens=2 * recipes.TOKENS),
])
def test_a_stored_run_reproduces(stored, where):
    (rec,) = grid.select(stored, seed=1, **where)
    again = grid.run(rec["spec"], cache=False)
    assert again["eval_loss"] == pytest.approx(rec["eval_loss"], abs=2e-3)


def test_floor_targets_keep_the_head_and_spread_the_rest():
    p = torch.softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)), -1)
    q = recipes.floor_targets(p.log(), 3)
    for row_p, row_q in zip(p.tolist(), q.tolist()):
        top = sorted(range(10), key=lambda v: -row_p[v])[:3]
        rest = (1 - sum(row_p[v] for v in top)) / 7
        for v in range(10):
            assert row_q[v] == pytest.approx(row_p[v] if v in top else rest, abs=1e-6)
    assert recipes.sparse_bytes("floor", 4) == 26 and recipes.sparse_bytes("top", 4) == 24


def test_kd_hook_mixes_kd_and_cross_entropy():
    lang = HMMLanguage.random(4, 8, seed=0)
    x = lang.sample(3, 6, seed=1)
    z = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(2))
    log_p = lang.next_token_probs(x)[:, 1:].log()  # float64
    log_q = torch.log_softmax(z[:, :-1].double() / 2, -1)
    kd = (torch.softmax(log_p / 2, -1) * (torch.log_softmax(log_p / 2, -1) - log_q)).sum(-1).mean() * 4  # τ² = 4
    ce = -torch.log_softmax(z[:, :-1].double(), -1).gather(-1, x[:, 1:, None]).mean()
    got = recipes.kd_hook(recipes.oracle_targets(lang), temperature=2.0, alpha=0.3)(z, x, None)
    assert float(got) == pytest.approx(float(0.3 * kd + 0.7 * ce), rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        recipes.kd_hook(recipes.oracle_targets(lang), alpha=1.5)


def test_teacher_text_samples_the_teacher():
    lang = HMMLanguage.random(4, 8, seed=0)
    model = TinyGPT(GPTConfig(vocab_size=8, context_length=8, d_model=8, n_layers=1, n_heads=1))
    src = recipes.TeacherText(model, lang)
    a, b = src.sample(4, 8, seed=[0, 1]), src.sample(4, 8, seed=[0, 1])
    assert a.shape == (4, 8) and torch.equal(a, b) and not torch.equal(a, src.sample(4, 8, seed=[0, 2]))
    assert src.vocab_size == 8 and "teacher-text" in src.fingerprint()


def test_exposure_bias_matches_a_loop_over_the_definition():
    lang = HMMLanguage.random(3, 6, seed=4)
    model = TinyGPT(GPTConfig(vocab_size=6, context_length=5, d_model=8, n_layers=1, n_heads=1))
    out = exposure_bias(model, lang, 8, seed=3)
    x = lang.sample(8, 5, seed=3)  # the real prefixes it scores
    p = lang.next_token_probs(x)
    with torch.no_grad():
        q = torch.softmax(model(x).double(), -1)
    fwd = [sum(p[i, t + 1, v].item() * math.log(p[i, t + 1, v].item() / q[i, t, v].item()) for v in range(6))
           for i in range(8) for t in range(4)]
    assert out["forward_real"] == pytest.approx(sum(fwd) / len(fwd), rel=1e-6)
    assert out["gap_forward"] == pytest.approx(out["forward_own"] - out["forward_real"])
    assert all(out[k] >= 0 for k in ("forward_real", "forward_own", "reverse_real", "reverse_own"))


def test_helpers_reject_bad_input():
    with pytest.raises(ValueError):
        grid.mean_se([])
    with pytest.raises(ValueError):
        recipes.sparse_hook(recipes.oracle_targets(HMMLanguage.random(3, 6, seed=4)), "bottom", 4)
    assert grid.tokens_to_reach([(100, 4.0), (200, 3.5)], 3.0) == math.inf
