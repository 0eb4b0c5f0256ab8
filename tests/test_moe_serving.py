"""Both distributed layouts against the single-process model, bytes counted at the calls against the
cost model, a failing rank, and the cost model's arithmetic. Clusters are started once per world size."""

import time

import pytest
import torch

from labutils.checks import CheckFailed
from labutils.moe import (
    Cluster,
    Machine,
    StackConfig,
    check_comm_per_step,
    check_dispatch_splits,
    comm_per_step,
    dispatch_splits,
    ep_off_rank,
    experts_touched,
    fit_machine,
    memory_per_chip,
    reference_output,
    run_layout,
    step_latency,
)

CFG = StackConfig(d_model=32, d_ff=48, n_experts=8, k=2, n_layers=4)


@pytest.fixture(scope="module")
def two():
    with Cluster(2) as c:
        yield c


@pytest.fixture(scope="module")
def four():
    with Cluster(4) as c:
        yield c


def _x(B, seed=1):
    return torch.randn(B, CFG.d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cf", [None, 1.0])
@pytest.mark.parametrize("layout", ["ep", "pp", "pps"])
def test_two_ranks_equal_single_process(two, layout, cf):
    cfg = StackConfig(**{**CFG.__dict__, "capacity_factor": cf})
    x = _x(10)
    r = two.run(layout, cfg, x, n_micro=3 if layout != "ep" else None, steps=1, warmup=0, rounds=3)
    ref = reference_output(layout, cfg, x, world_size=2, n_micro=3)
    torch.testing.assert_close(r.output, ref, rtol=0, atol=1e-5)
    if cf is not None:  # the group-by-group reference matters: one group of 10 would route differently
        full = reference_output("pp", cfg, x, world_size=2, n_micro=1)
        assert (full - ref).abs().max() > 1e-4


@pytest.mark.parametrize("layout", ["ep", "pp", "pps"])
def test_four_ranks_equal_single_process(four, layout):
    x = _x(13, seed=2)
    r = four.run(layout, CFG, x, n_micro=5, steps=2, warmup=1)
    torch.testing.assert_close(r.output, reference_output(layout, CFG, x, world_size=4, n_micro=5), rtol=0, atol=1e-5)
    assert len(r.step_s) == 2 and all(t > 0 for t in r.step_s)


@pytest.mark.parametrize("P", [2, 4])
def test_bytes_counted_at_the_calls_equal_the_cost_model(two, four, P):
    cluster = two if P == 2 else four
    x = _x(24, seed=3)
    ep = cluster.run("ep", CFG, x, steps=1, warmup=1)
    off = ep_off_rank(CFG, x, world_size=P)
    want = comm_per_step("ep", batch=24, d_model=CFG.d_model, n_layers=CFG.n_layers, world_size=P, k=CFG.k, off_rank=off)
    assert (ep.total_bytes, ep.total_messages) == want
    assert ep.messages == [3 * CFG.n_layers * (P - 1)] * P
    pp = cluster.run("pp", CFG, x, n_micro=4, steps=1, warmup=1)
    want = comm_per_step("pp", batch=24, d_model=CFG.d_model, n_layers=CFG.n_layers, world_size=P, n_micro=4)
    assert (pp.total_bytes, pp.total_messages) == want
    assert pp.messages == [4] * (P - 1) + [1]
    # steady state, per decode round: every group crosses each boundary once and its ids come back once
    pps = cluster.run("pps", CFG, x, n_micro=4, steps=1, warmup=0, rounds=3)
    assert pps.total_bytes == (P - 1) * 24 * CFG.d_model * 4 + 24 * 8
    assert pps.messages == [4] * P and len(pps.step_s) == 1


def test_one_group_in_steady_state_is_one_step_at_a_time(two):
    # the steady loop adds no serialisation or traffic of its own: with one group it is the isolated step, repeated
    x = _x(8)
    one = two.run("pp", CFG, x, n_micro=1, steps=2, warmup=0)
    st = two.run("pps", CFG, x, n_micro=1, steps=2, warmup=0, rounds=3)
    torch.testing.assert_close(st.output, one.output, rtol=0, atol=1e-6)
    assert (st.total_bytes, st.total_messages) == (one.total_bytes, one.total_messages)
    assert len(st.cpu_s) == 2 and all(c > 0 for c in st.cpu_s + one.cpu_s)  # CPU seconds per rank per round


def test_a_failing_rank_in_the_steady_pipeline_fails_fast():
    with Cluster(2) as c:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="rank 0 failed"):
            c.run("pps", CFG, _x(8), n_micro=2, fail_rank=0)
        assert time.monotonic() - t0 < 10
        assert all(not p.is_alive() for p in c.procs)


