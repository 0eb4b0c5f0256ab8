"""Lab 04: load imbalance under expert parallelism — a decode step waits for the busiest rank.

At small batch a rank's time is the expert weights it reads, so what matters is how many distinct
experts of a layer were hit on the busiest rank, not the mean. Under uniform routing each expert is hit
with probability q = 1 − (1 − k/E)^T by T tokens; a rank holds E/P of them, and the busiest of P ranks
is the maximum of P such counts (taken as independent binomials: a close approximation).

    >>> round(busiest_experts(256, 9, 1, 16), 2), round(256 * (1 - (1 - 9 / 256)) / 16, 2)   # busiest vs mean
    (2.11, 0.56)

``simulate_busiest`` draws real routings (k distinct experts per token) and tries two remedies:
redundant copies of every expert (the least-loaded copy serves it, as DeepSeek-V3's redundant experts
do for hot experts, arXiv 2412.19437 §3.4) and node-limited routing (each token's experts on at most
``max_nodes`` nodes, DeepSeek-V3 uses ≤ 4). Left out on purpose: learned, skewed routers (uniform routing
is the best case) and per-token load (assignments), which matters once the step is compute-bound.
"""

from __future__ import annotations

import math

import numpy as np


def busiest_experts(n_experts: int, k: int, tokens: float, world_size: int) -> float:
    """Expected distinct experts hit on the busiest of world_size ranks (E/P experts each) by tokens
    tokens choosing k of n_experts uniformly: E[max of P Binomial(E/P, q)], q = 1 − (1 − k/E)^tokens."""
    if n_experts % world_size:
        raise ValueError(f"world_size {world_size} must divide n_experts {n_experts}")
    n, q = n_experts // world_size, 1.0 - (1.0 - k / n_experts) ** tokens
    cdf = np.cumsum([math.comb(n, j) * q ** j * (1 - q) ** (n - j) for j in range(n + 1)])
    return float(sum(1.0 - min(1.0, cdf[j]) ** world_size for j in range(n)))  # E[max] = Σ_j P(max > j)


def simulate_busiest(n_experts: int, k: int, tokens: int, world_size: int, *, trials: int = 500, seed: int = 0,
                     copies: int = 1, ranks_per_node: int | None = None, max_nodes: int | None = None) -> tuple[float, float]:
    """(mean over trials of the busiest rank's distinct experts, mean per rank) for random uniform routings.

    copies > 1: every expert also lives on copies − 1 other ranks and each hit expert is served by the copy
    on the rank that is least loaded so far. max_nodes: each token picks max_nodes of the nodes (groups of
    ranks_per_node ranks) at random, then its k experts among theirs.

    >>> b, m = simulate_busiest(8, 1, 1, 2, trials=50)
    >>> b, m   # one token hits one expert: the busiest rank has it, the mean is 1/2
    (1.0, 0.5)
    """
    E, P = n_experts, world_size
    if E % P or not 1 <= copies <= P:
        raise ValueError("world_size must divide n_experts and 1 <= copies <= world_size")
    g = np.random.default_rng(seed)
    home = np.arange(E) // (E // P)  # (E,) rank of each expert's first copy
    keys = g.random((trials, tokens, E))  # uniform routing: a token's k experts are its k largest keys
    if max_nodes is not None:
        n_nodes = P // ranks_per_node
        node_keys = g.random((trials, tokens, n_nodes))
        kept = np.argsort(node_keys, -1)[..., -min(max_nodes, n_nodes):]  # (trials, tokens, max_nodes)
        allowed = (home // ranks_per_node == kept[..., :, None]).any(-2)  # (trials, tokens, E)
        keys = np.where(allowed, keys, -1.0)
    top = np.argpartition(keys, E - k, -1)[..., E - k:]  # (trials, tokens, k)
    hit = np.zeros((trials, E), dtype=bool)
    np.put_along_axis(hit, top.reshape(trials, -1), True, -1)
    if copies == 1:
        load = np.stack([hit[:, home == r].sum(1) for r in range(P)], 1)  # (trials, P)
    else:
        load = np.zeros((trials, P))
        for t in range(trials):
            for e in g.permutation(np.flatnonzero(hit[t])):
                ranks = (home[e] + np.arange(copies) * (P // copies)) % P  # copies spread over the ranks
                load[t, ranks[np.argmin(load[t, ranks])]] += 1
    return float(load.max(1).mean()), float(load.mean())
