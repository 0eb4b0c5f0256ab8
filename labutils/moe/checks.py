"""Checkers for 04_moe_sharding. Each runs fixed, seeded cases against the lab's reference (routing, the
balancing loss and its gradient, the dispatch counts, the communication count) and prints the cost beside
the verdict, computed from what the learner's function returned.

    >>> from labutils.moe.layer import drop_over_capacity
    >>> check_drop_over_capacity(drop_over_capacity)   # doctest: +ELLIPSIS
    Exercise 4.1 · drop_over_capacity — all 7 cases pass ✓
      cost: in the T=64, E=8, k=2 case your mask dropped 32 of 128 assignments — ...
"""

from __future__ import annotations

import torch

from labutils.checks import Case, Exercise, compare, run_cases
from labutils.moe.cost import comm_per_step, dispatch_splits
from labutils.moe.layer import drop_over_capacity, load_balancing_loss
from labutils.moe.serving import ep_off_rank
from labutils.moe.workers import StackConfig

NOTEBOOK = "04_moe_sharding"
EX_CAPACITY = Exercise(NOTEBOOK, "4.1", "drop_over_capacity")
EX_BALANCE = Exercise(NOTEBOOK, "4.2", "load_balancing_loss")
EX_SPLITS = Exercise(NOTEBOOK, "4.3", "dispatch_splits")
EX_COMM = Exercise(NOTEBOOK, "4.4", "comm_per_step")


def _tensor_of(got, dtype, shape) -> str | None:
    """Why ``got`` is not a torch tensor of this dtype and shape (None when it is)."""
    if not torch.is_tensor(got):
        return f"expected a torch tensor of dtype {dtype} and shape {tuple(shape)}, got {type(got).__name__}"
    if got.dtype != dtype:
        return f"expected dtype {dtype}, got {got.dtype} (shape {tuple(got.shape)})"
    if got.shape != shape:
        return f"expected shape {tuple(shape)}, got shape {tuple(got.shape)}"
    return None


def _exact_tensor(dtype, why_dtype: str):
    def verdict(got, case):
        why = _tensor_of(got, dtype, case.expected.shape)
        if why:
            return why + (f" — {why_dtype}" if torch.is_tensor(got) and got.dtype != dtype else "")
        return compare(got, case.expected, rtol=0, atol=0)
    return verdict


def _routing_cases():
    g = torch.Generator().manual_seed(4)
    cases = [Case("2 tokens want expert 0, capacity 1", (torch.tensor([[0], [0]]), 2, 1), torch.tensor([[False], [True]])),
             Case("first choices beat second choices", (torch.tensor([[1, 0], [0, 1]]), 2, 1),
                  torch.tensor([[False, True], [False, True]]),
                  hint="fill every token's FIRST choice before any second choice (GShard)"),
             Case("nothing over capacity", (torch.tensor([[0, 1], [2, 3]]), 4, 1), torch.zeros(2, 2, dtype=torch.bool)),
             Case("capacity 2: the third token in line is the first dropped", (torch.tensor([[0], [0], [0], [1]]), 2, 2),
                  torch.tensor([[False], [False], [True], [False]]),
                  hint="an expert with capacity c keeps c assignments: the (c+1)-th is the first dropped")]
    for T, E, k, cap in [(16, 4, 2, 5), (64, 8, 2, 12), (33, 8, 1, 3)]:
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k) distinct choices
        cases.append(Case(f"T={T}, E={E}, k={k}, capacity={cap}", (idx, E, cap), drop_over_capacity(idx, E, cap)))
    return cases


def _slots(order: torch.Tensor, n_experts: int) -> torch.Tensor:
    """0-based place in its expert's queue of each assignment, visited in ``order`` (1-D expert ids)."""
    onehot = torch.nn.functional.one_hot(order, n_experts)
    return (onehot.cumsum(0) * onehot).sum(-1) - 1


