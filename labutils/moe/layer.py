"""Lab 04: a Mixture-of-Experts layer — top-k routing, expert capacity, load balancing.

A router scores every token against every expert; each token goes to its k best experts; an
expert takes at most ``capacity`` assignments per group of tokens routed together (GShard's
per-group capacity), the rest are dropped and the token rides the residual connection.

    >>> r = route_top_k(torch.randn(6, 4), k=2, capacity_factor=1.0)   # 6 tokens, 4 experts
    >>> tuple(r.expert_index.shape), tuple(r.weights.shape), r.capacity   # ⌈1.0 · 6 · 2 / 4⌉ = 3 slots per expert
    ((6, 2), (6, 2), 3)
    >>> load_balancing_loss(torch.zeros(8, 4), torch.arange(8).view(8, 1) % 4)   # uniform routing
    tensor(1.)
    >>> MoELayer(32, 64, n_experts=4, k=2)(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])

Left out on purpose: shared experts and fine-grained experts (DeepSeek), router z-loss, jitter
noise, DeepSeek-V3's bias-based auxiliary-loss-free balancing, expert-choice routing, and fused
grouped-GEMM kernels (the experts run in a plain Python loop — readable, not fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from labutils import positive_int

SWITCH_AUX_WEIGHT = 1e-2  # Switch Transformer's α for the balancing loss (Fedus et al. 2021, arXiv 2101.03961)


@dataclass
class Routing:
    """Where each token goes. Column j holds each token's (j+1)-th choice by router probability."""

    expert_index: torch.Tensor  # (T, k) long
    weights: torch.Tensor  # (T, k) float: mixing weights (renormalised over the k when k > 1)
    dropped: torch.Tensor  # (T, k) bool: over capacity — the assignment contributes nothing
    capacity: int | None = None  # per expert, for this group of tokens (None: unlimited)


# ----------------------------------------------------------------------------- routing

def expert_capacity(n_tokens: int, n_experts: int, k: int, capacity_factor: float) -> int:
    """Assignments one expert may take from a group: ceil(capacity_factor · T · k / E) (Switch, GShard)."""
    return math.ceil(capacity_factor * n_tokens * k / n_experts)