def test_bad_inputs_are_refused(two):
    with pytest.raises(ValueError, match="n_experts"):
        two.run("ep", StackConfig(d_model=8, d_ff=8, n_experts=3, k=1, n_layers=2), torch.randn(4, 8))
    with pytest.raises(ValueError, match="n_layers"):
        two.run("pp", StackConfig(d_model=8, d_ff=8, n_experts=4, k=1, n_layers=3), torch.randn(4, 8))
    with pytest.raises(ValueError, match="layout"):
        two.run("tp", CFG, _x(4))
    with pytest.raises(ValueError, match="k=5"):
        StackConfig(n_experts=4, k=5)
    with pytest.raises(ValueError):
        Cluster(1)


def test_a_failing_rank_fails_fast_and_leaves_no_process(two):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1 failed: RuntimeError: injected failure"):
        two.run("ep", CFG, _x(8), fail_rank=1)
    assert time.monotonic() - t0 < 10  # not the 20 s gloo timeout: the caller stops the others
    assert two.closed and all(not p.is_alive() and p.exitcode is not None for p in two.procs)
    with pytest.raises(RuntimeError, match="closed"):
        two.run("pp", CFG, _x(8))


def test_run_layout_one_shot_cleans_up():
    import multiprocessing
    before = set(multiprocessing.active_children())
    r = run_layout("pp", StackConfig(d_model=8, d_ff=8, n_experts=2, k=1, n_layers=2), torch.randn(3, 8), world_size=2, steps=1)
    assert r.output.shape == (3, 8)
    assert not set(multiprocessing.active_children()) - before


# ----------------------------------------------------------------------------- cost model

def test_dispatch_splits_and_experts_touched():
    idx = torch.tensor([[0, 3], [1, 2], [3, 2]])
    assert dispatch_splits(idx, torch.zeros(3, 2, dtype=torch.bool), 4, 2).tolist() == [2, 4]
    g = torch.Generator().manual_seed(0)
    E, k, B = 16, 2, 10
    hits = [len(set(torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(B)]).flatten().tolist())) for _ in range(2000)]
    assert sum(hits) / len(hits) == pytest.approx(experts_touched(E, k, B), rel=0.02)