def _capacity_diagnose(got, expected, case):
    idx, E, cap = case.args
    if not torch.is_tensor(got) or got.shape != expected.shape or got.dtype != torch.bool:
        return None
    T, k = idx.shape
    token_order = _slots(idx.reshape(-1), E).view(T, k) >= cap
    per_rank = torch.stack([_slots(idx[:, j], E) >= cap for j in range(k)], 1)
    if k > 1 and torch.equal(got, token_order):
        return ("slots were filled token by token (both choices of token 0, then token 1…): fill choice rank 0 "
                "for all tokens first")
    if k > 1 and torch.equal(got, per_rank):
        return "each choice rank got its own count: second choices must queue behind every first choice of that expert"
    if torch.equal(got, (_slots(idx.t().reshape(-1), E) > cap).view(k, T).t()):
        return (f"one assignment too many kept: with capacity {cap} the assignment at place {cap} (0-based) "
                "is the first dropped")
    return None


def check_drop_over_capacity(fn) -> None:
    cases = _routing_cases()
    big = cases[-2].args

    def cost():
        dropped = fn(*big)
        return (f"in the T=64, E=8, k=2 case your mask dropped {int(dropped.sum())} of {dropped.numel()} assignments "
                "— those tokens ride the residual past that expert")

    run_cases(EX_CAPACITY, fn, cases, check=_exact_tensor(torch.bool, "return a bool mask, e.g. `taken >= capacity`"),
              diagnose=_capacity_diagnose,
              hint="count, expert by expert, how many slots are taken before each assignment, visiting "
                   "choice rank 0 for all tokens, then choice rank 1, …; drop when the count reaches capacity",
              cost=cost)


def _value_and_grad(fn, logits, idx):
    """(value, gradient of the value with respect to logits), for the reference."""
    x = logits.clone().requires_grad_(True)
    out = fn(x, idx)
    (grad,) = torch.autograd.grad(out.reshape(()), x)
    return float(out.detach()), grad


def _balance_verdict(pristine):
    """The check: value, then gradient (finite, equal to the reference's), inputs left untouched."""
    def verdict(got, case):
        x, idx = case.args
        want, want_grad = case.expected
        if not torch.equal(x.detach(), pristine[case.name][0]) or not torch.equal(idx, pristine[case.name][1]):
            return "your function modified router_logits or expert_index in place: work on new tensors"
        if not torch.is_tensor(got) or got.numel() != 1:
            return (f"got a {type(got).__name__}, not a one-element tensor: return a scalar torch tensor that keeps "
                    "its graph (no .item(), no float())")
        want_dtype = torch.promote_types(x.dtype, torch.float32)
        if got.dtype != want_dtype:
            return (f"got a {got.dtype} scalar for {x.dtype} logits: compute the loss in {want_dtype} (upcast the logits "
                    f"before the softmax) and return it in {want_dtype}")
        val = float(got.detach().float())
        if abs(val - want) > 1e-6 + 1e-5 * abs(want):
            return compare(val, want, rtol=1e-5, atol=1e-6)
        grad = torch.autograd.grad(got.reshape(()), x, allow_unused=True)[0] if got.requires_grad else None
        if grad is None:
            return ("the value is right but carries no gradient: compute P with torch ops on router_logits "
                    "(softmax, mean) — no .item(), no numpy, no torch.no_grad(), no .detach()")
        if not torch.isfinite(grad).all():
            return "the gradient with respect to router_logits contains NaN or inf"
        tol = dict(rtol=2e-2, atol=1e-4) if grad.dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-6)
        if not torch.allclose(grad.float(), want_grad.float(), **tol):
            err = (grad.float() - want_grad.float()).abs().max().item()
            return (f"the value is right but its gradient is not (max abs error {err:.3g}): only P_i (the mean "
                    "softmax) should carry one — f_i is a count, so build it without the logits' graph")
        return None
    return verdict


def _balance_diagnose(fn):
    def diagnose(got, expected, case):
        x, idx = case.args
        E, k, want = x.shape[1], idx.shape[1], expected[0]
        if not torch.is_tensor(got) or got.numel() != 1 or not want:
            return None
        if got.dtype != torch.promote_types(x.dtype, torch.float32):  # the verdict already named the dtype
            return None
        ratio = float(got.detach().float()) / want
        if abs(ratio * E - 1) < 1e-4:
            return (f"the value is exactly 1/E = 1/{E} of the expected: multiply Σ f_i·P_i by E "
                    "(a mean over the E experts instead of a sum does the same)")
        if k > 1 and abs(ratio - k) < 1e-4:
            return f"the value is exactly k = {k} times the expected: f_i divides by all T·k assignments, not by T"
        if x.dtype == torch.bfloat16:  # right on the same logits in float32? then only the upcast is missing
            try:
                up = fn(x.detach().float(), idx.clone())
                if torch.is_tensor(up) and abs(float(up.detach()) - want) <= 1e-6 + 1e-5 * abs(want):
                    return ("right on float32 logits, wrong on bf16 ones: upcast to float32 before the softmax "
                            "(logits.float())")
            except Exception:
                return None
        return None
    return diagnose


