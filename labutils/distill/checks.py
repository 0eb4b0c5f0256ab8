"""Checkers for 02_distillation. Each runs fixed, seeded cases against an independent reference: the loss
checkers against plain float64 loops over the definition (independent of ``losses.kd_loss``), the on-policy
checker against the language's exact next-token probabilities, the storage checker against the byte count.

    >>> from labutils.distill.losses import kd_loss
    >>> check_kd_loss(lambda s, t, tau: kd_loss(s, t, temperature=tau))
    Exercise 2.1 · kd_forward — all 8 cases pass ✓
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils.checks import Case, Exercise, compare, run_cases
from labutils.data import HMMLanguage
from labutils.distill.losses import sparse_bytes_per_token
from labutils.distill.reference64 import grad64 as _grad64
from labutils.distill.reference64 import ref64 as _ref64
from labutils.distill.store import GEMMA3_SAMPLES, GEMMA3_VOCAB, target_bytes

NOTEBOOK = "02_distillation"
EX_KD_LOSS = Exercise(NOTEBOOK, "2.1", "kd_forward")
EX_REVERSE_KL = Exercise(NOTEBOOK, "2.2", "reverse_kl")
EX_JSD = Exercise(NOTEBOOK, "2.3", "jsd")
EX_IDENTITY = Exercise(NOTEBOOK, "2.4", "soft_and_hard_grads")
EX_TARGET_BYTES = Exercise(NOTEBOOK, "2.5", "target_bytes")
EX_TOPK = Exercise(NOTEBOOK, "2.6", "topk")
EX_ONPOLICY = Exercise(NOTEBOOK, "2.7", "onpolicy_loss")


def _label(what, tau, dtype, shape, beta=None) -> str:
    b = f", β = {beta}" if beta is not None else ""
    return f"{what}: τ = {tau:g}{b}, {str(dtype).replace('torch.', '')}, shape {tuple(shape)}"


def _loss_check(grad_of, *, rtol=1e-4, atol=1e-5):
    """A check(got, case) for losses: a float32 scalar tensor with the reference value, whose gradient w.r.t.
    the student's logits (case.args[0]) is finite and matches ``grad_of(case)``; inputs left unchanged."""

    def check(got, case):
        if not isinstance(got, torch.Tensor):
            return (f"returned a {type(got).__name__}, not a tensor: .item() / float() cuts the autograd graph, "
                    f"so no student could train on this loss")
        if got.numel() != 1 or not got.is_floating_point():
            return f"expected a scalar float tensor, got shape {tuple(got.shape)} and dtype {got.dtype}"
        if got.dtype not in (torch.float32, torch.float64):
            return f"the loss came back as {got.dtype}: compute it in float32 (upcast the logits first)"
        why = compare(float(got.detach()), case.expected, rtol=rtol, atol=case.atol or atol, unit="nats")
        if why:
            return why
        for name, x, x0 in zip(("student", "teacher"), case.args[:2], case.pristine):
            if not torch.equal(x.detach().nan_to_num(), x0.nan_to_num()):
                return f"your function changed the {name}'s logits in place: work on a copy (masked_fill, not masked_fill_)"
        if got.grad_fn is None:
            return "the loss carries no gradient (detached?): a student could not train on it"
        (grad,) = torch.autograd.grad(got, case.args[0], allow_unused=True)
        if grad is None:
            return "the loss does not depend on the student's logits (no gradient reaches them)"
        want = grad_of(case)
        if not torch.isfinite(grad).all():
            bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(grad))[0])
            return (f"the value is right but the gradient w.r.t. the student's logits is {grad[bad].item()} at index {bad}"
                    f" (expected {want[bad].item():.4g}): torch.where evaluates both branches, and their gradients")
        tol = (1e-2 if grad.dtype == torch.bfloat16 else 1e-3) * float(want.abs().max()) + 1e-7
        err = (grad.double() - want).abs()
        if float(err.max()) > tol:
            i = tuple(int(v) for v in torch.nonzero(err == err.max())[0])
            return (f"the value is right but the gradient w.r.t. the student's logits is not: at index {i} "
                    f"expected {want[i].item():.5g}, got {grad[i].item():.5g}")
        return None
    return check


def _case(what, student, teacher, tau, kind, beta, with_tau, **kw) -> Case:
    student = student.detach().clone().requires_grad_(True)
    teacher = teacher.detach().clone()
    args = (student, teacher, tau) if with_tau else (student, teacher) + ((beta,) if kind == "jsd" else ())
    case = Case(_label(what, tau, student.dtype, student.shape, beta if kind == "jsd" else None), args,
                _ref64(student.detach(), teacher, tau, kind, beta), **kw)
    case.pristine = (student.detach().clone(), teacher.clone())  # to detect in-place changes
    return case


