"""Lab 04's checkers: the reference passes, and wrong answers learners really write each fail, naming the case."""

import pytest
import torch
import torch.nn.functional as F

from labutils.checks import CheckFailed, reset_session, use
from labutils.moe import (
    MoELayer,
    balancing_loss_of,
    check_comm_per_step,
    check_dispatch_splits,
    check_drop_over_capacity,
    check_load_balancing_loss,
    comm_per_step,
    dispatch_splits,
    drop_over_capacity,
    load_balancing_loss,
)


def rejects(check, wrong, capsys) -> str:
    with pytest.raises(CheckFailed):
        check(wrong)
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- 4.1 drop_over_capacity

def as_int_mask(idx, E, cap):  # right pattern, but an int tensor where the spec asks for bool
    return drop_over_capacity(idx, E, cap).long()


def token_order_first(idx, E, cap):  # fills token by token (both choices of token 0, then token 1, …), not choice rank first
    T, k = idx.shape
    pos = (F.one_hot(idx.reshape(-1), E).cumsum(0) * F.one_hot(idx.reshape(-1), E)).sum(-1) - 1
    return (pos >= cap).view(T, k)


def keeps_one_too_many(idx, E, cap):  # off by one: drops only when the count exceeds capacity
    T, k = idx.shape
    oh = F.one_hot(idx.t().reshape(-1), E)
    pos = (oh.cumsum(0) * oh).sum(-1) - 1
    return (pos > cap).view(k, T).t()


def never_drops(idx, E, cap):  # forgets capacity altogether
    return torch.zeros_like(idx, dtype=torch.bool)


def per_choice_counters(idx, E, cap):  # a fresh count per choice rank: second choices never queue behind first ones
    T, k = idx.shape
    dropped = torch.zeros(T, k, dtype=torch.bool)
    for j in range(k):
        taken = [0] * E
        for t in range(T):
            e = int(idx[t, j])
            dropped[t, j] = taken[e] >= cap
            taken[e] += 1
    return dropped


def drops_whole_expert(idx, E, cap):  # an overloaded expert drops all its assignments, not just the overflow
    return torch.bincount(idx.flatten(), minlength=E)[idx] > cap


def second_choices_first(idx, E, cap):  # visits the choice ranks in reverse: second choices take the slots first
    return drop_over_capacity(idx.flip(1), E, cap).flip(1)


@pytest.mark.parametrize("wrong, case, says", [
    (per_choice_counters, "first choices beat second choices", "its own count"),
    (drops_whole_expert, "2 tokens want expert 0", None),
    (second_choices_first, "first choices beat second choices", None),
    (token_order_first, "first choices beat second choices", "token by token")])
def test_drop_over_capacity_rejects_queue_mistakes(wrong, case, says, capsys):
    out = rejects(check_drop_over_capacity, wrong, capsys)
    assert f"({case}" in out and (says is None or says in out)


@pytest.mark.parametrize("wrong, case", [(as_int_mask, "2 tokens want expert 0"), (token_order_first, "first choices"),
                                         (keeps_one_too_many, "capacity 2"), (never_drops, "2 tokens want expert 0")])
def test_drop_over_capacity_rejects(wrong, case, capsys):
    out = rejects(check_drop_over_capacity, wrong, capsys)
    assert f"({case}" in out
    if wrong is as_int_mask:
        assert "dtype torch.bool" in out and "torch.int64" in out


# ----------------------------------------------------------------------------- 4.2 load_balancing_loss

def no_factor_e(lg, idx):  # forgets the leading E: uniform routing gives 1/E, not 1
    return load_balancing_loss(lg, idx) / lg.shape[1]


def f_over_tokens(lg, idx):  # divides the counts by T instead of T·k
    E = lg.shape[1]
    f = torch.bincount(idx.reshape(-1), minlength=E).float() / idx.shape[0]
    return E * (f * lg.float().softmax(-1).mean(0)).sum()


def returns_float(lg, idx):  # returns a Python number: the router gets no gradient
    return float(load_balancing_loss(lg, idx))


def detached_p(lg, idx):  # right value, computed on detached logits: no gradient
    return load_balancing_loss(lg.detach(), idx)


def soft_f(lg, idx):  # f from probabilities instead of counts: value E·Σ P_i², not E·Σ f_i·P_i
    P = lg.float().softmax(-1).mean(0)
    return lg.shape[1] * (P * P).sum()


