"""MoE layer: routing and capacity on hand-built cases, the balancing loss, the layer vs a per-token loop."""

import math

import pytest
import torch

from labutils.checks import CheckFailed
from labutils.moe import (
    MoELayer,
    balancing_loss_of,
    check_drop_over_capacity,
    check_load_balancing_loss,
    drop_over_capacity,
    expert_capacity,
    load_balancing_loss,
    route_top_k,
)


def test_route_top_k_orders_choices_and_weights():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 2.5]])
    r = route_top_k(logits, 2)
    assert r.expert_index.tolist() == [[1, 2], [0, 3]]
    p = logits.softmax(-1)
    top = torch.stack([p[0, [1, 2]], p[1, [0, 3]]])
    torch.testing.assert_close(r.weights, top / top.sum(-1, keepdim=True))
    assert not r.dropped.any() and r.capacity is None
    torch.testing.assert_close(route_top_k(logits, 2, normalize=False).weights, top)


def test_k1_keeps_raw_probability_and_router_gradient():
    logits = torch.randn(5, 3, requires_grad=True)
    r = route_top_k(logits, 1)
    torch.testing.assert_close(r.weights[:, 0], logits.softmax(-1).max(-1).values)
    r.weights.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_capacity_fills_first_choices_before_second_choices():
    # 4 tokens, 2 experts, k=2, capacity factor 0.5 -> ceil(0.5·4·2/2) = 2 slots per expert
    logits = torch.tensor([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [1.0, 2.0]])
    r = route_top_k(logits, 2, capacity_factor=0.5)
    assert r.capacity == 2
    # expert 0 first choices: tokens 0, 1, 2 -> token 2 dropped; expert 1 first choice: token 3;
    # then second choices in token order: expert 1 takes token 0 (slot 2 of 2), drops 1 and 2; expert 0 full for 3.
    assert r.dropped.tolist() == [[False, False], [False, True], [True, True], [False, True]]
    assert r.expert_index.tolist() == [[0, 1], [0, 1], [0, 1], [1, 0]]  # dropped keep their index


def test_capacity_formula_and_drop_count():
    assert expert_capacity(10, 4, 2, 1.25) == math.ceil(1.25 * 10 * 2 / 4)
    idx = torch.zeros(7, 1, dtype=torch.long)
    assert drop_over_capacity(idx, 3, 3).sum() == 4


@pytest.mark.parametrize("bad", [dict(k=5), dict(k=0), dict(k=2, capacity_factor=0), dict(k=2, capacity_factor=-1.0)])
def test_route_top_k_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        route_top_k(torch.randn(3, 4), **bad)


def test_layer_rejects_k_above_experts():
    with pytest.raises(ValueError, match="k=5"):
        MoELayer(8, 16, 4, 5)


def test_balancing_loss_uniform_is_one_and_matches_direct_formula():
    idx = torch.arange(12).view(6, 2) % 4
    assert float(load_balancing_loss(torch.zeros(6, 4), idx)) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 5, generator=g, dtype=torch.float64)
    idx = logits.topk(2, -1).indices
    p = logits.softmax(-1)
    direct = 0.0
    for i in range(5):
        f_i = sum(int(e == i) for row in idx.tolist() for e in row) / 40
        direct += f_i * float(p[:, i].mean())
    assert float(load_balancing_loss(logits, idx)) == pytest.approx(5 * direct, rel=1e-12)


@pytest.mark.parametrize("k,cf", [(1, None), (2, None), (2, 1.0), (3, 0.75)])
def test_layer_equals_per_token_loop(k, cf):
    torch.manual_seed(0)
    layer = MoELayer(16, 24, n_experts=6, k=k, capacity_factor=cf).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    out = layer(x)
    flat = x.reshape(-1, 16)
    r = route_top_k(flat @ layer.router.weight.t(), k, capacity_factor=cf)
    ref = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(k):
            if not r.dropped[t, j]:
                e = int(r.expert_index[t, j])
                h = torch.nn.functional.gelu(flat[t] @ layer.w_up[e] + layer.b_up[e])
                ref[t] += r.weights[t, j] * (h @ layer.w_down[e] + layer.b_down[e])
    torch.testing.assert_close(out.reshape(-1, 16), ref, rtol=1e-12, atol=1e-12)
    if cf is not None:
        assert r.dropped.any()  # the capacity cases really drop something


def test_layer_trains_inside_tinygpt_with_balancing_loss():
    from labutils.model import GPTConfig, TinyGPT
    cfg = GPTConfig(vocab_size=16, context_length=8, d_model=16, n_layers=2, n_heads=2)
    torch.manual_seed(0)
    model = TinyGPT(cfg, mlp_factory=lambda c: MoELayer(c.d_model, c.d_model, 4, 2))
    logits = model(torch.randint(0, 16, (2, 8)))
    aux = balancing_loss_of(model)
    (logits.logsumexp(-1).mean() + 0.01 * aux).backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0


def test_checkers_accept_reference_and_reject_wrong(capsys):
    check_drop_over_capacity(drop_over_capacity)
    check_load_balancing_loss(load_balancing_loss)
    with pytest.raises(CheckFailed):
        check_drop_over_capacity(lambda idx, E, cap: torch.zeros_like(idx, dtype=torch.bool))
    with pytest.raises(CheckFailed):  # forgets the factor E
        check_load_balancing_loss(lambda lg, idx: load_balancing_loss(lg, idx) / lg.shape[1])
    with pytest.raises(CheckFailed):  # right value, no gradient
        check_load_balancing_loss(lambda lg, idx: load_balancing_loss(lg.detach(), idx))

    def grad_through_f(lg, idx):  # right value, but a gradient that also flows through a soft f
        E = lg.shape[1]
        f_hard = torch.bincount(idx.reshape(-1), minlength=E).float() / idx.numel()
        p = lg.softmax(-1)
        f = f_hard + p.mean(0) - p.mean(0).detach()
        return E * (f * p.mean(0)).sum()
    with pytest.raises(CheckFailed):
        check_load_balancing_loss(grad_through_f)

    def stub(*a):
        raise NotImplementedError
    check_drop_over_capacity(stub)
    assert "not attempted" in capsys.readouterr().out