def drop_over_capacity(expert_index: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """(T, k) bool: which assignments overflow their expert's ``capacity`` slots.

    Slots fill by choice rank first (every token's first choice before any second choice, GShard),
    then by token order.

    >>> drop_over_capacity(torch.tensor([[0], [0], [1]]), 2, 1).flatten().tolist()
    [False, True, False]
    """
    T, k = expert_index.shape
    order = expert_index.t().reshape(-1)  # (k·T,) choice rank first, then token
    onehot = F.one_hot(order, n_experts)  # (k·T, E)
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # slot each assignment would take in its expert
    return (position >= capacity).view(k, T).t()  # (T, k)


def route_top_k(router_logits: torch.Tensor, k: int, *, capacity_factor: float | None = None,
                normalize: bool = True) -> Routing:
    """Top-k routing of T tokens over E experts from router logits (T, E).

    weights: softmax over all E experts, top k kept; renormalised to sum 1 over the k when
    ``normalize`` and k > 1 (with k = 1 the raw probability stays, as in Switch, so the router
    still gets a gradient). capacity_factor=None never drops.
    """
    if not isinstance(router_logits, torch.Tensor) or router_logits.ndim != 2 or not router_logits.is_floating_point():
        got = f"{tuple(router_logits.shape)} {router_logits.dtype}" if isinstance(router_logits, torch.Tensor) else type(router_logits).__name__
        raise ValueError(f"router_logits must be a float tensor of shape (T, E), got {got}")
    T, E = router_logits.shape
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= E:
        raise ValueError(f"k must be an int in [1, n_experts={E}], got {k!r}")
    if capacity_factor is not None and not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
        raise ValueError(f"capacity_factor must be a positive number or None, got {capacity_factor!r}")
    probs = router_logits.softmax(-1)  # (T, E)
    weights, expert_index = probs.topk(k, dim=-1)  # (T, k) each, sorted by probability
    if normalize and k > 1:
        weights = weights / weights.sum(-1, keepdim=True)
    if capacity_factor is None:
        return Routing(expert_index, weights, torch.zeros(T, k, dtype=torch.bool))
    cap = expert_capacity(T, E, k, capacity_factor)
    return Routing(expert_index, weights, drop_over_capacity(expert_index, E, cap), cap)


def load_balancing_loss(router_logits: torch.Tensor, expert_index: torch.Tensor) -> torch.Tensor:
    """E · Σ_i f_i · P_i (Switch): f_i = share of the T·k assignments (before dropping) sent to
    expert i, P_i = mean router probability of expert i. Equals 1 for uniform routing. Computed in at least
    float32 (bf16 logits are upcast), so the result is a float32 (or float64) scalar with a gradient through P only."""
    if not isinstance(router_logits, torch.Tensor) or router_logits.ndim != 2:
        raise ValueError("router_logits must be a tensor of shape (T, E)")
    if not isinstance(expert_index, torch.Tensor) or expert_index.ndim != 2 or expert_index.shape[0] != router_logits.shape[0]:
        raise ValueError(f"expert_index must be a (T, k) tensor with T = {router_logits.shape[0]}")
    T, E = router_logits.shape
    dtype = torch.promote_types(router_logits.dtype, torch.float32)  # bf16 logits: the loss is computed in float32
    f = torch.bincount(expert_index.reshape(-1), minlength=E).to(dtype) / expert_index.numel()  # (E,) a count: no gradient
    P = router_logits.to(dtype).softmax(-1).mean(0)  # (E,)
    return E * (f * P).sum()


# ----------------------------------------------------------------------------- the layer

class MoELayer(nn.Module):
    """Router + n_experts GELU MLPs (d_model → d_ff → d_model). Returns the weighted expert mixture
    only: the transformer block adds the residual, which is what carries a dropped token.

    ``drop_fn`` (an attribute, default ``drop_over_capacity``) decides which assignments overflow; the
    notebook sets it to the learner's function once that passed its check."""

    drop_fn = staticmethod(drop_over_capacity)

    def __init__(self, d_model: int, d_ff: int, n_experts: int, k: int, *, capacity_factor: float | None = None):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_ff", d_ff), ("n_experts", n_experts), ("k", k)):
            positive_int(f"MoELayer: {name}", v)
        if k > n_experts:
            raise ValueError(f"MoELayer: k={k} exceeds n_experts={n_experts}")
        if capacity_factor is not None and not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
            raise ValueError(f"MoELayer: capacity_factor must be positive or None, got {capacity_factor!r}")
        self.d_model, self.d_ff, self.n_experts, self.k, self.capacity_factor = d_model, d_ff, n_experts, k, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w_up = nn.Parameter(torch.randn(n_experts, d_model, d_ff) * 0.02)  # (E, C, F)
        self.b_up = nn.Parameter(torch.zeros(n_experts, d_ff))  # (E, F)
        self.w_down = nn.Parameter(torch.randn(n_experts, d_ff, d_model) * 0.02)  # (E, F, C)
        self.b_down = nn.Parameter(torch.zeros(n_experts, d_model))  # (E, C)
        self.last_router_logits = None  # kept for the balancing loss
        self.last_routing = None

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens x (n, C) -> (n, C)."""
        return F.gelu(x @ self.w_up[e] + self.b_up[e]) @ self.w_down[e] + self.b_down[e]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.d_model:
            raise ValueError(f"MoELayer expects (..., {self.d_model}) input, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        flat = x.reshape(-1, self.d_model)  # (T, C)
        logits = self.router(flat)  # (T, E)
        r = route_top_k(logits, self.k, capacity_factor=self.capacity_factor)
        if r.capacity is not None and self.drop_fn is not drop_over_capacity:
            r.dropped = self.drop_fn(r.expert_index, self.n_experts, r.capacity)
        self.last_router_logits, self.last_routing = logits, r
        out = torch.zeros_like(flat)
        live = ~r.dropped  # (T, k)
        for e in range(self.n_experts):
            tok, slot = torch.nonzero((r.expert_index == e) & live, as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, self.expert(e, flat[tok]) * r.weights[tok, slot, None])
        return out.view_as(x)


def balancing_loss_of(model: nn.Module, loss_fn=load_balancing_loss) -> torch.Tensor:
    """Sum of ``loss_fn(router_logits, expert_index)`` (default load_balancing_loss) over every MoELayer of
    a model, after a forward pass."""
    layers = [m for m in model.modules() if isinstance(m, MoELayer) and m.last_router_logits is not None]
    if not layers:
        raise ValueError("no MoELayer with a recorded forward pass in this model")
    return sum(loss_fn(m.last_router_logits, m.last_routing.expert_index) for m in layers)
