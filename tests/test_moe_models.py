"""Lab 04's v2 models against closed forms and simulations: the steady-state pipeline, the busiest rank,
the α fit to published rows, hybrid layouts and the memory check."""

import numpy as np
import pytest

from labutils.moe import (
    DEEPEP_RDMA_2025_02,
    DEEPSEEK_LIKE,
    H100_INFINIBAND,
    H100_NVLINK,
    Machine,
    a2a_terms,
    alpha_profile,
    alpha_range,
    busiest_experts,
    decode_rate,
    experts_touched,
    fit_alpha_beta,
    simulate_busiest,
    step_latency,
)
from labutils.moe.layouts import fits, hybrid_rate

FLOP_BOUND = Machine("flop-bound", 1e9, 1e30, 1e30, 0.0)  # compute grows with tokens; memory and links free
SHAPE = dict(d_model=16, d_ff=16, n_experts=8, k=2, n_layers=8, world_size=4)


def test_steady_state_pipeline_gains_p_times_throughput_when_compute_bound():
    one = decode_rate("pp", FLOP_BOUND, batch=64, **SHAPE)
    steady = decode_rate("pp", FLOP_BOUND, batch=64, n_micro=4, steady=True, **SHAPE)
    assert steady["tokens_per_s"] == pytest.approx(4 * one["tokens_per_s"])
    # fewer groups than stages leave a bubble: the period is the trip of a bigger group
    two = decode_rate("pp", FLOP_BOUND, batch=64, n_micro=2, steady=True, **SHAPE)
    assert two["tokens_per_s"] == pytest.approx(2 * one["tokens_per_s"])
    ep = decode_rate("ep", FLOP_BOUND, batch=64, **SHAPE)
    assert ep["latency_s"] == step_latency("ep", FLOP_BOUND, batch=64, **SHAPE)["total_s"]
    with pytest.raises(ValueError, match="n_micro"):
        decode_rate("pp", FLOP_BOUND, batch=2, n_micro=4, steady=True, **SHAPE)


def test_busiest_rank_closed_form_matches_simulation_and_limits():
    for B in (1, 4, 16):
        model = busiest_experts(256, 9, B, 16)
        sim, mean = simulate_busiest(256, 9, B, 16, trials=400, seed=1)
        assert sim == pytest.approx(model, rel=0.08)
        assert mean == pytest.approx(experts_touched(256, 9, B) / 16, rel=0.03)
        assert model > mean
    assert busiest_experts(8, 2, 10_000, 2) == pytest.approx(4.0)  # every expert hit: E/P on every rank
    assert simulate_busiest(256, 9, 1, 16, trials=400, copies=2)[0] < simulate_busiest(256, 9, 1, 16, trials=400)[0]
    with pytest.raises(ValueError):
        busiest_experts(10, 2, 1, 4)


def test_ep_step_waits_for_the_busiest_rank():
    kw = dict(DEEPSEEK_LIKE, batch=1, world_size=16)
    slow, mean = (step_latency("ep", H100_NVLINK, busiest=b, **kw)["compute_s"] for b in (True, False))
    d, f, E, k, L = (DEEPSEEK_LIKE[n] for n in ("d_model", "d_ff", "n_experts", "k", "n_layers"))
    extra = (busiest_experts(E, k, 1, 16) - experts_touched(E, k, 1) / 16) * 2 * d * f * L / H100_NVLINK.mem_bw
    assert slow - mean == pytest.approx(extra)  # memory-bound at B = 1: the extra experts the busiest rank reads


def test_alpha_fit_recovers_synthetic_constants_and_published_rows_bound_it_loosely():
    alpha, beta = 0.4e-6, 60e9
    rows = [(P, *(0.5e6 * (alpha * m + b / beta),) * 2) for P in (8, 16, 64, 256) for m, b in [a2a_terms(P)]]
    a, bt, err = fit_alpha_beta(rows)
    assert a == pytest.approx(alpha, rel=1e-6) and bt == pytest.approx(beta, rel=1e-6) and abs(err).max() < 1e-9
    prof = alpha_profile(rows, [0.1e-6, alpha, 1e-6])
    assert prof.argmin() == 1 and prof[1] < 1e-9
    lo, hi = alpha_range(DEEPEP_RDMA_2025_02)
    assert hi > 10 * lo > 0
    a, _, err = fit_alpha_beta(DEEPEP_RDMA_2025_02)
    assert a < 0.1e-6 and abs(err).max() < 0.05  # fits well, with almost no α


def test_hybrid_layout_limits():
    kw = dict(DEEPSEEK_LIKE, batch=8, world_size=16)
    ep = decode_rate("ep", H100_NVLINK, **kw)
    assert hybrid_rate(H100_NVLINK, H100_INFINIBAND, stages=1, **kw)["latency_s"] == pytest.approx(ep["latency_s"])
    shape = dict(SHAPE, world_size=4)
    pp = decode_rate("pp", FLOP_BOUND, batch=8, **shape)["latency_s"]
    assert hybrid_rate(FLOP_BOUND, FLOP_BOUND, stages=4, batch=8, **shape)["latency_s"] == pytest.approx(pp)
    with pytest.raises(ValueError):
        hybrid_rate(H100_NVLINK, H100_INFINIBAND, stages=3, **kw)


def test_memory_check_adds_the_kv_share():
    ok, gb = fits(70e9, batch=100, context=1000, kv_bytes_per_token=1.6e5, world_size=16, hbm_bytes=80e9)
    assert (ok, gb) == (True, 71.0)
    assert not fits(70e9, batch=2000, context=1000, kv_bytes_per_token=1.6e5, world_size=16, hbm_bytes=80e9)[0]
    assert np.isclose(fits(0, batch=16, context=1, kv_bytes_per_token=1, world_size=16, hbm_bytes=1)[1], 0.0)
