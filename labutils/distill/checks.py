"""Checkers for 02_distillation. Each runs fixed, seeded cases against an independent reference: the loss
checkers against plain float64 loops over the definition (independent of ``losses.kd_loss``), the on-policy
checker against the language's exact next-token probabilities, the storage checker against the byte count.

    >>> from labutils.distill.losses import kd_loss
    >>> check_kd_loss(lambda s, t, tau: kd_loss(s, t, temperature=tau))
    Exercise 2.1 · kd_forward — all 6 cases pass ✓
"""

from __future__ import annotations

import math

import torch

from labutils.checks import Case, Exercise, run_cases
from labutils.data import HMMLanguage
from labutils.distill.losses import sparse_bytes_per_token
from labutils.distill.store import GEMMA3_SAMPLES, GEMMA3_VOCAB, target_bytes

NOTEBOOK = "02_distillation"
EX_KD_LOSS = Exercise(NOTEBOOK, "2.1", "kd_forward")
EX_REVERSE_KL = Exercise(NOTEBOOK, "2.2", "reverse_kl")
EX_JSD = Exercise(NOTEBOOK, "2.3", "jsd")
EX_TARGET_BYTES = Exercise(NOTEBOOK, "2.4", "target_bytes")
EX_TOPK = Exercise(NOTEBOOK, "2.5", "topk")
EX_ONPOLICY = Exercise(NOTEBOOK, "2.6", "onpolicy_loss")


def _ref64(student, teacher, tau, kind, beta=0.5) -> float:
    """Float64 reference: mean over tokens of the divergence at temperature τ, times τ²."""
    s, t = student.double().reshape(-1, student.shape[-1]) / tau, teacher.double().reshape(-1, teacher.shape[-1]) / tau
    total = 0.0
    for srow, trow in zip(s, t):
        if kind == "reverse_kl":
            srow = srow.masked_fill(trow == -math.inf, -math.inf)
        log_ps, log_pt = torch.log_softmax(srow, 0).tolist(), torch.log_softmax(trow, 0).tolist()
        log_m = [math.log(beta * math.exp(a) + (1 - beta) * math.exp(b)) if max(a, b) > -700 else max(a, b)
                 for a, b in zip(log_pt, log_ps)]
        kl = lambda lp, lq: sum(math.exp(a) * (a - b) for a, b in zip(lp, lq) if math.exp(a) > 0)
        total += {"forward_kl": lambda: kl(log_pt, log_ps), "reverse_kl": lambda: kl(log_ps, log_pt),
                  "jsd": lambda: beta * kl(log_pt, log_m) + (1 - beta) * kl(log_ps, log_m)}[kind]()
    return total / s.shape[0] * tau**2


def _loss_cases(kind, with_tau):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 16, generator=g) * 2, torch.randn(6, 16, generator=g) * 2
    banned = t.clone()
    banned[:, :5] = -math.inf
    huge = torch.tensor([[1e4, -1e4, 0.0, 5e3]]), torch.tensor([[-1e4, 1e4, 1e4, 0.0]])
    beta = 0.3 if kind == "jsd" else 0.5
    args = lambda st, tau: (st[0], st[1], tau) if with_tau else (st[0], st[1]) + ((beta,) if kind == "jsd" else ())
    cases = [Case("random logits, τ = 1", args((s, t), 1.0), _ref64(s, t, 1.0, kind, beta)),
             Case("student = teacher", args((t, t), 1.0), 0.0, atol=1e-5,
                  hint="a divergence of a distribution from itself is exactly 0"),
             Case("teacher bans 5 tokens (logit −inf)", args((s, banned), 1.0), _ref64(s, banned, 1.0, kind, beta),
                  hint="0·log 0 = 0: drop tokens with zero probability from the sum instead of computing 0·(−inf)"),
             Case("logits of ±1e4", args(huge, 1.0), _ref64(*huge, 1.0, kind, beta),
                  hint="use log_softmax (it subtracts the max) in float32, never log(softmax(x))")]
    if with_tau:
        cases += [Case(f"τ = {tau}", args((s, t), tau), _ref64(s, t, tau, kind, beta),
                       hint="soft-target gradients shrink as 1/τ²; multiply the loss by τ² (Hinton et al. 2015)")
                  for tau in (2.0, 4.0)]
    return cases


def check_kd_loss(fn) -> None:
    """fn(student_logits, teacher_logits, temperature) -> τ² · mean_tokens KL(p_T ‖ p_S)."""
    run_cases(EX_KD_LOSS, fn, _loss_cases("forward_kl", True), rtol=1e-4, atol=1e-5,
              hint="divide both logits by τ, sum p_T·(log p_T − log p_S) over the vocabulary, mean over tokens, ×τ²")


def check_reverse_kl(fn) -> None:
    """fn(student_logits, teacher_logits) -> mean_tokens KL(p_S ‖ p_T), banned tokens removed from the student."""
    run_cases(EX_REVERSE_KL, fn, _loss_cases("reverse_kl", False), rtol=1e-4, atol=1e-5,
              hint="swap the roles: weight by the student's p_S; set the student's logits to −inf where the teacher's are")


