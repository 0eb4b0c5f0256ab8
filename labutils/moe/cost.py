"""Lab 04: what a decode step costs under each layout — bytes, messages, an α–β + roofline latency
model, memory per chip — on reference machines built from the core's chip and link table.

Communication: every rank sends its messages one after another, so an all-to-all over P ranks costs
(P − 1)·α + bytes ÷ β on each rank (α per peer message, β one way per chip). Compute per layer on one rank: the roofline
max(FLOPs ÷ peak, weight and KV bytes touched ÷ memory bandwidth) plus a fixed overhead (framework
and kernel launches; 0 for the reference chips). At batch B only ≈ E·(1 − (1 − k/E)^B) of E
experts are read (the expected number of distinct experts B tokens hit, each choosing k uniformly); under expert
parallelism the step waits for the rank that reads the most of them (``imbalance.busiest_experts``).
``decode_rate`` turns a step into per-token latency and throughput, including a pipeline in steady state.

    >>> comm_per_step("pp", batch=64, d_model=256, n_layers=4, world_size=2, n_micro=2)
    (66048, 3)
    >>> f"{step_latency('ep', H100_NVLINK, batch=64, world_size=8, **DEEPSEEK_LIKE)['total_s'] * 1e3:.1f} ms"
    '27.9 ms'

Left out on purpose: link contention and topology (every message sees the same α and β), overlap
of communication with compute, attention FLOPs, and the cost of the all-to-all's own scheduling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labutils.hardware import H100_SXM, ICI_V5P, INFINIBAND, NVLINK_H100, TPU_V5P, Chip, Link
from labutils.moe.imbalance import busiest_experts

COUNT_BYTES = 8  # send counts and token ids travel as int64


@dataclass(frozen=True)
class Machine:
    """One chip and its link. Rates in FLOP/s and B/s; link_bw one way per chip; alpha_s per message."""

    name: str
    flops: float
    mem_bw: float
    link_bw: float
    alpha_s: float
    hbm_bytes: float = float("inf")
    expert_s: float = 0.0  # fixed overhead per expert call (the Python expert loop on CPU; 0 on the reference chips)
    a2a_per_layer: int = 3  # all-to-alls per MoE layer: 3 in this lab's gloo code (counts, rows, outputs), 2 on real stacks
    dispatch_bytes: float | None = None  # bytes per dispatched value (None: the activation bytes; 1 for fp8 dispatch)


def machine(name: str, chip: Chip, link: Link, **kw) -> Machine:
    """A reference Machine from the core's chip and link tables (``labutils.hardware``)."""
    return Machine(name, chip.bf16_flops, chip.hbm_bandwidth, link.bandwidth, link.alpha_s, chip.hbm_bytes, **kw)


# Real stacks run two all-to-alls per MoE layer with fp8 dispatch and bf16 combine (DeepSeek-V3, arXiv 2412.19437).
_REAL = dict(a2a_per_layer=2, dispatch_bytes=1)
H100_NVLINK = machine("H100s in one NVLink domain (NVL72-like)", H100_SXM, NVLINK_H100, **_REAL)
H100_INFINIBAND = machine("H100 + InfiniBand", H100_SXM, INFINIBAND, **_REAL)
TPU_V5P_ICI = machine("TPU v5p + ICI", TPU_V5P, ICI_V5P, **_REAL)
REFERENCE_MACHINES = (H100_NVLINK, H100_INFINIBAND, TPU_V5P_ICI)
# A DeepSeek-V3-sized MoE stack (arXiv 2412.19437): d_model 7168, 256 routed experts, top-8 (+1 shared
# treated as routed, k = 9), 58 MoE layers; d_ff 2048 per expert (3 matrices, SwiGLU) matches its
# 671B total / 37B active. Dense part per layer taken as 4·d_model² (attention projections, MHA-sized).
DEEPSEEK_LIKE = dict(d_model=7168, d_ff=3 * 2048 // 2, n_experts=256, k=9, n_layers=58,
                     dense_params=4 * 7168 ** 2, bytes_per_param=1, act_bytes=2)  # fp8 weights, bf16 activations


# ----------------------------------------------------------------------------- counting

def dispatch_splits(expert_index: torch.Tensor, dropped: torch.Tensor, n_experts: int, world_size: int) -> torch.Tensor:
    """(P,) long: live assignments this rank sends to each rank (expert e lives on rank e // (E/P))."""
    if n_experts % world_size:
        raise ValueError(f"world_size ({world_size}) must divide n_experts ({n_experts})")
    dest = expert_index[~dropped] // (n_experts // world_size)
    return torch.bincount(dest, minlength=world_size)


