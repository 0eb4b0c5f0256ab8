"""Checkers for 04_moe_sharding. Each runs fixed, seeded cases against the lab's reference (routing, the
balancing loss and its gradient, the dispatch counts, the communication count) and prints the cost beside
the verdict.

    >>> from labutils.moe.layer import drop_over_capacity
    >>> check_drop_over_capacity(drop_over_capacity)   # doctest: +ELLIPSIS
    Exercise 4.1 · drop_over_capacity — all 6 cases pass ✓
      cost: in the T=64, E=8, k=2 case 32 of 128 assignments were dropped — ...
"""

from __future__ import annotations

import torch

from labutils.checks import Case, Exercise, run_cases
from labutils.moe.cost import comm_per_step, dispatch_splits
from labutils.moe.layer import drop_over_capacity, load_balancing_loss

NOTEBOOK = "04_moe_sharding"
EX_CAPACITY = Exercise(NOTEBOOK, "4.1", "drop_over_capacity")
EX_BALANCE = Exercise(NOTEBOOK, "4.2", "load_balancing_loss")
EX_SPLITS = Exercise(NOTEBOOK, "4.3", "dispatch_splits")
EX_COMM = Exercise(NOTEBOOK, "4.4", "comm_per_step")


def _routing_cases():
    g = torch.Generator().manual_seed(4)
    cases = [Case("2 tokens want expert 0, capacity 1", (torch.tensor([[0], [0]]), 2, 1), torch.tensor([[False], [True]])),
             Case("first choices beat second choices", (torch.tensor([[1, 0], [0, 1]]), 2, 1),
                  torch.tensor([[False, True], [False, True]]),
                  hint="fill every token's FIRST choice before any second choice (GShard)"),
             Case("nothing over capacity", (torch.tensor([[0, 1], [2, 3]]), 4, 1), torch.zeros(2, 2, dtype=torch.bool))]
    for T, E, k, cap in [(16, 4, 2, 5), (64, 8, 2, 12), (33, 8, 1, 3)]:
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k) distinct choices
        cases.append(Case(f"T={T}, E={E}, k={k}, capacity={cap}", (idx, E, cap), drop_over_capacity(idx, E, cap)))
    return cases


def check_drop_over_capacity(fn) -> None:
    cases = _routing_cases()
    dropped = drop_over_capacity(*cases[-2].args)
    run_cases(EX_CAPACITY, fn, cases, atol=0, rtol=0,
              hint="count, expert by expert, how many slots are taken before each assignment, visiting "
                   "choice rank 0 for all tokens, then choice rank 1, …; drop when the count reaches capacity",
              cost=lambda: f"in the T=64, E=8, k=2 case {int(dropped.sum())} of {dropped.numel()} assignments "
                           "were dropped — those tokens ride the residual past that expert")


def _value_and_grad(fn, logits, idx):
    x = logits.clone().requires_grad_(True)
    out = fn(x, idx)
    if not torch.is_tensor(out) or out.numel() != 1:
        return "not a one-element tensor", None
    if not out.requires_grad:
        return float(out.detach()), None
    (grad,) = torch.autograd.grad(out.reshape(()), x)
    return float(out.detach()), grad


