"""Notebook 02's checkers: the reference passes, and wrong answers learners really write each fail by name."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from labutils.checks import CheckFailed, reset_session, use
from labutils.distill import (
    check_jsd,
    check_kd_loss,
    check_onpolicy_loss,
    check_reverse_kl,
    check_soft_and_hard_grads,
    check_target_bytes,
    check_topk_targets,
    kd_loss,
    onpolicy_loss,
    target_bytes,
    topk_targets,
)


def _fails(check, wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check(wrong)
    out = capsys.readouterr().out
    assert f"({case}" in out and all(w in out for w in words), out
    return out


# ----------------------------------------------------------------------------- 2.1 kd_forward

def ref_kd(s, t, tau):
    return kd_loss(s, t, temperature=tau)


def kl_div_batchmean(s, t, tau):  # 'batchmean' divides by B, not by every token of a (B, T, V) batch
    return F.kl_div(F.log_softmax(s.float() / tau, -1), F.softmax(t.float() / tau, -1), reduction="batchmean") * tau**2


def kl_div_mean(s, t, tau):  # reduction='mean' averages over V as well
    with warnings.catch_warnings():  # torch warns about exactly this mistake
        warnings.simplefilter("ignore")
        return F.kl_div(F.log_softmax(s.float() / tau, -1), F.softmax(t.float() / tau, -1), reduction="mean") * tau**2


def no_tau_squared(s, t, tau):  # forgets Hinton's τ² factor
    return kd_loss(s, t, temperature=tau) / tau**2


def returns_item(s, t, tau):  # the right number, but a Python float: nothing can train on it
    return kd_loss(s, t, temperature=tau).item()


def bf16_all_the_way(s, t, tau):  # no float32 upcast: the softmax runs in bf16
    log_ps, log_pt = F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1)
    return (log_pt.exp() * (log_pt - log_ps)).nan_to_num().sum(-1).mean() * tau**2


def teacher_scaled_in_place(s, t, tau):  # divides the caller's teacher logits by τ in place
    t.div_(tau)
    return kd_loss(s, t * tau, temperature=tau)


def reverse_direction(s, t, tau):  # KL(p_S ‖ p_T) instead of KL(p_T ‖ p_S)
    return kd_loss(s, t, temperature=tau, divergence="reverse_kl")


def tau_on_student_only(s, t, tau):  # softens the student but compares it with the unsoftened teacher
    log_ps, log_pt = F.log_softmax(s.float() / tau, -1), F.log_softmax(t.float(), -1)
    return torch.where(log_pt.exp() > 0, log_pt.exp() * (log_pt - log_ps), torch.zeros(())).sum(-1).mean() * tau**2


def times_tau_not_tau_squared(s, t, tau):  # multiplies by τ: right at τ = 1, wrong for every τ ≠ 1
    return kd_loss(s, t, temperature=tau) / tau


@pytest.mark.parametrize("wrong, case, words", [
    (tau_on_student_only, "random logits: τ = 2, float32, shape (6, 16)", ["only the student's logits"]),
    (times_tau_not_tau_squared, "random logits: τ = 4, float32, shape (6, 16)", ["multiplied by τ, not τ²"]),
    (kl_div_batchmean, "3-D logits (B, T, V): τ = 2, float32, shape (4, 8, 64)", ["'batchmean' divides by B = 4"]),
    (kl_div_mean, "random logits: τ = 1, float32, shape (6, 16)", ["reduction='mean'", "got/expected = 0.0625"]),
    (no_tau_squared, "random logits: τ = 2, float32, shape (6, 16)", ["τ² factor is missing"]),
    (returns_item, "random logits: τ = 1, float32, shape (6, 16)", ["returned a float, not a tensor"]),
    (bf16_all_the_way, "bf16 logits: τ = 1, bfloat16, shape (6, 16)", ["came back as torch.bfloat16"]),
    (teacher_scaled_in_place, "random logits: τ = 2, float32", ["changed the teacher's logits in place"]),
    (reverse_direction, "random logits: τ = 1, float32, shape (6, 16)", ["direction is swapped"]),
])
def test_kd_forward_rejects(wrong, case, words, capsys):
    _fails(check_kd_loss, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- 2.2 reverse_kl

def ref_reverse(s, t):
    return kd_loss(s, t, divergence="reverse_kl")


def where_nan_grad(s, t):  # right value, but torch.where over q·(log q − log p) gives NaN gradients at banned tokens
    log_q = F.log_softmax(s.float().masked_fill(t == -math.inf, -math.inf), -1)
    log_p = F.log_softmax(t.float(), -1)
    q = log_q.exp()
    return torch.where(q > 0, q * (log_q - log_p), torch.zeros(())).sum(-1).mean()


def masks_student_in_place(s, t):  # masked_fill_ on the caller's student logits breaks backward()
    s.masked_fill_(t == -math.inf, -math.inf)
    return kd_loss(s, t, divergence="reverse_kl")


def forward_direction(s, t):  # KL(p_T ‖ p_S)
    return kd_loss(s, t)


def no_ban(s, t):  # keeps the student's mass on banned tokens and drops those terms: not a distribution on the support
    log_q, log_p = F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1)
    terms = log_q.exp() * (log_q - log_p)
    return torch.where(torch.isfinite(terms), terms, torch.zeros(())).sum(-1).mean()


def teacher_clamped_not_banned(s, t):  # replaces −inf by a finite −30 instead of banning: the student keeps mass there
    log_q, log_p = F.log_softmax(s.float(), -1), F.log_softmax(t.float().clamp(min=-30), -1)
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


@pytest.mark.parametrize("wrong, case, words", [
    (teacher_clamped_not_banned, "teacher bans 5 tokens (logit −inf): τ = 1, float32, shape (6, 16)", ["expected"]),
    (where_nan_grad, "teacher bans 5 tokens (logit −inf): τ = 1, float32, shape (6, 16)", ["gradient", "nan"]),
    (masks_student_in_place, "teacher bans 5 tokens", ["in-place"]),
    (forward_direction, "random logits: τ = 1, float32, shape (6, 16)", ["direction is swapped"]),
    (no_ban, "teacher bans 5 tokens", ["expected"]),
])
def test_reverse_kl_rejects(wrong, case, words, capsys):
    _fails(check_reverse_kl, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- 2.3 jsd

def ref_jsd(s, t, beta):
    return kd_loss(s, t, divergence="jsd", beta=beta)


def beta_swapped(s, t, beta):  # β weighs the student's side
    return kd_loss(s, t, divergence="jsd", beta=1 - beta)


def log_of_mixture(s, t, beta):  # log(β·p_T + (1−β)·p_S) in probabilities: −inf / NaN at ±1e4
    log_ps, log_pt = F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1)
    log_m = torch.log(beta * log_pt.exp() + (1 - beta) * log_ps.exp())
    kl = lambda lp: (lp.exp() * (lp - log_m)).sum(-1)
    return (beta * kl(log_pt) + (1 - beta) * kl(log_ps)).mean()


def jsd_detached(s, t, beta):  # computes the value under no_grad
    with torch.no_grad():
        return kd_loss(s, t, divergence="jsd", beta=beta)


def jsd_in_bf16(s, t, beta):  # no float32 upcast
    log_ps, log_pt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    log_m = torch.logaddexp(math.log(beta) + log_pt, math.log(1 - beta) + log_ps)
    kl = lambda lp: (lp.exp() * (lp - log_m)).nan_to_num().sum(-1)
    return (beta * kl(log_pt) + (1 - beta) * kl(log_ps)).mean()


def jsd_in_bits(s, t, beta):  # log base 2: the right divergence in bits, not nats
    return kd_loss(s, t, divergence="jsd", beta=beta) / math.log(2)


@pytest.mark.parametrize("wrong, case, words", [
    (jsd_in_bits, "random logits: τ = 1, β = 0.3, float32, shape (6, 16)", ["1/ln 2"]),
    (beta_swapped, "random logits: τ = 1, β = 0.3, float32, shape (6, 16)", ["β and 1−β swapped"]),
    (log_of_mixture, "teacher bans 5 tokens (logit −inf): τ = 1, β = 0.3", ["not finite"]),
    (jsd_detached, "random logits: τ = 1, β = 0.3", ["carries no gradient"]),
    (jsd_in_bf16, "bf16 logits: τ = 1, β = 0.3, bfloat16", ["came back as torch.bfloat16"]),
])
def test_jsd_rejects(wrong, case, words, capsys):
    _fails(check_jsd, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- 2.4 soft_and_hard_grads

def ref_grads(z, p, y):
    q = torch.softmax(z.float(), -1)
    return q - p, q - F.one_hot(y, z.shape[-1]).float()


def sign_flipped(z, p, y):  # target − softmax: the direction of descent, not the gradient
    return tuple(-g for g in ref_grads(z, p, y))


def mean_over_tokens(z, p, y):  # the gradient of the batch mean: every row divided by N
    return tuple(g / z.shape[0] for g in ref_grads(z, p, y))


def logits_not_probs(z, p, y):  # forgets the softmax: z − target
    return z - p, z - F.one_hot(y, z.shape[-1]).float()


def argmax_label(z, p, y):  # uses the likeliest token instead of the sampled label
    return ref_grads(z, p, p.argmax(-1))


@pytest.mark.parametrize("wrong, case, words", [
    (sign_flipped, "random logits and targets: float32, shape (8, 16)", ["sign is flipped"]),
    (mean_over_tokens, "random logits and targets: float32, shape (8, 16)", ["divided by N = 8"]),
    (logits_not_probs, "random logits and targets: float32, shape (8, 16)", ["entries differ"]),
    (argmax_label, "random logits and targets: float32, shape (8, 16)", ["item 1"]),
])
def test_soft_and_hard_grads_rejects(wrong, case, words, capsys):
    _fails(check_soft_and_hard_grads, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- 2.5 target_bytes

def bits_not_bytes(n, V, k, b):  # counts bits
    return 8 * target_bytes(n, V, k, b)


def int64_indices(n, V, k, b):  # 8-byte indices
    return n * (V * b if k is None else k * (8 + b))


def forgets_indices(n, V, k, b):  # stores the values only
    return n * (V if k is None else k) * b


def int16_indices(n, V, k, b):  # 2-byte indices: too narrow for a 262k vocabulary, and not the int32 convention
    return n * (V * b if k is None else k * (2 + b))


@pytest.mark.parametrize("wrong, case", [
    (int16_indices, "tokens=1,000, V=64, k=8, 2 B values"),
    (bits_not_bytes, "tokens=1, V=64, k=None, 2 B values"),
    (int64_indices, "tokens=1,000, V=64, k=8, 2 B values"),
    (forgets_indices, "tokens=1,000, V=64, k=8, 2 B values"),
])
def test_target_bytes_rejects(wrong, case, capsys):
    _fails(check_target_bytes, wrong, case, ["expected"], capsys)


# ----------------------------------------------------------------------------- 2.6 topk

def softmax_then_topk(t, k):  # takes probabilities over all V: they no longer sum to 1
    p, i = F.softmax(t.float(), -1).topk(k, -1)
    return i, p


def smallest_k(t, k):  # largest=False
    v, i = t.float().topk(k, -1, largest=False)
    return i, F.softmax(v, -1)


def returns_logits(t, k):  # the k logits, not probabilities
    v, i = t.float().topk(k, -1)
    return i, v


def topk_along_dim1(t, k):  # dim=1 is the vocabulary only for 2-D logits
    v, i = t.float().topk(k, dim=1)
    return i, F.softmax(v, dim=1)


def topk_flattened(t, k):  # reshapes to (tokens, V) and never restores the leading shape
    v, i = t.float().reshape(-1, t.shape[-1]).topk(k, -1)
    return i, F.softmax(v, -1)


def topk_float_indices(t, k):  # token ids as floats: unusable for gather or an int32 store
    v, i = t.float().topk(k, -1)
    return i.float(), F.softmax(v, -1)


@pytest.mark.parametrize("wrong, case, words", [
    (topk_along_dim1, "k = 4, float32, shape (2, 3, 64)", ["dim=-1"]),
    (topk_flattened, "k = 4, float32, shape (2, 3, 64)", ["expected indices and probs of shape (2, 3, 4)"]),
    (topk_float_indices, "k = 1, float32, shape (5, 64)", ["token ids are integers"]),
    (softmax_then_topk, "k = 1, float32, shape (5, 64)", ["sum to 1"]),
    (smallest_k, "k = 1, float32, shape (5, 64)", ["k largest"]),
    (returns_logits, "k = 4, float32, shape (5, 64)", ["sum to 1"]),
])
def test_topk_rejects(wrong, case, words, capsys):
    _fails(check_topk_targets, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- 2.7 onpolicy_loss

def no_shift(logits, x, lang):  # compares logits at t with probs at t
    log_q, log_p = F.log_softmax(logits.float(), -1), lang.next_token_probs(x).log().float()
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


def oracle_to_student(logits, x, lang):  # KL(p_oracle ‖ p_student)
    log_q, log_p = F.log_softmax(logits[:, :-1].float(), -1), lang.next_token_probs(x)[:, 1:].log().float()
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def onpolicy_item(logits, x, lang):  # a float
    return onpolicy_loss(logits, x, lang).item()


def onpolicy_bf16(logits, x, lang):  # softmax in the input dtype
    log_q, log_p = F.log_softmax(logits[:, :-1], -1), lang.next_token_probs(x)[:, 1:].log().to(logits.dtype)
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


def log_of_softmax(logits, x, lang):  # log(softmax(z)) underflows to −inf at logits of ±1e4: NaN
    q, log_p = F.softmax(logits[:, :-1].float(), -1), lang.next_token_probs(x)[:, 1:].log().float()
    return (q * (q.log() - log_p)).sum(-1).mean()


def summed_over_positions(logits, x, lang):  # sums the T − 1 positions of each sequence instead of averaging
    log_q, log_p = F.log_softmax(logits[:, :-1].float(), -1), lang.next_token_probs(x)[:, 1:].log().float()
    return (log_q.exp() * (log_q - log_p)).sum(-1).sum(-1).mean()


def scores_fresh_language_samples(logits, x, lang):  # scores new text from the language, not the samples given
    y = lang.sample(x.shape[0], x.shape[1], seed=0)
    log_q, log_p = F.log_softmax(logits[:, :-1].float(), -1), lang.next_token_probs(y)[:, 1:].log().float()
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


@pytest.mark.parametrize("wrong, case, words", [
    (scores_fresh_language_samples, "random student logits: τ = 1, float32, shape (3, 7, 10)", ["expected"]),
    (log_of_softmax, "logits of ±1e4: τ = 1, float32, shape (3, 7, 10)", ["log_softmax"]),
    (summed_over_positions, "random student logits: τ = 1, float32, shape (3, 7, 10)", ["T − 1 = 6"]),
    (no_shift, "random student logits: τ = 1, float32, shape (3, 7, 10)", ["no shift"]),
    (oracle_to_student, "random student logits: τ = 1, float32, shape (3, 7, 10)", ["direction is swapped"]),
    (onpolicy_item, "random student logits", ["returned a float"]),
    (onpolicy_bf16, "bf16 student logits: τ = 1, bfloat16, shape (3, 7, 10)", ["came back as torch.bfloat16"]),
])
def test_onpolicy_rejects(wrong, case, words, capsys):
    _fails(check_onpolicy_loss, wrong, case, words, capsys)


# ----------------------------------------------------------------------------- references and the use switch

def test_references_pass(capsys):
    check_kd_loss(ref_kd)
    check_reverse_kl(ref_reverse)
    check_jsd(ref_jsd)
    check_soft_and_hard_grads(ref_grads)
    check_target_bytes(target_bytes)
    check_topk_targets(topk_targets)
    check_onpolicy_loss(onpolicy_loss)
    assert capsys.readouterr().out.count("cases pass ✓") == 7


def test_use_picks_the_learner_after_a_pass_only(capsys):
    reset_session()

    def kd_forward(s, t, tau):
        return kd_loss(s, t, temperature=tau)

    assert use(kd_forward, ref_kd) is ref_kd  # not checked yet
    check_kd_loss(kd_forward)
    assert use(kd_forward, ref_kd) is kd_forward
    with pytest.raises(CheckFailed):
        check_kd_loss(no_tau_squared)
    assert use(no_tau_squared, ref_kd) is ref_kd
    out = capsys.readouterr().out
    assert "Using your kd_forward" in out and "Using the course's reference" in out