def grad_through_f(lg, idx):  # right value, but a gradient that also flows through a soft f
    E = lg.shape[1]
    f_hard = torch.bincount(idx.reshape(-1), minlength=E).float() / idx.numel()
    p = lg.float().softmax(-1).mean(0)
    return E * ((f_hard + p - p.detach()) * p).sum()


def bf16_softmax(lg, idx):  # no upcast: the softmax and the mean run in bf16
    E = lg.shape[1]
    f = torch.bincount(idx.reshape(-1), minlength=E).to(lg.dtype) / idx.numel()
    return E * (f * lg.softmax(-1).mean(0)).sum()


def in_place_shift(lg, idx):  # subtracts the max in place for "stability": modifies the caller's logits
    with torch.no_grad():
        lg -= lg.max(-1, keepdim=True).values
    return load_balancing_loss(lg, idx)


def mean_over_experts(lg, idx):  # E · mean_i(f_i·P_i) instead of E · Σ_i: 1/E of the loss
    E = lg.shape[1]
    f = torch.bincount(idx.reshape(-1), minlength=E).float() / idx.numel()
    return E * (f * lg.float().softmax(-1).mean(0)).mean()


def f_first_choice_only(lg, idx):  # counts only each token's first choice (right for k = 1, wrong for k > 1)
    E = lg.shape[1]
    f = torch.bincount(idx[:, 0], minlength=E).float() / idx.shape[0]
    return E * (f * lg.float().softmax(-1).mean(0)).sum()


def p_over_chosen_only(lg, idx):  # P_i averages the probability only where expert i was chosen, zero elsewhere
    E = lg.shape[1]
    f = torch.bincount(idx.reshape(-1), minlength=E).float() / idx.numel()
    p = lg.float().softmax(-1)
    return E * (f * (p * torch.zeros_like(p).scatter(1, idx, 1.0)).mean(0)).sum()


def float64_result(lg, idx):  # computes and returns float64 where the spec asks for a float32 scalar
    E = lg.shape[1]
    f = torch.bincount(idx.reshape(-1), minlength=E).double() / idx.numel()
    return E * (f * lg.double().softmax(-1).mean(0)).sum()


@pytest.mark.parametrize("wrong, says", [
    (mean_over_experts, "a mean over the E experts"), (f_first_choice_only, "T=64, E=8, k=2"),
    (p_over_chosen_only, "T=32, E=4, k=1"), (float64_result, "torch.float64 scalar for torch.float32 logits")])
def test_load_balancing_loss_rejects_more(wrong, says, capsys):
    out = rejects(check_load_balancing_loss, wrong, capsys)
    assert says in out and "✗ case" in out
    assert "upcast to float32 before the softmax (logits.float())" not in out  # that diagnosis only when it is the cause


@pytest.mark.parametrize("wrong, says", [
    (no_factor_e, "multiply Σ f_i·P_i by E"), (f_over_tokens, "not by T"), (returns_float, "not a one-element tensor"),
    (detached_p, "carries no gradient"), (soft_f, "T=32, E=4, k=1"), (grad_through_f, "its gradient is not"),
    (bf16_softmax, "upcast the logits before the softmax"), (in_place_shift, "in place")])
def test_load_balancing_loss_rejects(wrong, says, capsys):
    out = rejects(check_load_balancing_loss, wrong, capsys)
    assert says in out and "✗ case" in out


def test_bf16_case_is_what_catches_the_missing_upcast(capsys):
    out = rejects(check_load_balancing_loss, bf16_softmax, capsys)
    assert "1 of 6" not in out.splitlines()[0] or "bf16 logits" in out
    assert "(bf16 logits (loss computed in float32), T=256, E=8, k=2)" in out


# ----------------------------------------------------------------------------- 4.3 dispatch_splits

