"""Lab 04, MoE sharding: the MoE layer with top-k routing, capacity and load balancing (``layer``), the
cost model of a decode step under each layout (``cost``), real multi-process runs of both layouts
(``serving``, whose workers live in ``workers``) and the notebook's checkers (``checks``).

    >>> import torch
    >>> from labutils.moe import MoELayer
    >>> MoELayer(32, 64, n_experts=4, k=2)(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
"""

from labutils.moe.checks import (
    check_comm_per_step,
    check_dispatch_splits,
    check_drop_over_capacity,
    check_load_balancing_loss,
)
from labutils.moe.cost import (
    DEEPSEEK_LIKE,
    H100_INFINIBAND,
    H100_NVLINK,
    REFERENCE_MACHINES,
    TPU_V5P_ICI,
    Machine,
    comm_per_step,
    crossover_batch,
    decode_rate,
    dispatch_splits,
    experts_touched,
    fit_machine,
    machine,
    memory_per_chip,
    step_latency,
)
from labutils.moe.imbalance import busiest_experts, simulate_busiest
from labutils.moe.layer import (
    SWITCH_AUX_WEIGHT,
    MoELayer,
    Routing,
    balancing_loss_of,
    drop_over_capacity,
    expert_capacity,
    load_balancing_loss,
    route_top_k,
)
from labutils.moe.published import (
    DEEPEP_NVLINK_2025_06,
    DEEPEP_RDMA_2025_02,
    a2a_terms,
    alpha_from_pairs,
    alpha_profile,
    alpha_range,
    fit_alpha_beta,
    winner_map,
)
from labutils.moe.serving import Cluster, LayoutResult, ep_expert_counts, ep_off_rank, reference_output, run_layout
from labutils.moe.workers import LAYOUTS, StackConfig, micro_sizes

__all__ = [
    "check_comm_per_step", "check_dispatch_splits", "check_drop_over_capacity", "check_load_balancing_loss",
    "DEEPSEEK_LIKE", "H100_INFINIBAND", "H100_NVLINK", "REFERENCE_MACHINES", "TPU_V5P_ICI", "Machine",
    "comm_per_step", "crossover_batch", "dispatch_splits", "experts_touched", "fit_machine", "machine",
    "memory_per_chip", "step_latency", "SWITCH_AUX_WEIGHT", "MoELayer", "Routing", "balancing_loss_of",
    "drop_over_capacity", "expert_capacity", "load_balancing_loss", "route_top_k", "Cluster", "LayoutResult",
    "ep_off_rank", "reference_output", "run_layout", "LAYOUTS", "StackConfig", "micro_sizes", "decode_rate",
    "busiest_experts", "simulate_busiest", "DEEPEP_NVLINK_2025_06", "DEEPEP_RDMA_2025_02", "a2a_terms",
    "alpha_from_pairs", "alpha_profile", "alpha_range", "fit_alpha_beta", "winner_map", "ep_expert_counts",
]
