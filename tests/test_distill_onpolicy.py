"""On-policy distillation helpers (lab 02 §5) against exact references: a 'student' that is the
language itself has sequence reverse KL exactly 0, and its samples have the language's entropy."""

import pytest
import torch

from labutils import torch_threads
from labutils.checks import CheckFailed
from labutils.data import HMMLanguage
from labutils.distill import check_onpolicy_loss, gkd_hook, onpolicy_loss, sample_student, sequence_reverse_kl
from labutils.model import GPTConfig, TinyGPT


class OracleStudent(torch.nn.Module):
    """Logits at t = log p_true(x_{t+1} | x_≤t): the perfect student (a reference, not a transformer)."""

    def __init__(self, language, T):
        super().__init__()
        self.language = language
        self.config = GPTConfig(vocab_size=language.vocab_size, context_length=T, d_model=8, n_layers=1, n_heads=1)

    def forward(self, x):
        n, t = x.shape
        nxt = torch.cat([x, torch.zeros(n, 1, dtype=x.dtype)], 1)  # any token: probs[:, t] ignores x_t
        return self.language.next_token_probs(nxt)[:, 1:].log().float()  # (n, t, V)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # these tiny ops are overhead-bound; two threads on a busy 2-core machine wait
        yield


@pytest.fixture(scope="module")
def lang():
    return HMMLanguage.random(5, 12, seed=3, concentration=0.3)


def test_perfect_student_has_zero_sequence_reverse_kl(lang):
    m = sequence_reverse_kl(OracleStudent(lang, 12), lang, 64, seed=0)
    assert abs(m["reverse_kl"]) < 1e-5  # log p_student(x) = log p_true(x) for every sampled x
    assert m["reverse_kl"] == pytest.approx(m["true_nll"] - m["student_entropy"], abs=1e-12)


def test_sampler_draws_from_the_model(lang):
    x = sample_student(OracleStudent(lang, 16), lang, 500, seed=1)  # (500, 16) from the language itself
    assert x.shape == (500, 16)
    ref = lang.sample(500, 16, seed=2)
    # the mean NLL of the samples is the language's entropy: compare with the language's own samples
    assert lang.nll(x, from_position=1) == pytest.approx(lang.nll(ref, from_position=1), abs=0.1)  # ±4 standard errors of the difference


def test_colder_sampling_lowers_true_nll_but_not_reverse_kl(lang):
    s = OracleStudent(lang, 12)
    warm, cold = (sequence_reverse_kl(s, lang, 128, seed=4, temperature=t) for t in (1.0, 0.3))
    assert cold["true_nll"] < warm["true_nll"] and cold["reverse_kl"] > warm["reverse_kl"] + 0.05


def test_metric_terms_match_the_forward_algorithm_and_its_standard_error_is_honest(lang):
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=12, context_length=12, d_model=8, n_layers=1, n_heads=1))
    m = sequence_reverse_kl(model, lang, 32, seed=3)
    x = sample_student(model, lang, 32, seed=3)  # the same draws
    assert m["true_nll"] == pytest.approx(lang.nll(x, from_position=1), rel=1e-9)  # HMM forward algorithm
    with torch.no_grad():
        h = torch.nn.functional.cross_entropy(model.eval()(x)[:, :-1].reshape(-1, 12), x[:, 1:].reshape(-1))
    assert m["student_entropy"] == pytest.approx(h.item(), rel=1e-5)
    # the standard error must describe the spread of the estimate over independent draws
    estimates = [sequence_reverse_kl(model, lang, 32, seed=s) for s in range(100, 140)]
    spread = torch.tensor([e["reverse_kl"] for e in estimates], dtype=torch.float64).std().item()
    mean_se = sum(e["reverse_kl_se"] for e in estimates) / len(estimates)
    assert 0.7 < spread / mean_se < 1.4  # 40 estimates: the ratio's own sampling error is ≈ ±11%


def test_gkd_hook_returns_a_differentiable_loss(lang):
    model = TinyGPT(GPTConfig(vocab_size=12, context_length=8, d_model=8, n_layers=1, n_heads=1))
    x = lang.sample(4, 8, seed=0)
    for lam in (0.0, 0.5, 1.0):
        loss = gkd_hook(lang, lam)(model(x), x, model)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert model.training  # sampling put it in eval mode only temporarily
    with pytest.raises(ValueError, match="lam"):
        gkd_hook(lang, 1.5)


def test_onpolicy_loss_matches_checker_and_checker_fails_misaligned(capsys):
    check_onpolicy_loss(onpolicy_loss)
    assert "all 5 cases pass" in capsys.readouterr().out
    from labutils.distill import kd_loss

    def misaligned(logits, samples, language):  # logits at t compared with probs at t: the classic bug
        return kd_loss(logits, language.next_token_probs(samples).log().float(), divergence="reverse_kl")

    with pytest.raises(CheckFailed):
        check_onpolicy_loss(misaligned)
