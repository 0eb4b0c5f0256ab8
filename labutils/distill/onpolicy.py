"""Lab 02: on-policy distillation (GKD) against the oracle teacher, and its exact generation metric.

GKD (Agarwal et al. 2024, arXiv 2306.13649) trains a fraction λ of each batch on sequences the
*student* samples, scored token by token by the teacher; no gradient flows through the sampling.
Our teacher is the language itself, so the sequence-level reverse KL of the student from the truth,
E_{x∼student}[log p_student(x) − log p_true(x)], is computed exactly — both terms are exact
log-likelihoods of the sampled sequences.

    >>> from labutils.data import HMMLanguage
    >>> from labutils.model import GPTConfig, TinyGPT
    >>> language = HMMLanguage.random(4, 8, seed=0)
    >>> model = TinyGPT(GPTConfig(vocab_size=8, context_length=16, d_model=16, n_layers=1, n_heads=1))
    >>> sample_student(model, language, 64, seed=0).shape      # x_0 from the language, the rest from the student
    torch.Size([64, 16])
    >>> sorted(sequence_reverse_kl(model, language, 256, seed=1))   # reverse_kl: nats/token, ≥ 0 in expectation
    ['reverse_kl', 'reverse_kl_se', 'student_entropy', 'true_nll']

``train_lm(cfg, language, ..., loss_hook=gkd_hook(language, lam=1.0), hook_key="gkd-…")`` trains on-policy.

Left out on purpose: a KV cache (the student re-reads its prefix at each step; T = 64 keeps that
cheap), sampling at a temperature during training, and mixing in the hard-label loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils import positive_int
from labutils.distill.losses import kd_loss


def _first_token_probs(language) -> torch.Tensor:
    return torch.from_numpy(language.initial @ language.emission)  # (V,) p(x_0), float64


@torch.no_grad()
def sample_student(model, language, n: int, *, seed: int, temperature: float = 1.0, length: int | None = None):
    """n sequences: x_0 drawn from the language, then x_t ∼ softmax(student(x_<t) / τ). LongTensor (n, length)."""
    positive_int("n", n)
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    T = length or model.config.context_length
    g = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    x = torch.multinomial(_first_token_probs(language).expand(n, -1), 1, generator=g)  # (n, 1)
    for _ in range(T - 1):
        logits = model(x)[:, -1].float() / temperature  # (n, V)
        x = torch.cat([x, torch.multinomial(F.softmax(logits, -1), 1, generator=g)], dim=1)
    model.train(was_training)
    return x


@torch.no_grad()
def sequence_reverse_kl(model, language, n: int, *, seed: int, temperature: float = 1.0) -> dict:
    """Exact E_{x∼student}[log p_student(x) − log p_true(x)] and E[−log p_true(x)], per token, nats.

    Both sum over positions 1…T−1 (x_0 comes from the language for both, so its term cancels).
    Returns dict(reverse_kl, true_nll, student_entropy, reverse_kl_se) — reverse_kl = true_nll −
    student_entropy; reverse_kl_se is its standard error over the n independent sequences.
    """
    x = sample_student(model, language, n, seed=seed, temperature=temperature)  # (n, T)
    was_training = model.training
    model.eval()
    log_ps = F.log_softmax(model(x)[:, :-1].float() / temperature, -1)  # (n, T-1, V)
    model.train(was_training)
    student_ll = log_ps.gather(-1, x[:, 1:, None])[..., 0].double().mean(1)  # (n,) mean log p_student(x_t | x_<t)
    true_ll = language.next_token_probs(x)[:, 1:].gather(-1, x[:, 1:, None])[..., 0].log().mean(1)  # (n,) exact
    per_seq = student_ll - true_ll  # (n,) each sequence's reverse-KL estimate, nats/token
    se = per_seq.std().item() / math.sqrt(n) if n > 1 else math.nan
    return dict(reverse_kl=per_seq.mean().item(), true_nll=-true_ll.mean().item(),
                student_entropy=-student_ll.mean().item(), reverse_kl_se=se)


@torch.no_grad()
def exposure_bias(model, language, n: int, *, seed: int) -> dict:
    """The student's per-token KL to the truth on real prefixes and on its own sampled prefixes, nats/token.

    Both directions are exact at every position: KL(p_true ‖ p_student) (what training on real text
    lowers) and KL(p_student ‖ p_true). ``gap_*`` = own − real, with its standard error over the n
    sequences of each kind (the two sets are independent). A positive gap is exposure bias: the student
    is worse where its own samples lead it than where real text does. The gap also moves with how sure the
    truth itself is on each kind of prefix (a KL to a broad truth is small), so read it beside the truth's
    entropy on both.

        >>> from labutils.data import HMMLanguage
        >>> from labutils.model import GPTConfig, TinyGPT
        >>> lang = HMMLanguage.random(3, 6, seed=0)
        >>> model = TinyGPT(GPTConfig(vocab_size=6, context_length=8, d_model=8, n_layers=1, n_heads=1))
        >>> out = exposure_bias(model, lang, 16, seed=0)
        >>> out["forward_real"] > 0 and out["reverse_own"] > 0, sorted(out)[:3]
        (True, ['forward_own', 'forward_own_se', 'forward_real'])
    """
    out = {}
    for where, x in [("real", language.sample(n, model.config.context_length, seed=seed)),
                     ("own", sample_student(model, language, n, seed=seed))]:
        was_training = model.training
        model.eval()
        log_q = F.log_softmax(model(x)[:, :-1].double(), -1)  # (n, T-1, V)
        model.train(was_training)
        log_p = language.next_token_probs(x)[:, 1:].log()  # (n, T-1, V) float64
        for name, a, b in [("forward", log_p, log_q), ("reverse", log_q, log_p)]:
            per_seq = (a.exp() * (a - b)).nansum(-1).mean(1)  # (n,) mean KL over positions
            out[f"{name}_{where}"], out[f"{name}_{where}_se"] = per_seq.mean().item(), per_seq.std().item() / math.sqrt(n)
    for name in ("forward", "reverse"):
        out[f"gap_{name}"] = out[f"{name}_own"] - out[f"{name}_real"]
        out[f"gap_{name}_se"] = math.hypot(out[f"{name}_own_se"], out[f"{name}_real_se"])
    return out


def onpolicy_loss(student_logits, samples, language, *, divergence: str = "reverse_kl"):
    """Token-level divergence between the student and the oracle on sequences ``samples`` (n, T).

    student_logits (n, T, V) are the student's logits on ``samples``; position t predicts token
    t+1, so it is compared with ``language.next_token_probs(samples)[:, t + 1]``.
    """
    probs = language.next_token_probs(samples)  # (n, T, V) float64; probs[:, t] = p(x_t | x_<t)
    return kd_loss(student_logits[:, :-1], probs[:, 1:].log().float(), divergence=divergence)


def gkd_hook(language, lam: float, *, divergence: str = "reverse_kl", seed: int = 0):
    """A train_lm loss_hook: a fraction λ of each batch is replaced by student samples (no gradient
    through sampling); every sequence is scored by the oracle with ``divergence``. (GKD's Algorithm 1
    draws, at each step, whether the whole batch is the student's, with probability λ; a fixed fraction
    of every batch has the same expectation and less variance.)"""
    if not (isinstance(lam, (int, float)) and 0 <= lam <= 1):
        raise ValueError(f"lam (the on-policy fraction) must lie in [0, 1], got {lam!r}")
    step = [0]

    def hook(logits, tokens, model):
        n_on = round(lam * tokens.shape[0])
        step[0] += 1
        if n_on == 0:
            return onpolicy_loss(logits, tokens, language, divergence=divergence)
        x = sample_student(model, language, n_on, seed=seed * 1_000_003 + step[0])  # (n_on, T)
        logits_on = model(x)  # a second forward pass on the student's own text
        parts = [(logits_on, x)] + ([(logits[n_on:], tokens[n_on:])] if n_on < tokens.shape[0] else [])
        total = sum(onpolicy_loss(lg, tk, language, divergence=divergence) * tk.shape[0] for lg, tk in parts)
        return total / tokens.shape[0]

    return hook
