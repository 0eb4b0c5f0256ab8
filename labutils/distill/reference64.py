"""Float64 references for lab 02's loss checkers, written from the definitions and independent of
``losses.kd_loss``: the value as a plain loop over tokens, the gradient from its closed form.

    >>> import torch
    >>> s, t = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, -math.inf], [1.0, 0.0, 0.0]])
    >>> round(ref64(s, t, 1.0, "forward_kl"), 4)  # (log 1.5 + KL(softmax(1, 0, 0) ‖ uniform)) / 2
    0.2644
    >>> grad64(s, t, 1.0, "forward_kl").shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math

import torch


def ref64(student, teacher, tau, kind, beta=0.5) -> float:
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


def grad64(student, teacher, tau, kind, beta=0.5) -> torch.Tensor:
    """d(loss)/d(student logits) in float64 from the closed forms (no autograd, no kd_loss):
    forward KL τ·(p_S − p_T)/N; reverse KL p_S·(log p_S − log p_T − KL)/N, 0 on banned tokens;
    JSD p_S·(g − Σ p_S·g)/N with g = (1−β)(log p_S − log M)."""
    V = student.shape[-1]
    s, t = student.double().reshape(-1, V) / tau, teacher.double().reshape(-1, V) / tau
    banned = t == -math.inf
    log_pt = torch.log_softmax(t, -1)
    if kind == "reverse_kl":
        s = s.masked_fill(banned, -math.inf)
    log_ps = torch.log_softmax(s, -1)
    ps, pt = log_ps.exp(), log_pt.exp()
    if kind == "forward_kl":
        g = tau * (ps - pt)
    else:
        if kind == "reverse_kl":
            d = torch.where(ps > 0, log_ps - log_pt.masked_fill(banned, 0.0), torch.zeros(()))
        else:
            d = (1 - beta) * (log_ps - torch.logaddexp(math.log(beta) + log_pt, math.log(1 - beta) + log_ps))
        g = ps * (d - (ps * d).sum(-1, keepdim=True))
        g = g.masked_fill(banned, 0.0) if kind == "reverse_kl" else g
    return (g / s.shape[0]).reshape(student.shape)