def _loss_cases(kind, with_tau):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 16, generator=g) * 2, torch.randn(6, 16, generator=g) * 2
    banned = t.clone()
    banned[:, :5] = -math.inf
    huge = torch.tensor([[1e4, -1e4, 0.0, 5e3]]), torch.tensor([[-1e4, 1e4, 1e4, 0.0]])
    s3, t3 = torch.randn(4, 8, 64, generator=g) * 2, torch.randn(4, 8, 64, generator=g) * 2  # (B, T, V)
    beta = 0.3 if kind == "jsd" else 0.5
    c = lambda what, st, tau=1.0, **kw: _case(what, *st, tau, kind, beta, with_tau, **kw)
    cases = [c("random logits", (s, t)),
             c("student = teacher", (t, t), atol=1e-5, hint="a divergence of a distribution from itself is exactly 0"),
             c("teacher bans 5 tokens (logit −inf)", (s, banned),
               hint="0·log 0 = 0: drop tokens with zero probability from the sum; mask with torch.where on both the "
                    "value and what goes into it, or the gradient is NaN"),
             c("logits of ±1e4", huge, hint="use log_softmax (it subtracts the max) in float32, never log(softmax(x))"),
             c("3-D logits (B, T, V)", (s3, t3), 2.0 if with_tau else 1.0,
               hint="the mean is over all B·T tokens; F.kl_div's 'batchmean' divides by B only"),
             c("bf16 logits", (s.bfloat16(), t.bfloat16()),
               hint="upcast to float32 before the softmax; bf16 keeps only ~3 significant digits")]
    if with_tau:
        cases += [c("random logits", (s, t), tau,
                    hint="soft-target gradients shrink as 1/τ²; multiply the loss by τ² (Hinton et al. 2015)")
                  for tau in (2.0, 4.0)]
    return cases


def _grad_of(kind, with_tau, beta=0.3):
    def grad(case):
        tau = case.args[2] if with_tau else 1.0
        return _grad64(case.args[0].detach(), case.args[1], tau, kind, beta if kind == "jsd" else 0.5)
    return grad


def _diagnose_kd(kind):
    """Name a mistake from the ratio of the answer to the expected value, or from matching a known wrong loss."""
    def diagnose(got, expected, case):
        if not isinstance(got, torch.Tensor) or got.numel() != 1 or expected == 0:
            return None
        r = float(got.detach()) / expected
        s, t = case.args[0].detach(), case.args[1]
        V, tau = s.shape[-1], (case.args[2] if kind == "forward_kl" else 1.0)
        near = lambda a, b: math.isclose(a, b, rel_tol=1e-3)
        if near(r, 1 / V):
            return f"a ratio of exactly 1/V = 1/{V}: F.kl_div(..., reduction='mean') divides by V as well as the tokens"
        if s.ndim == 3 and near(r, s.shape[1]):
            return f"a ratio of exactly T = {s.shape[1]}: reduction='batchmean' divides by B = {s.shape[0]} only"
        if tau != 1 and near(r, 1 / tau**2):
            return "a ratio of exactly 1/τ²: the τ² factor is missing"
        if tau != 1 and near(r, 1 / tau):
            return "a ratio of exactly 1/τ: the loss was multiplied by τ, not τ²"
        if tau != 1 and near(r, tau**2):
            return "a ratio of exactly τ²: τ² applied twice, or the logits were not divided by τ"
        if kind == "jsd" and near(r, 1 / math.log(2)):
            return "a ratio of exactly 1/ln 2: log base 2 (bits); the course measures nats (natural log)"
        for side, a, b in [("student's", s / tau, t), ("teacher's", s, t / tau)]:
            one_side = _ref64(a, b, 1.0, kind)
            if tau != 1 and any(near(float(got.detach()), one_side * f) for f in (1, tau**2)):
                return f"only the {side} logits were divided by τ: soften both distributions"
        other = {"forward_kl": "reverse_kl", "reverse_kl": "forward_kl", "jsd": "jsd"}[kind]
        beta = case.args[2] if kind == "jsd" else 0.5
        alt = _ref64(s, t, tau, other, 1 - beta if kind == "jsd" else beta) if kind != "jsd" or beta != 0.5 else None
        if alt is not None and math.isclose(float(got.detach()), alt, rel_tol=1e-3, abs_tol=1e-6):
            return ("β and 1−β swapped: β weighs KL(p_T ‖ M)" if kind == "jsd" else
                    f"this is {other.replace('_', ' ')}: the KL direction is swapped")
        return None
    return diagnose


