"""Lab 02: distillation losses and sparse teacher targets.

``kd_loss`` compares a student with a teacher token by token (forward KL, reverse KL or the
generalised JSD of GKD), with Hinton's temperature τ and τ² factor. ``topk_targets`` and
``sampled_targets`` turn a dense teacher into the sparse targets a logit store keeps, and
``sparse_kd_loss`` trains on them.

    >>> g = torch.Generator().manual_seed(0)
    >>> s, t = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)   # student, teacher logits
    >>> round(kd_loss(s, t, temperature=2.0).item(), 3)     # τ² · mean_tokens KL(p_T ‖ p_S), nats
    1.131
    >>> idx, p = topk_targets(t, 8)                         # (4, 8) each: the teacher's 8 likeliest tokens
    >>> round(sparse_kd_loss(s, idx, p).item(), 3)          # soft-target cross-entropy on them
    4.654

Mixing with the hard-label loss and sequence-level KD (Kim & Rush 2016) are training recipes, in
``recipes``. Left out on purpose: fused or chunked vocab-parallel kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils import positive_int

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


# ----------------------------------------------------------------------------- validation

def _logits(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor of shape (..., V), got {type(x).__name__}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., V) with V >= 1, got {tuple(x.shape)}")
    return x


def _mask(mask, shape) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must be a tensor of shape {tuple(shape)} (the logits without V), "
                         f"got {tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    mask = mask.bool()
    if not mask.any():
        raise ValueError("mask selects no tokens: the mean over zero tokens is undefined")
    return mask


def _masked_mean(per_token: torch.Tensor, mask) -> torch.Tensor:
    return per_token.mean() if mask is None else per_token[mask].mean()


def _xlog_ratio(p, log_p, log_q) -> torch.Tensor:
    """Σ_v p·(log p − log q) with 0·log 0 = 0, safe for −inf entries in forward and backward."""
    live = p > 0
    zero = torch.zeros((), dtype=p.dtype)
    term = p * (torch.where(live, log_p, zero) - torch.where(live, log_q, zero))  # (..., V)
    return torch.where(live, term, zero).sum(-1)  # (...)


# ----------------------------------------------------------------------------- losses

def kd_loss(student_logits, teacher_logits, *, temperature=1.0, divergence="forward_kl", beta=0.5, mask=None):
    """τ² · mean over (masked) tokens of a divergence between teacher and student at temperature τ.

    divergence: "forward_kl" = KL(p_T ‖ p_S) (mean-seeking, Hinton et al. 2015);
    "reverse_kl" = KL(p_S ‖ p_T) (mode-seeking, MiniLLM); "jsd" = β·KL(p_T ‖ M) + (1−β)·KL(p_S ‖ M),
    M = β·p_T + (1−β)·p_S (GKD, Agarwal et al. 2024; β = 0.5 is the ordinary JSD ≤ ln 2).
    Computed in float32 whatever the input dtype. Teacher logits may be −inf (banned tokens): for
    reverse KL those tokens are removed from the student's logits *before* its softmax, so the
    student's distribution lives on the teacher's support (otherwise the KL would be +inf).
    Shapes: logits (..., V); mask (...) bool. Returns a float32 scalar, differentiable w.r.t. the student.

    >>> kd_loss(torch.zeros(3, 5), torch.zeros(3, 5))   # identical distributions
    tensor(0.)
    """
    student_logits, teacher_logits = _logits("student_logits", student_logits), _logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
    if divergence == "jsd" and not (isinstance(beta, (int, float)) and 0 < beta < 1):
        raise ValueError(f"beta must lie strictly between 0 and 1 for the JSD, got {beta!r}")
    mask = _mask(mask, student_logits.shape[:-1])
    t = teacher_logits.detach().float() / temperature  # (..., V)
    if torch.isnan(t).any() or (t == math.inf).any():
        raise ValueError("teacher_logits contain NaN or +inf (−inf is allowed: a banned token)")
    banned = t == -math.inf  # (..., V)
    if banned.all(-1).any():
        raise ValueError("a teacher row is −inf everywhere: it bans every token and has no distribution")
    s = student_logits.float() / temperature  # (..., V)
    log_pt = F.log_softmax(t, dim=-1)
    pt = log_pt.exp()
    if divergence == "forward_kl":
        per_token = _xlog_ratio(pt, log_pt, F.log_softmax(s, dim=-1))
    elif divergence == "reverse_kl":
        log_ps = F.log_softmax(s.masked_fill(banned, -math.inf), dim=-1)  # student restricted to the teacher's support
        per_token = _xlog_ratio(log_ps.exp(), log_ps, log_pt)
    else:
        log_ps = F.log_softmax(s, dim=-1)
        log_m = torch.logaddexp(math.log(beta) + log_pt, math.log(1 - beta) + log_ps)  # log(β·p_T + (1−β)·p_S)
        per_token = beta * _xlog_ratio(pt, log_pt, log_m) + (1 - beta) * _xlog_ratio(log_ps.exp(), log_ps, log_m)
    return _masked_mean(per_token, mask) * temperature**2  # τ² keeps soft-target gradients O(1) (Hinton et al.)


def _check_k(name: str, k, V: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= V:
        raise ValueError(f"{name} must be an int in [1, V={V}], got {k!r}")
    return k


def topk_targets(teacher_logits, k):
    """The k most likely tokens and their probabilities renormalised over those k.

    Returns (indices (..., k) int64, probs (..., k) float32). Biased: the dropped tail's mass
    moves onto the head, so KL(target ‖ teacher) = −log(mass kept) > 0 for k < V, while
    KL(teacher ‖ target) — what held-out cross-entropy charges — is infinite (the target rules out
    tokens the teacher can produce).
    """
    t = _logits("teacher_logits", teacher_logits).detach().float()
    _check_k("k", k, t.shape[-1])
    values, indices = t.topk(k, dim=-1)  # (..., k)
    return indices, F.softmax(values, dim=-1)


def sampled_targets(teacher_logits, n_samples, *, seed):
    """n_samples i.i.d. draws from the teacher per token; probability = count / n_samples.

    Unbiased: the expectation over seeds is exactly the teacher distribution (Anshumann et al.
    2025). Returns (indices, probs) of shape (..., min(n_samples, V)); repeated draws are merged,
    unused slots have probability 0.
    """
    t = _logits("teacher_logits", teacher_logits).detach().float()
    V = t.shape[-1]
    positive_int("n_samples", n_samples)
    g = torch.Generator().manual_seed(int(seed))
    flat = F.softmax(t.reshape(-1, V), dim=-1)  # (n, V)
    draws = torch.multinomial(flat, n_samples, replacement=True, generator=g)  # (n, n_samples)
    counts = torch.zeros_like(flat).scatter_add_(1, draws, torch.ones_like(draws, dtype=flat.dtype))  # (n, V)
    top, indices = counts.topk(min(n_samples, V), dim=-1)  # every drawn token has count >= 1
    shape = t.shape[:-1] + (indices.shape[-1],)
    return indices.reshape(shape), (top / n_samples).reshape(shape)


def distinct_sampled_targets(teacher_logits, n_samples, *, seed):
    """Gemma 3's variant: the distinct tokens among n_samples draws, teacher probabilities renormalised
    over them (non-sampled tokens get 0). Biased toward the head, like top-k, for small n_samples."""
    t = _logits("teacher_logits", teacher_logits).detach().float()
    indices, counts = sampled_targets(t, n_samples, seed=seed)
    p = F.softmax(t, dim=-1).gather(-1, indices) * (counts > 0)  # (..., k)
    return indices, p / p.sum(-1, keepdim=True)


def sparse_kd_loss(student_logits, indices, probs, *, mask=None):
    """Soft-target cross-entropy −Σ_i probs_i · log softmax(student)[indices_i], mean over (masked) tokens.

    With k = V dense targets this equals forward KL + the teacher's entropy. Float32.
    """
    s = _logits("student_logits", student_logits)
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or not isinstance(probs, torch.Tensor):
        raise ValueError("indices must be an integer tensor and probs a tensor, both of shape (..., k)")
    if indices.shape != probs.shape or indices.shape[:-1] != s.shape[:-1]:
        raise ValueError(f"indices {tuple(indices.shape)} and probs {tuple(probs.shape)} must both have shape "
                         f"{tuple(s.shape[:-1])} + (k,) to match student_logits {tuple(s.shape)}")
    V = s.shape[-1]
    if indices.numel() and (indices.min() < 0 or indices.max() >= V):
        raise ValueError(f"indices must lie in [0, V={V})")
    mask = _mask(mask, s.shape[:-1])
    log_ps = F.log_softmax(s.float(), dim=-1).gather(-1, indices.long())  # (..., k)
    return _masked_mean(-(probs.float() * log_ps).sum(-1), mask)


def sparse_bytes_per_token(k: int, *, index_bytes: int = 4, value_bytes: int = 2) -> int:
    """Bytes one token's sparse target costs: k (index, value) pairs (int32 + bf16 = 6 B each)."""
    return k * (index_bytes + value_bytes)