def check_load_balancing_loss(fn) -> None:
    g = torch.Generator().manual_seed(5)
    specs = [("uniform routing, T=8, E=4, k=1, float32", torch.zeros(8, 4), torch.arange(8).view(8, 1) % 4)]
    for T, E, k in [(32, 4, 1), (64, 8, 2), (16, 16, 4)]:
        logits = torch.randn(T, E, generator=g) * 2
        specs.append((f"T={T}, E={E}, k={k}, float32", logits, logits.topk(k, -1).indices))
    collapsed = torch.zeros(8, 4)
    collapsed[:, 0] = 5.0
    specs.append(("everything on expert 0, T=8, E=4, k=1, float32", collapsed, torch.zeros(8, 1, dtype=torch.long)))
    lg = (torch.randn(256, 8, generator=g) * 3).bfloat16()
    specs.append(("bf16 logits (loss computed in float32), T=256, E=8, k=2", lg, lg.float().topk(2, -1).indices))
    pristine = {name: (x.clone(), idx.clone()) for name, x, idx in specs}
    cases = [Case(name, (x.clone().requires_grad_(True), idx.clone()), _value_and_grad(load_balancing_loss, x, idx),
                  hint="uniform f and P give E · E · (1/E)² = 1" if name.startswith("uniform") else None)
             for name, x, idx in specs]
    run_cases(EX_BALANCE, fn, cases, check=_balance_verdict(pristine), diagnose=_balance_diagnose(fn),
              hint="f_i counts assignments (all T·k of them, before dropping); P_i averages softmax probabilities "
                   "(in float32); multiply Σ f_i·P_i by E")


def _splits_cases():
    g = torch.Generator().manual_seed(7)
    no_drop = torch.zeros(3, 2, dtype=torch.bool)
    cases = [Case("4 experts on 2 ranks", (torch.tensor([[0, 3], [1, 2], [3, 2]]), no_drop, 4, 2), torch.tensor([2, 4])),
             Case("dropped assignments stay home",
                  (torch.tensor([[0, 3], [1, 2]]), torch.tensor([[False, True], [True, False]]), 4, 2),
                  torch.tensor([1, 1]), hint="a dropped assignment is not sent anywhere: skip it"),
             Case("the last rank receives nothing, E=8, P=4", (torch.tensor([[0, 5], [2, 1], [4, 3]]), no_drop, 8, 4),
                  torch.tensor([2, 2, 2, 0]),
                  hint="the result needs one entry per rank, zeros included: all_to_all_single needs world_size sizes")]
    for T, E, k, P in [(16, 8, 2, 2), (40, 8, 2, 4), (7, 16, 4, 8)]:
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
        drop = torch.rand(T, k, generator=g) < 0.2
        cases.append(Case(f"T={T}, E={E}, k={k}, P={P}", (idx, drop, E, P), dispatch_splits(idx, drop, E, P)))
    return cases


def check_dispatch_splits(fn) -> None:
    cases = _splits_cases()
    big = cases[-2].args

    def cost():
        n = fn(*big)
        sent = int(n[1:].sum())
        return (f"in the P=4 case your splits keep {int(n[0])} rows on rank 0 and send {sent} rows "
                f"({sent * 257 * 4:,} bytes at d_model 256 fp32: each row plus its expert id) in 3 messages")

    run_cases(EX_SPLITS, fn, cases, cost=cost,
              check=_exact_tensor(torch.long, "split sizes are int64 counts (torch.long)"),
              hint="expert e lives on rank e // (n_experts // world_size); count live assignments per rank, "
                   "one entry for every rank")


def _off_rank_patterns():
    """Real off-rank counts, per layer: ep_off_rank on small stacks (the notebook's layouts, scaled down)."""
    out = []
    for P, B, L, seed in [(2, 16, 4, 1), (4, 24, 4, 2), (2, 5, 3, 3)]:
        cfg = StackConfig(d_model=32, d_ff=32, n_experts=8, k=2, n_layers=L)
        x = torch.randn(B, cfg.d_model, generator=torch.Generator().manual_seed(seed))
        out.append((P, B, L, ep_off_rank(cfg, x, world_size=P)))
    return out