def comm_per_step(layout: str, *, batch: int, d_model: int, n_layers: int, world_size: int, k: int = 2,
                  n_micro: int = 1, bytes_per_elem: int = 4, off_rank=None) -> tuple[int, int]:
    """(bytes, messages) that all ranks together send in one decode step of this lab's code.

    ep, per layer: three all-to-alls, each one message from every rank to each of the P−1 others —
    send counts (int64), token rows (d_model + 1 values: the row and its expert id), expert outputs
    (d_model values). Only assignments to another rank's experts leave a rank: ``off_rank`` of them
    (a number per layer or a list; default the uniform-routing expectation batch·k·(P−1)/P).
    pp: every stage boundary carries each of n_micro micro-batches once (batch·d_model values in
    all), and the last stage returns batch int64 token ids to stage 0 (one message).
    """
    P = world_size
    if layout == "ep":
        offs = off_rank if isinstance(off_rank, (list, tuple)) else [batch * k * (P - 1) / P if off_rank is None else off_rank] * n_layers
        rows = sum(offs)
        nbytes = n_layers * P * (P - 1) * COUNT_BYTES + rows * (2 * d_model + 1) * bytes_per_elem
        return (int(round(nbytes)) if off_rank is not None else nbytes), 3 * n_layers * P * (P - 1)
    if layout == "pp":
        return (P - 1) * batch * d_model * bytes_per_elem + batch * COUNT_BYTES, (P - 1) * n_micro + 1
    raise ValueError(f"layout must be 'ep' or 'pp', got {layout!r}")


def experts_touched(n_experts: float, k: int, tokens: float) -> float:
    """Expected distinct experts hit by ``tokens`` tokens choosing k of n_experts: E·(1 − (1 − k/E)^tokens)."""
    return n_experts * (1.0 - (1.0 - k / n_experts) ** tokens)


# ----------------------------------------------------------------------------- latency

def _layer_compute(m: Machine, tokens, assignments, touched, *, d_model, d_ff, dense_params, bpp, kv_bytes):
    flops = 2 * tokens * dense_params + 2 * assignments * 2 * d_model * d_ff
    nbytes = (dense_params + touched * 2 * d_model * d_ff) * bpp + tokens * kv_bytes
    return max(flops / m.flops, nbytes / m.mem_bw) + touched * m.expert_s


def step_latency(layout: str, m: Machine, *, batch: int, d_model: int, d_ff: int, n_experts: int, k: int,
                 n_layers: int, world_size: int, n_micro: int = 1, dense_params: int | None = None,
                 bytes_per_param: int = 4, act_bytes: int = 4, kv_bytes: float = 0.0, tokens_per_seq: int = 1,
                 busiest: bool = True) -> dict:
    """Modelled latency (s) of one step: decode (tokens_per_seq = 1) or prefill (the prompt length).

    A pipeline with n_layers not divisible by world_size is paced by its deepest stage (ceil(L/P) layers).
    dense_params: replicated non-expert weights per layer (default d_model² + d_model·E, the lab's
    CPU stack); kv_bytes: KV-cache bytes read per token per layer. Returns compute_s, comm_s, total_s,
    and comm_s split into alpha_s (message latency) and bytes_s (bytes ÷ β) on the critical path.
    ep, per layer: the busiest rank's distinct experts are read (``busiest=False``: the mean, E·q/P);
    m.a2a_per_layer all-to-alls, each (P − 1)·α; rows go out at m.dispatch_bytes per
    value (d_model + 1 values: the row and its expert id) and come back at act_bytes. A third
    all-to-all (m.a2a_per_layer == 3) carries the int64 send counts, as this lab's gloo code does.
    """
    P, L, E = world_size, n_layers, n_experts
    if layout == "ep" and E % P:
        raise ValueError(f"world_size {P} must divide n_experts {E}")
    if layout == "pp" and P > L:
        raise ValueError(f"a pipeline of {P} stages needs at least {P} layers, got {L}")
    dense = d_model * d_model + d_model * E if dense_params is None else dense_params
    kw = dict(d_model=d_model, d_ff=d_ff, dense_params=dense, bpp=bytes_per_param, kv_bytes=kv_bytes)
    T = batch * tokens_per_seq  # tokens in the step
    beta = m.link_bw
    if layout == "ep":
        t = T / P
        touched = busiest_experts(E, k, T, P) if busiest else experts_touched(E, k, T) / P
        compute = L * _layer_compute(m, t, T * k / P, touched, **kw)  # the step waits for the busiest rank
        rows = t * k * (P - 1) / P
        disp = act_bytes if m.dispatch_bytes is None else m.dispatch_bytes
        counts = (P - 1) * COUNT_BYTES if m.a2a_per_layer == 3 else 0
        alpha = L * m.a2a_per_layer * (P - 1) * m.alpha_s
        nbytes = L * (counts + rows * ((d_model + 1) * disp + d_model * act_bytes)) / beta
        return dict(compute_s=compute, comm_s=alpha + nbytes, total_s=compute + alpha + nbytes, alpha_s=alpha, bytes_s=nbytes)
    if layout == "pp":
        b = T / n_micro
        layer = _layer_compute(m, b, b * k, experts_touched(E, k, b), **kw)
        stage = math.ceil(L / P) * layer  # the deepest stage paces the micro-batches behind the first
        hop = m.alpha_s + b * d_model * act_bytes / beta
        loop = m.alpha_s + batch * COUNT_BYTES / beta
        # the first micro-batch passes every stage in turn (L layers), the others follow one stage apart
        total = L * layer + (P - 1) * hop + (n_micro - 1) * max(stage, hop) + loop
        compute = L * layer + (n_micro - 1) * stage
        alpha = min(P * m.alpha_s, total - compute)
        return dict(compute_s=compute, comm_s=total - compute, total_s=total, alpha_s=alpha, bytes_s=total - compute - alpha)
    raise ValueError(f"layout must be 'ep' or 'pp', got {layout!r}")