def test_latency_model_limits_and_fit_recovers_parameters():
    shape = dict(d_model=256, d_ff=512, n_experts=8, k=2, n_layers=4)
    m = Machine("toy", 4e10, 8e9, 2e9, 5e-5, expert_s=4e-5)
    # pipelining never shortens one token: at B=1, pp's compute path is the whole model, like ep's
    one = step_latency("pp", m, batch=1, world_size=2, **shape)
    assert one["compute_s"] >= 4 * 2 * 4e-5  # 4 layers, 2 experts each
    pts = [(lay, B, min(B, 2) if lay == "pp" else 1, 2, step_latency(lay, m, batch=B, n_micro=min(B, 2) if lay == "pp" else 1,
                                                                      world_size=2, **shape)["total_s"])
           for lay in ("ep", "pp") for B in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    fit = fit_machine(pts, **shape)
    for lay, B, nm, P, s in pts:
        assert step_latency(lay, fit, batch=B, n_micro=nm, world_size=P, **shape)["total_s"] == pytest.approx(s, rel=0.02)


def test_memory_per_chip():
    assert memory_per_chip("ep", dense_params=10, expert_params=80, world_size=8, bytes_per_param=2) == 2 * (10 + 10)
    assert memory_per_chip("pp", dense_params=10, expert_params=80, world_size=8, bytes_per_param=2) == 2 * 90 / 8
    with pytest.raises(ValueError):
        step_latency("ep", Machine("x", 1, 1, 1, 1), batch=1, d_model=8, d_ff=8, n_experts=3, k=1, n_layers=2, world_size=2)


def test_cost_checkers():
    check_dispatch_splits(dispatch_splits)
    check_comm_per_step(comm_per_step)
    with pytest.raises(CheckFailed):  # forgets the returning token ids
        check_comm_per_step(lambda lay, **kw: comm_per_step(lay, **kw) if lay == "ep" else
                            ((kw["world_size"] - 1) * kw["batch"] * kw["d_model"] * 4, (kw["world_size"] - 1) * kw["n_micro"]))
    with pytest.raises(CheckFailed):  # sends dropped assignments too
        check_dispatch_splits(lambda idx, drop, E, P: torch.bincount(idx.flatten() // (E // P), minlength=P))


def test_reference_machines_two_all_to_alls_fp8_dispatch_and_pp_sums_stages():
    # DeepSeek-V3-like: k = 8, d_model 7168, fp8 dispatch + bf16 combine, two all-to-alls ≈ 172 KB per token per layer
    m = Machine("bytes", 1e30, 1e30, 1.0, 1e-6, a2a_per_layer=2, dispatch_bytes=1)
    P, B, L = 256, 256, 3
    r = step_latency("ep", m, batch=B, d_model=7168, d_ff=8, n_experts=256, k=8, n_layers=L, world_size=P, act_bytes=2)
    per_token_layer = r["bytes_s"] / L / (B / P)  # β = 1 B/s: seconds are bytes per rank
    assert per_token_layer == pytest.approx(8 * (P - 1) / P * (7168 * 3 + 1))
    assert 170e3 < per_token_layer < 173e3
    assert r["alpha_s"] == pytest.approx(L * 2 * (P - 1) * 1e-6)
    assert r["comm_s"] == pytest.approx(r["alpha_s"] + r["bytes_s"])
    # one micro-batch: stages run one after another, so compute is the sum of the stages (L layers), not P·ceil(L/P)
    shape = dict(d_model=64, d_ff=64, n_experts=8, k=2, world_size=2)
    toy = Machine("toy", 4e10, 8e9, 2e9, 5e-5, expert_s=4e-5)
    c4, c5 = (step_latency("pp", toy, batch=1, n_layers=L, **shape)["compute_s"] for L in (4, 5))
    assert c5 == pytest.approx(c4 * 5 / 4)


def test_reference_machines_come_from_the_one_chip_table():
    from labutils import hardware as hw
    from labutils.moe import H100_INFINIBAND, H100_NVLINK, TPU_V5P_ICI

    for m, chip, link in ((H100_NVLINK, hw.H100_SXM, hw.NVLINK_H100), (H100_INFINIBAND, hw.H100_SXM, hw.INFINIBAND),
                          (TPU_V5P_ICI, hw.TPU_V5P, hw.ICI_V5P)):
        assert (m.flops, m.mem_bw, m.hbm_bytes) == (chip.bf16_flops, chip.hbm_bandwidth, chip.hbm_bytes)
        assert (m.link_bw, m.alpha_s) == (link.bandwidth, link.alpha_s)
    assert all(c.source and l.source for c in hw.CHIPS.values() for l in hw.LINKS.values())  # every number is cited


# ----------------------------------------------------------------------------- torchrun entry point

@pytest.mark.parametrize("layout", ["ep", "pp", "pps"])
def test_torchrun_two_ranks_on_cpu_equal_single_process(layout, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU, even on a GPU machine
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "labutils.moe.serving", "--layout", layout,
           "--batch", "6", "--d-model", "32", "--d-ff", "48", "--steps", "2", "--warmup", "1", "--rounds", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 ranks (gloo)" in out.stdout and ": equal" in out.stdout, out.stdout
    total = next(line for line in out.stdout.splitlines() if line.startswith("total"))
    nbytes, msgs = (int(v.replace(",", "")) for v in total.split()[1:])
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    cfg = StackConfig(d_model=32, d_ff=48, n_experts=8, k=2, n_layers=4)
    if layout == "ep":
        assert (nbytes, msgs) == comm_per_step("ep", batch=6, d_model=32, n_layers=4, world_size=2, k=2,
                                               off_rank=ep_off_rank(cfg, x, world_size=2))
    else:
        assert nbytes == 6 * 32 * 4 + 6 * 8