def check_jsd(fn) -> None:
    """fn(student_logits, teacher_logits, beta) -> mean_tokens β·KL(p_T ‖ M) + (1−β)·KL(p_S ‖ M)."""
    run_cases(EX_JSD, fn, _loss_cases("jsd", False), rtol=1e-4, atol=1e-5,
              hint="M = β·p_T + (1−β)·p_S; compute log M with torch.logaddexp of log β + log p_T and log(1−β) + log p_S")


def check_topk_targets(fn) -> None:
    """fn(teacher_logits, k) -> (indices (..., k), renormalised probs (..., k))."""
    g = torch.Generator().manual_seed(3)
    t = torch.randn(5, 64, generator=g) * 3  # (tokens, V)

    def check(got, case):
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return "expected a tuple (indices, probs)"
        idx, p = (torch.as_tensor(x) for x in got)
        k = case.args[1]
        if tuple(idx.shape) != (5, k) or tuple(p.shape) != (5, k):
            return f"expected indices and probs of shape (5, {k}), got {tuple(idx.shape)} and {tuple(p.shape)}"
        order = idx.argsort(-1)
        want_idx, want_p = case.expected
        want_order = want_idx.argsort(-1)
        if not torch.equal(idx.gather(-1, order).long(), want_idx.gather(-1, want_order)):
            return "the indices are not the k largest logits of each row"
        if not torch.allclose(p.gather(-1, order).double(), want_p.gather(-1, want_order), rtol=1e-4, atol=1e-6):
            return f"the probabilities differ: expected {want_p[0].tolist()[:4]}…, got {p[0].tolist()[:4]}…"
        return None

    def ref(k):
        v, i = t.double().sort(-1, descending=True)
        return i[:, :k], torch.softmax(v[:, :k], -1)

    cases = [Case(f"k = {k}", (t, k), ref(k)) for k in (1, 4, 16, 64)]
    run_cases(EX_TOPK, fn, cases, check=check,
              hint="keep the k largest logits, then softmax over just those k (the probabilities must sum to 1)",
              cost=lambda: f"with k = 16 a token costs {sparse_bytes_per_token(16)} B (int32 index + bf16 value) "
                           f"instead of {64 * 2} B dense bf16 for V = 64")


def check_target_bytes(fn) -> None:
    """fn(n_tokens, vocab_size, k, value_bytes) -> bytes; k=None means dense."""
    specs = [(1, 64, None, 2), (1000, 64, 8, 2), (1, GEMMA3_VOCAB, None, 2), (1, GEMMA3_VOCAB, GEMMA3_SAMPLES, 2),
             (2 * 10**12, GEMMA3_VOCAB, None, 2), (10**6, 32_000, 16, 4)]
    cases = [Case(f"tokens={n:,}, V={V:,}, k={k}, {b} B values", (n, V, k, b),
                  lambda n=n, V=V, k=k, b=b: int(n * (V * b if k is None else k * (4 + b))), unit="bytes", rtol=0, atol=0)
             for n, V, k, b in specs]
    run_cases(EX_TARGET_BYTES, fn, cases,
              hint="dense: every token stores V values; sparse: k (int32 index, value) pairs per token",
              cost=lambda: f"Gemma 3 dense bf16: {target_bytes(1, GEMMA3_VOCAB, None, 2) / 1024:.0f} KiB/token; "
                           f"256 sampled: {target_bytes(1, GEMMA3_VOCAB, GEMMA3_SAMPLES, 2) / 1024:.1f} KiB/token")


def check_onpolicy_loss(fn) -> None:
    """fn(student_logits (n, T, V), samples (n, T), language) -> mean token reverse KL vs the oracle."""
    lang = HMMLanguage.random(6, 10, seed=5, concentration=0.3)
    g = torch.Generator().manual_seed(4)
    x = lang.sample(3, 7, seed=9)  # (3, 7)
    s = torch.randn(3, 7, 10, generator=g) * 2  # (3, 7, V)

    def ref(logits, tokens):  # plain float64 loop over the definition
        p = lang.next_token_probs(tokens)
        total, count = 0.0, 0
        for i in range(tokens.shape[0]):
            for t in range(tokens.shape[1] - 1):
                log_q = torch.log_softmax(logits[i, t].double(), 0)
                total += float((log_q.exp() * (log_q - p[i, t + 1].log())).sum())
                count += 1
        return total / count

    cases = [Case("random student logits", (s, x, lang), ref(s, x)),
             Case("student = oracle", (lang.next_token_probs(x).roll(-1, 1).log().float(), x, lang), 0.0, atol=1e-5,
                  hint="logits at position t predict token t+1: compare them with probs[:, t + 1]"),
             Case("one sequence", (s[:1], x[:1], lang), ref(s[:1], x[:1]))]
    run_cases(EX_ONPOLICY, fn, cases, rtol=1e-4, atol=1e-5,
              hint="probs = language.next_token_probs(samples); compare logits[:, :-1] with probs[:, 1:] "
                   "by KL(p_student ‖ p_oracle), mean over tokens")