def decode_rate(layout: str, m: Machine, *, batch: int, n_micro: int = 1, steady: bool = False, **shape) -> dict:
    """Per-token latency (s) seen by one request and throughput (tokens/s) of a decode loop.

    ep, and pp with ``steady=False``: one step at a time — latency = step_latency, throughput = batch ÷ it.
    pp with ``steady=True``: n_micro groups of batch/n_micro requests are in flight across steps (GPipe
    without a flush): while one group is in stage 2, the next is in stage 1. A group's next token needs
    its previous one, so its period is the longer of its own trip round the ring (every layer, P − 1 hops
    and the token loop-back) and the busiest stage's work for all groups, n_micro·max(t_stage, t_hop).
    With n_micro ≥ P there is no bubble. ``shape`` holds step_latency's model keywords and world_size.

    >>> toy = Machine("toy", 1.0, 1e30, 1e30, 0.0)   # compute grows with tokens; free memory and links
    >>> kw = dict(batch=2, d_model=4, d_ff=4, n_experts=2, k=1, n_layers=2, world_size=2)
    >>> decode_rate("pp", toy, n_micro=2, steady=True, **kw)["tokens_per_s"] / decode_rate("pp", toy, **kw)["tokens_per_s"]
    2.0
    """
    if not (isinstance(n_micro, int) and 1 <= n_micro <= batch):
        raise ValueError(f"n_micro must be an int in [1, batch={batch}], got {n_micro!r}")
    if not steady or layout == "ep":
        t = step_latency(layout, m, batch=batch, n_micro=n_micro, **shape)["total_s"]
        return dict(latency_s=t, tokens_per_s=batch / t)
    if layout != "pp":
        raise ValueError(f"layout must be 'ep' or 'pp', got {layout!r}")
    P, L = shape["world_size"], shape["n_layers"]
    b = batch / n_micro  # requests per group
    trip = step_latency("pp", m, batch=b, n_micro=1, **shape)["total_s"]  # one group's ring, alone
    one = step_latency("pp", m, batch=b, n_micro=1, **{**shape, "n_layers": P, "world_size": P})  # one layer per stage
    layer = one["compute_s"] / P
    stage = math.ceil(L / P) * layer
    hop = m.alpha_s + b * shape["d_model"] * shape.get("act_bytes", 4) / m.link_bw
    period = max(trip, n_micro * max(stage, hop))
    return dict(latency_s=period, tokens_per_s=batch / period)


def fit_machine(points, *, name="this CPU", **shape) -> Machine:
    """Fit flops, mem_bw, expert_s, alpha_s, link_bw to measured (layout, batch, n_micro, P, seconds)
    points by least squares on log latency; ``shape`` holds the model's d_model, d_ff, n_experts, k, n_layers."""
    import numpy as np
    from scipy.optimize import least_squares

    x0 = np.log([3e10, 1e10, 1e-4, 1e-4, 1e9])

    def machine(z):
        f, w, es, a, bw = np.exp(z)
        return Machine(name, f, w, bw, a, expert_s=es)

    def resid(z):
        mm = machine(z)
        return [math.log(step_latency(lay, mm, batch=B, n_micro=nm, world_size=P, **shape)["total_s"] / s)
                for lay, B, nm, P, s in points]

    return machine(least_squares(resid, x0, bounds=(np.log(1e-12), np.log(1e16))).x)


def memory_per_chip(layout: str, *, dense_params: float, expert_params: float, world_size: int,
                    bytes_per_param: float = 2) -> float:
    """Weight bytes on one chip. ep: every non-expert weight replicated + 1/P of the experts;
    pp: 1/P of everything (whole layers). Parameters are model totals."""
    if layout == "ep":
        return (dense_params + expert_params / world_size) * bytes_per_param
    if layout == "pp":
        return (dense_params + expert_params) / world_size * bytes_per_param
    raise ValueError(f"layout must be 'ep' or 'pp', got {layout!r}")


def crossover_batch(m: Machine, *, batches=tuple(2 ** i for i in range(13)), n_micro: int = 1, **kw):
    """Smallest batch in ``batches`` at which ep is faster than pp with ``n_micro`` micro-batches (None if never)."""
    for B in batches:
        if step_latency("ep", m, batch=B, **kw)["total_s"] < step_latency("pp", m, batch=B, n_micro=min(B, n_micro), **kw)["total_s"]:
            return B
    return None
