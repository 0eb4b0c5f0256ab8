"""What to test first on a chain, and how far parallel workers can speed up a research graph.

* A chain of independent must-pass steps, run in order and stopped at the first failure, costs
  Σ_i c_i · ∏_{j before i} p_j in expectation. Swapping two neighbours i, j changes it by a multiple of
  c_i(1 − p_j) − c_j(1 − p_i), so sorting by c / (1 − p), increasing, is optimal (the least-cost
  testing sequence; a step that never fails goes last).
* With K workers, ``simulate_schedule`` runs a graph as a lab would: every useful node whose
  prerequisites are met starts as soon as a worker is free (the one with the longest remaining chain
  to the goal first), outcomes are revealed when a node finishes, and a node that can no longer change
  the outcome is cancelled. A node's cost is its duration on one worker.
* With unlimited workers and every node succeeding, the goal finishes after ``critical_path``: the
  chain of prerequisites that sets its earliest finish (the costliest prerequisite of an ``"and"``
  node, the quickest of an ``"or"`` node, which waits only for its first success).

Left out on purpose: a node that needs several workers, pre-emption, and durations that vary.

    >>> chain_cost([4.0, 1.0], [0.5, 0.5], [1, 0]), optimal_chain_order([4.0, 1.0], [0.5, 0.5])
    (3.0, [1, 0])
"""

from __future__ import annotations

import math

import numpy as np

from labutils import positive_int
from labutils.research.graph import Graph
from labutils.research.plan import _alive_and_useful, _relevant


def _chain_inputs(costs, p_success) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(costs, dtype=np.float64)
    p = np.asarray(p_success, dtype=np.float64)
    if c.ndim != 1 or p.ndim != 1 or len(c) != len(p):
        raise ValueError(f"costs and p_success must be 1-D and of the same length, got shapes {c.shape} and {p.shape}")
    bad = np.flatnonzero(~np.isfinite(c) | (c < 0))
    if bad.size:
        raise ValueError(f"costs must be finite and ≥ 0; costs[{bad[0]}] = {c[bad[0]]!r}")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))
    if bad.size:
        raise ValueError(f"p_success must lie in [0, 1]; p_success[{bad[0]}] = {p[bad[0]]!r}")
    return c, p


def chain_cost(costs, p_success, order) -> float:
    """Expected cost of running must-pass steps in ``order`` (indices), stopping at the first failure.

    >>> chain_cost([1.0, 10.0], [0.5, 0.9], [0, 1])    # 1 + 0.5 · 10
    6.0
    """
    c, p = _chain_inputs(costs, p_success)
    order = list(order)
    if sorted(order) != list(range(len(c))):
        raise ValueError(f"order must be a permutation of 0..{len(c) - 1}, got {order}")
    reach = np.concatenate([[1.0], np.cumprod(p[order])[:-1]])  # P(step k is reached)
    return float(np.sum(c[order] * reach))


def optimal_chain_order(costs, p_success) -> list[int]:
    """The order of least expected cost for independent must-pass steps: c / (1 − p), increasing.

    Ties keep the input order; a step with p = 1 never stops the chain, so it goes last.

    >>> optimal_chain_order([10.0, 1.0, 2.0], [0.5, 0.9, 0.2])
    [2, 1, 0]
    """
    c, p = _chain_inputs(costs, p_success)
    ratio = [math.inf if q == 1 else ci / (1 - q) for ci, q in zip(c, p)]
    return sorted(range(len(c)), key=lambda i: ratio[i])


# ----------------------------------------------------------------------------- parallel workers

def critical_path(graph: Graph) -> tuple[list[str], float]:
    """The chain of prerequisites that sets the goal's earliest finish (unlimited workers, all succeed).

    >>> g = Graph().add("a", cost=2, p_success=1).add("b", cost=5, p_success=1)
    >>> g = g.add("goal", cost=1, p_success=1, requires=["a", "b"]).set_goal("goal")
    >>> critical_path(g)
    (['b', 'goal'], 6.0)
    """
    finish, via = {}, {}
    for v in graph.validate():
        node = graph.nodes[v]
        if node.requires:
            pick = max if node.kind == "and" else min
            via[v] = pick(node.requires, key=lambda r: finish[r])  # first of equal finishes
            finish[v] = finish[via[v]] + node.cost
        else:
            finish[v] = node.cost
    path, v = [graph.goal], graph.goal
    while v in via:
        v = via[v]
        path.append(v)
    return path[::-1], float(finish[graph.goal])


def _tails(graph: Graph, nodes: list[str]) -> dict[str, float]:
    """Longest remaining chain of costs from each node to the goal (the scheduling priority)."""
    keep, tail = set(nodes), {}
    for v in reversed(nodes):
        after = [tail[w] for w in graph.structure()[1][v] if w in keep]
        tail[v] = graph.nodes[v].cost + (max(after) if after else 0.0)
    return tail


def _met(node, ok: frozenset) -> bool:
    """Can the node start now: all prerequisites succeeded ("and"), or one of them ("or")?"""
    met = [r in ok for r in node.requires]
    return all(met) if node.kind == "and" else any(met)


def _one_run(graph: Graph, nodes: list[str], tail: dict, workers: int, outcome: dict) -> float:
    """Time at which the goal succeeds for one outcome, or inf."""
    topo = graph.structure()[0]
    ok, started, running, t = frozenset(), set(), {}, 0.0  # running: node -> finish time
    while True:
        waiting = {v for v in nodes if v not in started}
        alive, useful = _alive_and_useful(graph, topo, ok, waiting | set(running))
        if graph.goal in ok:
            return t
        if graph.goal not in alive:
            return math.inf
        running = {v: f for v, f in running.items() if v in useful}  # cancel what can no longer matter
        ready = [v for v in nodes if v in waiting and v in useful and _met(graph.nodes[v], ok)]
        for v in sorted(ready, key=lambda v: -tail[v])[: workers - len(running)]:
            started.add(v)
            running[v] = t + graph.nodes[v].cost
        if not running:  # cannot happen while the goal is alive; guard against an endless loop
            return math.inf
        t = min(running.values())
        for v in [v for v, f in running.items() if f == t]:
            del running[v]
            if outcome[v]:
                ok = ok | {v}


def simulate_schedule(graph: Graph, workers: int, *, n_runs: int, seed: int) -> np.ndarray:
    """Monte Carlo time to reach the goal with ``workers`` parallel workers: shape (n_runs,), inf where it failed.

    >>> g = Graph().add("a", cost=2, p_success=1).add("b", cost=3, p_success=1)
    >>> g = g.add("goal", cost=1, p_success=1, requires=["a", "b"]).set_goal("goal")
    >>> simulate_schedule(g, 1, n_runs=2, seed=0), simulate_schedule(g, 2, n_runs=2, seed=0)
    (array([6., 6.]), array([4., 4.]))
    """
    positive_int("workers", workers)
    positive_int("n_runs", n_runs)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    nodes = _relevant(graph)
    tail = _tails(graph, nodes)
    p = np.array([graph.nodes[v].p_success for v in nodes])
    draws = np.random.default_rng(seed).random((n_runs, len(nodes))) < p  # (n_runs, nodes)
    times, seen = np.empty(n_runs), {}
    for k, row in enumerate(draws):
        key = row.tobytes()  # identical outcomes give identical schedules
        if key not in seen:
            seen[key] = _one_run(graph, nodes, tail, workers, dict(zip(nodes, row.tolist())))
        times[k] = seen[key]
    return times
