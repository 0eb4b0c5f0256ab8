"""Lab 04: hybrid layouts used in production — expert parallel inside a fast domain, a pipeline across
domains — and the memory check per chip (weights + KV cache ≤ HBM).

``hybrid_rate`` cuts the layers into ``stages`` pipeline stages, one per domain (an NVLink node or rack);
inside a stage the chips run expert parallel over the fast link (attention data parallel, experts
sharded), and one hop over the slow link joins consecutive stages. With stages = 1 it is plain EP.

    >>> from labutils.moe.cost import H100_INFINIBAND, H100_NVLINK, DEEPSEEK_LIKE
    >>> r = hybrid_rate(H100_NVLINK, H100_INFINIBAND, stages=2, batch=8, world_size=16, **DEEPSEEK_LIKE)
    >>> 0 < r["latency_s"] < 1, round(r["tokens_per_s"] * r["latency_s"])
    (True, 8)

Left out on purpose: tensor-parallel attention (DeepSeek-V3 decodes with attention TP4 + DP80 and MoE
EP320, arXiv 2412.19437 §3.4: TP cuts attention weights per chip and adds an all-reduce per layer) and
the overlap of communication with compute.
"""

from __future__ import annotations

import math

from labutils.moe.cost import COUNT_BYTES, Machine, step_latency


def hybrid_rate(fast: Machine, slow: Machine, *, stages: int, batch: int, world_size: int, n_layers: int,
                n_micro: int = 1, steady: bool = False, act_bytes: int = 4, **shape) -> dict:
    """Per-token latency (s) and throughput (tokens/s) of PP over ``stages`` domains × EP inside each.

    Isolated step: the stages run in turn, each an EP step over its layers on world_size/stages chips,
    plus stages − 1 hops and the token loop-back over the slow link. ``steady``: n_micro groups in flight,
    period = max(one group's trip, n_micro · max(stage time, hop)), as in ``decode_rate``.
    """
    if world_size % stages or n_layers < stages:
        raise ValueError(f"stages ({stages}) must divide world_size ({world_size}) and not exceed n_layers ({n_layers})")
    if not (isinstance(n_micro, int) and 1 <= n_micro <= batch):
        raise ValueError(f"n_micro must be an int in [1, batch={batch}], got {n_micro!r}")
    b = batch / n_micro
    per_stage = world_size // stages
    layers = math.ceil(n_layers / stages)

    def stage_time(tokens):
        if per_stage == 1:
            return step_latency("pp", fast, batch=tokens, n_layers=layers, world_size=1, act_bytes=act_bytes,
                                **shape)["compute_s"]
        return step_latency("ep", fast, batch=tokens, n_layers=layers, world_size=per_stage, act_bytes=act_bytes,
                            **shape)["total_s"]

    def hop(tokens):
        return slow.alpha_s + tokens * shape["d_model"] * act_bytes / slow.link_bw

    def trip(tokens):
        loop = slow.alpha_s + tokens * COUNT_BYTES / slow.link_bw if stages > 1 else 0.0
        return stages * stage_time(tokens) + (stages - 1) * hop(tokens) + loop

    if not steady:
        t = trip(batch) if n_micro == 1 else trip(b) + (n_micro - 1) * max(stage_time(b), hop(b))
    else:
        t = max(trip(b), n_micro * max(stage_time(b), hop(b)))
    return dict(latency_s=t, tokens_per_s=batch / t)


def fits(weight_bytes_per_chip: float, *, batch: int, context: int, kv_bytes_per_token: float, world_size: int,
         hbm_bytes: float) -> tuple[bool, float]:
    """(fits, GB used) for one chip: its weights plus its share of the KV cache, batch·context·kv ÷ P.
    Every layout here spreads the cache evenly: EP by sequence, PP by layer.

    >>> fits(60e9, batch=64, context=4096, kv_bytes_per_token=70e3, world_size=16, hbm_bytes=80e9)
    (True, 61.1)
    """
    used = weight_bytes_per_chip + batch * context * kv_bytes_per_token / world_size
    return used <= hbm_bytes, round(used / 1e9, 1)