def check_kd_loss(fn) -> None:
    """fn(student_logits, teacher_logits, temperature) -> τ² · mean_tokens KL(p_T ‖ p_S), a float32 tensor."""
    run_cases(EX_KD_LOSS, fn, _loss_cases("forward_kl", True), check=_loss_check(_grad_of("forward_kl", True)),
              diagnose=_diagnose_kd("forward_kl"),
              hint="divide both logits by τ, sum p_T·(log p_T − log p_S) over the vocabulary, mean over tokens, ×τ²; "
                   "return the tensor (no .item()) and leave the inputs unchanged")


def check_reverse_kl(fn) -> None:
    """fn(student_logits, teacher_logits) -> mean_tokens KL(p_S ‖ p_T), banned tokens removed from the student."""
    run_cases(EX_REVERSE_KL, fn, _loss_cases("reverse_kl", False), check=_loss_check(_grad_of("reverse_kl", False)),
              diagnose=_diagnose_kd("reverse_kl"),
              hint="swap the roles: weight by the student's p_S; set the student's logits to −inf where the teacher's "
                   "are, on a copy (masked_fill), before its log_softmax")


def check_jsd(fn) -> None:
    """fn(student_logits, teacher_logits, beta) -> mean_tokens β·KL(p_T ‖ M) + (1−β)·KL(p_S ‖ M)."""
    run_cases(EX_JSD, fn, _loss_cases("jsd", False), check=_loss_check(_grad_of("jsd", False)),
              diagnose=_diagnose_kd("jsd"),
              hint="M = β·p_T + (1−β)·p_S; compute log M with torch.logaddexp of log β + log p_T and log(1−β) + log p_S")


def check_soft_and_hard_grads(fn) -> None:
    """fn(student_logits (N, V), probs (N, V), labels (N,)) -> (g_soft, g_hard), each (N, V): per token, the
    gradient w.r.t. the logits of KL(p ‖ softmax(z)) and of −log softmax(z)[label]."""
    g = torch.Generator().manual_seed(6)

    def case(what, z, p, y):
        q = torch.softmax(z.double(), -1)
        want = ((q - p.double()).numpy(), (q - F.one_hot(y, z.shape[-1]).double()).numpy())
        return Case(f"{what}: float32, shape {tuple(z.shape)}", (z, p, y), want)

    z, p = torch.randn(8, 16, generator=g) * 2, torch.softmax(torch.randn(8, 16, generator=g) * 2, -1)
    zero = p.clone()
    zero[:, :4] = 0
    zero /= zero.sum(-1, keepdim=True)
    cases = [case("random logits and targets", z, p, torch.multinomial(p, 1, generator=g)[:, 0]),
             case("target with zero-probability tokens", z, zero, torch.multinomial(zero, 1, generator=g)[:, 0]),
             case("logits of ±1e4", torch.tensor([[1e4, -1e4, 0.0, 5e3]]), torch.tensor([[0.1, 0.2, 0.3, 0.4]]),
                  torch.tensor([2])),
             case("one token", z[:1], p[:1], torch.tensor([5]))]

    def diagnose(got, expected, case):
        try:
            a, e = torch.as_tensor(_to_np(got[0])).double(), torch.as_tensor(expected[0])
        except Exception:
            return None
        n = e.shape[0]
        if torch.allclose(a, -e, atol=1e-6):
            return "the sign is flipped: the gradient of a loss points uphill, softmax(z) − target"
        if n > 1 and torch.allclose(a * n, e, atol=1e-6):
            return f"divided by N = {n}: each row is one token's own gradient, not the mean's"
        return None

    run_cases(EX_IDENTITY, fn, cases, rtol=1e-4, atol=1e-6, diagnose=diagnose,
              hint="differentiate each token's loss on its own row (autograd on .sum() works); both are "
                   "softmax(z) minus a target: the soft one is p, the hard one is the label's one-hot")


def _to_np(x):
    return x.detach().double().numpy() if isinstance(x, torch.Tensor) else x