def check_load_balancing_loss(fn) -> None:
    g = torch.Generator().manual_seed(5)
    specs = [("uniform routing", torch.zeros(8, 4), torch.arange(8).view(8, 1) % 4)]
    for T, E, k in [(32, 4, 1), (64, 8, 2), (16, 16, 4)]:
        logits = torch.randn(T, E, generator=g) * 2
        specs.append((f"T={T}, E={E}, k={k}", logits, logits.topk(k, -1).indices))
    collapsed = torch.zeros(8, 4)
    collapsed[:, 0] = 5.0
    specs.append(("everything on expert 0", collapsed, torch.zeros(8, 1, dtype=torch.long)))
    cases = [Case(name, (x, idx), _value_and_grad(load_balancing_loss, x, idx),
                  hint="uniform f and P give E · E · (1/E)² = 1" if name.startswith("uniform") else None)
             for name, x, idx in specs]

    def verdict(got, case):
        (val, grad), (want, want_grad) = got, case.expected
        if isinstance(val, str):
            return "return a scalar tensor, e.g. E * (f * P).sum()"
        if abs(val - want) > 1e-6 + 1e-5 * abs(want):
            return f"value {val:.6g}, expected {want:.6g}"
        if grad is None:
            return ("the value is right but carries no gradient: compute P with torch ops on router_logits "
                    "(softmax, mean) — no .item(), no numpy, no torch.no_grad()")
        if not torch.allclose(grad, want_grad, rtol=1e-4, atol=1e-6):
            return ("the value is right but its gradient is not: only P_i (the mean softmax) should carry one — "
                    "f_i is a count, so build it without the logits' graph")
        return None

    run_cases(EX_BALANCE, lambda x, idx: _value_and_grad(fn, x, idx), cases, check=verdict,
              hint="f_i counts assignments (all T·k of them, before dropping); P_i averages softmax probabilities; "
                   "multiply Σ f_i·P_i by E")


def check_dispatch_splits(fn) -> None:
    g = torch.Generator().manual_seed(7)
    cases = [Case("4 experts on 2 ranks", (torch.tensor([[0, 3], [1, 2], [3, 2]]), torch.zeros(3, 2, dtype=torch.bool), 4, 2),
                  torch.tensor([2, 4])),
             Case("dropped assignments stay home", (torch.tensor([[0, 3], [1, 2]]), torch.tensor([[False, True], [True, False]]), 4, 2),
                  torch.tensor([1, 1]), hint="a dropped assignment is not sent anywhere: skip it")]
    for T, E, k, P in [(16, 8, 2, 2), (40, 8, 2, 4), (7, 16, 4, 8)]:
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
        drop = torch.rand(T, k, generator=g) < 0.2
        cases.append(Case(f"T={T}, E={E}, k={k}, P={P}", (idx, drop, E, P), dispatch_splits(idx, drop, E, P)))
    idx, drop, E, P = cases[-2].args
    n = dispatch_splits(idx, drop, E, P)
    run_cases(EX_SPLITS, fn, cases, atol=0, rtol=0, hint="expert e lives on rank e // (n_experts // world_size); count live assignments per rank",
              cost=lambda: f"in the P=4 case rank 0 keeps {int(n[0])} rows and sends {int(n[1:].sum())} rows "
                           f"({int(n[1:].sum()) * 257 * 4:,} bytes at d_model 256 fp32: each row plus its expert id) in 3 messages")


def check_comm_per_step(fn) -> None:
    specs = [("pp", 1, 256, 4, 2, 1), ("pp", 64, 256, 4, 2, 2), ("pp", 64, 256, 8, 4, 8),
             ("ep", 1, 256, 4, 2, 1), ("ep", 64, 256, 4, 2, 1), ("ep", 64, 1024, 8, 4, 1)]
    cases = []
    for lay, B, d, L, P, nm in specs:
        kw = dict(batch=B, d_model=d, n_layers=L, world_size=P, k=2, n_micro=nm)
        cases.append(Case(f"{lay}, B={B}, d_model={d}, L={L}, P={P}, n_micro={nm}", (lay,), comm_per_step(lay, **kw),
                          kwargs=kw, rtol=1e-9, atol=1e-6))
    ep, pp = (comm_per_step(lay, batch=64, d_model=256, n_layers=4, world_size=2, n_micro=2) for lay in ("ep", "pp"))
    run_cases(EX_COMM, fn, cases, hint="return (bytes, messages) summed over all ranks; ep: three all-to-alls per layer, "
                                       "each with P·(P−1) messages; pp: n_micro messages per stage boundary plus one for the tokens",
              cost=lambda: f"B=64, d_model 256, 4 layers, P=2: ep {ep[0] / 64:,.0f} bytes and {ep[1] / 64:.2f} messages per token; "
                           f"pp {pp[0] / 64:,.0f} bytes and {pp[1] / 64:.2f} messages per token")