def _comm_diagnose(got, expected, case):
    """Name the usual slips in 4.4 from the numbers they give."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None
    lay, kw = case.args[0], case.kwargs
    P, L, B, d, k = kw["world_size"], kw["n_layers"], kw["batch"], kw["d_model"], kw.get("k", 2)
    try:
        nbytes, msgs = float(got[0]), float(got[1])
    except (TypeError, ValueError):
        return None
    close = lambda a, b: abs(a - b) <= 1e-6 * max(1.0, abs(b))  # noqa: E731
    if lay == "pp":
        if P > 2 and close(nbytes, B * d * 4 + B * 8):
            return f"the activations cross each of the P − 1 = {P - 1} stage boundaries, not one"
        if close(nbytes, expected[0] - B * 8):
            return "the last stage also sends the next token ids (batch int64) back to stage 0"
        return None
    off = kw.get("off_rank")
    rows = sum(off) if off is not None else L * B * k * (P - 1) / P
    counts = L * P * (P - 1) * 8
    if off is not None and close(nbytes, comm_per_step("ep", **{**kw, "off_rank": None})[0]):
        return ("off_rank was ignored: it lists, layer by layer, the assignments that really left their rank — "
                "use them")
    if close(nbytes, counts + rows * (d + 1) * 4):
        return "only the dispatch was counted: every row also comes back from the expert (combine), d_model values"
    if close(nbytes, counts + rows * 2 * d * 4):
        return "each dispatched row carries its expert id too: d_model + 1 values out, d_model back"
    if close(nbytes, rows * (2 * d + 1) * 4):
        return "the send counts travel too: one int64 from every rank to each of its P − 1 peers, every layer"
    if close(msgs, 2 * L * P * (P - 1)):
        return "this lab's code runs three all-to-alls per MoE layer: counts, rows, outputs"
    if close(msgs, 3 * L * P * P):
        return "a rank's own share never leaves it: P − 1 messages per rank per all-to-all"
    if close(msgs, 3 * L * (P - 1)):
        return "that is one rank's messages: sum over all P ranks"
    return None


def check_comm_per_step(fn) -> None:
    specs = [("pp", 1, 256, 4, 2, 1), ("pp", 64, 256, 4, 2, 2), ("pp", 64, 256, 8, 4, 8),
             ("ep", 1, 256, 4, 2, 1), ("ep", 64, 256, 4, 2, 1), ("ep", 64, 1024, 8, 4, 1)]
    cases = []
    for lay, B, d, L, P, nm in specs:
        kw = dict(batch=B, d_model=d, n_layers=L, world_size=P, k=2, n_micro=nm)
        cases.append(Case(f"{lay}, B={B}, d_model={d}, L={L}, P={P}, n_micro={nm}, off_rank=None", (lay,),
                          comm_per_step(lay, **kw), kwargs=kw, rtol=1e-9, atol=1e-6))
    for P, B, L, off in _off_rank_patterns():
        kw = dict(batch=B, d_model=32, n_layers=L, world_size=P, k=2, off_rank=off)
        cases.append(Case(f"ep, B={B}, d_model=32, L={L}, P={P}, off_rank={off} (measured routing)", ("ep",),
                          comm_per_step("ep", **kw), kwargs=kw, rtol=1e-9, atol=1e-6))

    def cost():
        ep, pp = (fn(lay, batch=64, d_model=256, n_layers=4, world_size=2, k=2, n_micro=2) for lay in ("ep", "pp"))
        return (f"B=64, d_model 256, 4 layers, P=2, by your function: ep {ep[0] / 64:,.0f} bytes and "
                f"{ep[1] / 64:.2f} messages per token; pp {pp[0] / 64:,.0f} bytes and {pp[1] / 64:.2f} messages per token")

    run_cases(EX_COMM, fn, cases, cost=cost, diagnose=_comm_diagnose,
              hint="return (bytes, messages) summed over all ranks; ep: three all-to-alls per layer, "
                   "each with P·(P−1) messages; pp: n_micro messages per stage boundary plus one for the tokens")