def check_topk_targets(fn) -> None:
    """fn(teacher_logits, k) -> (indices (..., k), renormalised probs (..., k))."""
    g = torch.Generator().manual_seed(3)
    t = torch.randn(5, 64, generator=g) * 3  # (tokens, V)
    t3 = torch.randn(2, 3, 64, generator=g) * 3  # (B, T, V)

    def check(got, case):
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return "expected a tuple (indices, probs)"
        idx, p = (torch.as_tensor(x) for x in got)
        logits, k = case.args
        shape = tuple(logits.shape[:-1]) + (k,)
        if tuple(idx.shape) != shape or tuple(p.shape) != shape:
            return (f"expected indices and probs of shape {shape} (the leading dimensions kept, the last one k), "
                    f"got {tuple(idx.shape)} and {tuple(p.shape)}: work along dim=-1, the vocabulary")
        if idx.is_floating_point() or idx.dtype == torch.bool:
            return f"the indices came back as {idx.dtype}: token ids are integers (torch.topk returns int64)"
        order = idx.argsort(-1)
        want_idx, want_p = case.expected
        want_order = want_idx.argsort(-1)
        if not torch.equal(idx.gather(-1, order).long(), want_idx.gather(-1, want_order)):
            return "the indices are not the k largest logits of each row"
        if not torch.allclose(p.gather(-1, order).double(), want_p.gather(-1, want_order), rtol=1e-4, atol=1e-6):
            total = float(p.double().sum(-1).mean())
            if abs(total - 1) > 1e-3:
                return (f"each row's k probabilities should sum to 1, yours sum to {total:.4f} on average: "
                        f"renormalise over the k kept entries (softmax of the k logits), not over all V")
            return (f"the probabilities differ: expected {want_p.reshape(-1, k)[0].tolist()[:4]}…, "
                    f"got {p.reshape(-1, k)[0].tolist()[:4]}…")
        return None

    def ref(x, k):
        v, i = x.double().sort(-1, descending=True)
        return i[..., :k], torch.softmax(v[..., :k], -1)

    cases = [Case(f"k = {k}, float32, shape {tuple(x.shape)}", (x, k), ref(x, k),
                  hint="work along the last dimension (dim=-1), whatever the leading shape" if x.ndim == 3 else "")
             for x, k in [(t, 1), (t, 4), (t, 16), (t, 64), (t3, 4)]]
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
    huge = s.clone()
    huge[..., 0], huge[..., 1] = 1e4, -1e4  # softmax underflows to exactly 0 on token 1: log(softmax) gives −inf

    def ref(logits, tokens):  # plain float64 loop over the definition
        p = lang.next_token_probs(tokens)
        total, count = 0.0, 0
        for i in range(tokens.shape[0]):
            for t in range(tokens.shape[1] - 1):
                log_q = torch.log_softmax(logits[i, t].double(), 0)
                total += float((log_q.exp() * (log_q - p[i, t + 1].log())).sum())
                count += 1
        return total / count

    def grad_of(case):  # p_S·(log p_S − log p_oracle − KL)/N at positions 0…T-2; the last position gets none
        logits, tokens = case.args[0].detach(), case.args[1]
        log_q = torch.log_softmax(logits[:, :-1].double(), -1)
        d = log_q - lang.next_token_probs(tokens)[:, 1:].log()
        gq = log_q.exp() * (d - (log_q.exp() * d).sum(-1, keepdim=True)) / d[..., 0].numel()
        return torch.cat([gq, torch.zeros_like(gq[:, :1])], 1)

    def case(what, logits, tokens, **kw):
        logits = logits.detach().clone().requires_grad_(True)
        c = Case(_label(what, 1, logits.dtype, logits.shape), (logits, tokens.clone(), lang), ref(logits.detach(), tokens),
                 **kw)
        c.pristine = (logits.detach().clone(), tokens.clone())
        return c

    cases = [case("random student logits", s, x),
             case("student = oracle", lang.next_token_probs(x).roll(-1, 1).log().float(), x, atol=1e-5,
                  hint="logits at position t predict token t+1: compare them with probs[:, t + 1]"),
             case("one sequence", s[:1], x[:1]),
             case("logits of ±1e4", huge, x, hint="use log_softmax (it subtracts the max), never log(softmax(x))"),
             case("bf16 student logits", s.bfloat16(), x, hint="upcast to float32 before the softmax")]
    run_cases(EX_ONPOLICY, fn, cases, check=_loss_check(grad_of), diagnose=_diagnose_onpolicy(lang),
              hint="probs = language.next_token_probs(samples); compare logits[:, :-1] with probs[:, 1:] "
                   "by KL(p_student ‖ p_oracle), mean over tokens")


def _diagnose_onpolicy(lang):
    def diagnose(got, expected, case):
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            return None
        logits, x = case.args[0].detach().double(), case.args[1]
        if expected and math.isclose(float(got.detach()) / expected, x.shape[1] - 1, rel_tol=1e-3):
            return f"a ratio of exactly T − 1 = {x.shape[1] - 1}: summed over positions instead of averaged"
        log_p = lang.next_token_probs(x).log()
        log_q = torch.log_softmax(logits, -1)
        kl = lambda a, b: float((a.exp() * (a - b)).sum(-1).mean())
        for value, why in [(kl(log_q, log_p), "no shift: logits at t were compared with probs[:, t], not t + 1"),
                           (kl(log_p[:, 1:], log_q[:, :-1]), "KL(p_oracle ‖ p_student): the direction is swapped")]:
            if math.isclose(float(got.detach()), value, rel_tol=1e-3):
                return why
        return None
    return diagnose