def bincount_no_minlength(idx, drop, E, P):  # too short when the last ranks receive nothing
    return torch.bincount(idx[~drop] // (E // P))


def sends_dropped_too(idx, drop, E, P):  # a dropped assignment is sent anyway
    return torch.bincount(idx.flatten() // (E // P), minlength=P)


def round_robin(idx, drop, E, P):  # places expert e on rank e % P instead of contiguous blocks
    return torch.bincount(idx[~drop] % P, minlength=P)


def float_counts(idx, drop, E, P):  # counts via one_hot sums in float: split sizes must be int64
    return F.one_hot(idx[~drop] // (E // P), P).float().sum(0)


def rank_is_e_div_p(idx, drop, E, P):  # divides the expert id by the number of ranks, not by experts per rank
    return torch.bincount(idx[~drop] // P, minlength=P)


def counts_tokens_not_rows(idx, drop, E, P):  # a token whose two experts share a rank is counted once
    out = torch.zeros(P, dtype=torch.long)
    for t in range(idx.shape[0]):
        for r in {int(e) // (E // P) for e, d in zip(idx[t], drop[t]) if not d}:
            out[r] += 1
    return out


def first_choice_rows_only(idx, drop, E, P):  # sends only each token's first choice
    return torch.bincount(idx[:, 0][~drop[:, 0]] // (E // P), minlength=P)


@pytest.mark.parametrize("wrong, case", [(rank_is_e_div_p, "the last rank receives nothing, E=8, P=4"),
                                         (counts_tokens_not_rows, "4 experts on 2 ranks"),
                                         (first_choice_rows_only, "4 experts on 2 ranks")])
def test_dispatch_splits_rejects_more(wrong, case, capsys):
    assert f"({case}" in rejects(check_dispatch_splits, wrong, capsys)


@pytest.mark.parametrize("wrong, case", [(bincount_no_minlength, "the last rank receives nothing"),
                                         (sends_dropped_too, "dropped assignments stay home"),
                                         (round_robin, "4 experts on 2 ranks"), (float_counts, "4 experts on 2 ranks")])
def test_dispatch_splits_rejects(wrong, case, capsys):
    out = rejects(check_dispatch_splits, wrong, capsys)
    assert f"({case}" in out
    if wrong is bincount_no_minlength:
        assert "expected shape (4,), got shape (3,)" in out
    if wrong is float_counts:
        assert "torch.float32" in out


# ----------------------------------------------------------------------------- 4.4 comm_per_step

def ignores_off_rank(lay, **kw):  # always uses the uniform-routing expectation
    return comm_per_step(lay, **{**kw, "off_rank": None})


def first_layer_for_all(lay, **kw):  # reads off_rank[0] as if every layer sent the same
    off = kw.get("off_rank")
    if isinstance(off, list):
        kw = {**kw, "off_rank": [off[0]] * kw["n_layers"]}
    return comm_per_step(lay, **kw)


def no_token_loopback(lay, **kw):  # pp forgets the next-token ids sent back to stage 0
    if lay == "pp":
        P, B = kw["world_size"], kw["batch"]
        return (P - 1) * B * kw["d_model"] * 4, (P - 1) * kw.get("n_micro", 1)
    return comm_per_step(lay, **kw)


def messages_per_rank(lay, **kw):  # ep counts P − 1 messages per all-to-all (one rank's), not P·(P−1)
    nbytes, msgs = comm_per_step(lay, **kw)
    return nbytes, msgs // kw["world_size"] if lay == "ep" else msgs


def no_count_bytes(lay, **kw):  # ep forgets the int64 send counts exchanged before the rows
    nbytes, msgs = comm_per_step(lay, **kw)
    P = kw["world_size"]
    return (nbytes - kw["n_layers"] * P * (P - 1) * 8 if lay == "ep" else nbytes), msgs


@pytest.mark.parametrize("wrong, case", [(ignores_off_rank, "measured routing"), (first_layer_for_all, "measured routing"),
                                         (no_token_loopback, "pp, B=1"), (messages_per_rank, "ep, B=1"),
                                         (no_count_bytes, "ep, B=1")])
def test_comm_per_step_rejects(wrong, case, capsys):
    out = rejects(check_comm_per_step, wrong, capsys)
    assert f"({case}" in out


def _ep_bytes(kw, values_per_row):
    P, L = kw["world_size"], kw["n_layers"]
    off = kw.get("off_rank")
    rows = sum(off) if off is not None else L * kw["batch"] * kw.get("k", 2) * (P - 1) / P
    return L * P * (P - 1) * 8 + rows * values_per_row * 4


def dispatch_only(lay, **kw):  # ep forgets the return trip: rows go out, expert outputs never come back
    return (_ep_bytes(kw, kw["d_model"] + 1), comm_per_step(lay, **kw)[1]) if lay == "ep" else comm_per_step(lay, **kw)


def local_copies_as_messages(lay, **kw):  # ep counts every assignment, the rank's own too, and P messages per rank
    if lay != "ep":
        return comm_per_step(lay, **kw)
    P, L = kw["world_size"], kw["n_layers"]
    rows = L * kw["batch"] * kw.get("k", 2) if kw.get("off_rank") is None else sum(kw["off_rank"]) * P / (P - 1)
    return L * P * (P - 1) * 8 + rows * (2 * kw["d_model"] + 1) * 4, 3 * L * P * P


def two_all_to_alls(lay, **kw):  # ep counts two all-to-alls per layer, as real stacks run, not this code's three
    nbytes, msgs = comm_per_step(lay, **kw)
    return (nbytes, msgs * 2 // 3) if lay == "ep" else (nbytes, msgs)


def rows_without_expert_id(lay, **kw):  # ep sends d_model values out, forgetting the expert-id column
    return (_ep_bytes(kw, 2 * kw["d_model"]), comm_per_step(lay, **kw)[1]) if lay == "ep" else comm_per_step(lay, **kw)


def one_boundary(lay, **kw):  # pp charges the activations once, not at each of the P − 1 stage boundaries
    if lay != "pp":
        return comm_per_step(lay, **kw)
    B = kw["batch"]
    return B * kw["d_model"] * 4 + B * 8, (kw["world_size"] - 1) * kw.get("n_micro", 1) + 1


@pytest.mark.parametrize("wrong, case, says", [
    (dispatch_only, "ep, B=1", "comes back from the expert"),
    (local_copies_as_messages, "ep, B=1", "own share never leaves"),
    (two_all_to_alls, "ep, B=1", "three all-to-alls"), (rows_without_expert_id, "ep, B=1", "expert id"),
    (one_boundary, "pp, B=64, d_model=256, L=8, P=4", "P − 1 = 3 stage boundaries")])
def test_comm_per_step_rejects_more(wrong, case, says, capsys):
    out = rejects(check_comm_per_step, wrong, capsys)
    assert f"({case}" in out and says in out


def test_comm_per_step_off_rank_hint_only_when_off_rank_is_ignored(capsys):
    # the off_rank advice names the cause only for the answer that ignores it
    assert "off_rank was ignored" in rejects(check_comm_per_step, ignores_off_rank, capsys)
    assert "off_rank was ignored" not in rejects(check_comm_per_step, dispatch_only, capsys)


def test_comm_per_step_takes_ep_off_rank_list():
    # the list ep_off_rank returns, one count per layer, gives an exact int
    got = comm_per_step("ep", batch=4, d_model=8, n_layers=3, world_size=2, k=2, off_rank=[1, 0, 3])
    assert got == (3 * 2 * 8 + 4 * (2 * 8 + 1) * 4, 18)


# ----------------------------------------------------------------------------- references, stubs, the `use` switch

def test_references_pass_and_stubs_are_not_attempted(capsys):
    for check, ref in ((check_drop_over_capacity, drop_over_capacity), (check_load_balancing_loss, load_balancing_loss),
                       (check_dispatch_splits, dispatch_splits), (check_comm_per_step, comm_per_step)):
        check(ref)
        assert "pass ✓" in capsys.readouterr().out

    def stub(*a, **kw):
        raise NotImplementedError
    for check in (check_drop_over_capacity, check_load_balancing_loss, check_dispatch_splits, check_comm_per_step):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out


def test_learner_drop_and_balance_run_inside_the_trained_layer(capsys):
    reset_session()
    calls = []

    def my_drop(idx, E, cap):  # a correct learner function that records its calls
        calls.append("drop")
        return drop_over_capacity(idx, E, cap)

    def my_balance(lg, idx):
        calls.append("balance")
        return load_balancing_loss(lg, idx)

    assert use(my_drop, drop_over_capacity) is drop_over_capacity  # not passed yet: the reference
    check_drop_over_capacity(my_drop)
    check_load_balancing_loss(my_balance)
    drop, balance = use(my_drop, drop_over_capacity), use(my_balance, load_balancing_loss)
    assert drop is my_drop and balance is my_balance
    layer = MoELayer(8, 16, 4, 2, capacity_factor=1.0)
    layer.drop_fn = drop
    calls.clear()
    layer(torch.randn(3, 5, 8))
    assert calls == ["drop"]
    balancing_loss_of(torch.nn.Sequential(layer), balance).backward()
    assert calls == ["drop", "balance"] and layer.router.weight.grad is not None
    with pytest.raises(CheckFailed):
        check_drop_over_capacity(never_drops)
    assert use(never_drops, drop_over_capacity) is drop_over_capacity  # a failing one is never used
    reset_session()
