"""Executing a plan on a research graph: one outcome at a time, or every outcome at once, exactly.

The rules (one plan = one order of the nodes):

* before each node, the plan stops if the goal has succeeded or can no longer succeed;
* a *success set* is a set of nodes still to come whose success (every other node to come failing)
  would make the goal succeed; a node is *useful* while it belongs to a minimal success set, that is,
  while some outcome of the other nodes lets its own outcome decide the goal. Looking only at a
  node's direct dependants is not enough: with goal = AND(a, m) and m = OR(a, b), node b never matters;
* a useful node runs and its cost is paid; any other node is skipped at zero cost and counts as not
  succeeded.

``evaluate_plan`` walks the tree of outcomes the plan can meet (it branches only on nodes that run),
so it is exact and far smaller than the 2^n outcomes a brute-force enumeration visits.

    >>> from labutils.research import Graph
    >>> g = Graph().add("a", cost=1, p_success=0.5).add("b", cost=2, p_success=0.5)
    >>> g = g.add("goal", cost=0, p_success=1, requires=["a", "b"], kind="or").set_goal("goal")
    >>> evaluate_plan(g, ["a", "b", "goal"])     # b runs only when a failed: 1 + 0.5·2
    (0.75, 2.0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from labutils.research.graph import Graph, Node


def _minimal(sets: set) -> set:
    return {a for a in sets if not any(b < a for b in sets)}


def _alive_and_useful(graph: Graph, topo, ok: frozenset, pending: set) -> tuple[set, set]:
    """The alive nodes (still to come, able to succeed) and the useful ones, given the successes so far."""
    sets = {}  # node -> the minimal sets of pending nodes whose success makes it succeed
    for v in topo:
        node = graph.nodes[v]
        if v in ok or v not in pending:
            sets[v] = {frozenset()} if v in ok else set()
            continue
        if node.kind == "and":
            need = {frozenset()}
            for u in node.requires:
                need = {a | b for a in need for b in sets[u]}
        else:
            need = set().union(*(sets[u] for u in node.requires))
        sets[v] = _minimal({a | {v} for a in need})
    alive = {v for v in topo if v in pending and sets[v]}
    return alive, set().union(*sets[graph.goal]) if graph.goal not in ok else set()


def run_plan(graph: Graph, order: list[str], outcome) -> tuple[bool, float]:
    """(goal reached, cost paid) for one fixed outcome {node: succeeded?}; ``order`` already checked."""
    missing = [v for v in order if v not in outcome]
    if missing:
        raise ValueError(f"outcome has no entry for node {missing[0]!r}")
    topo = graph.structure()[0]
    ok, pending, spent = frozenset(), set(order), 0.0
    for v in order:
        alive, useful = _alive_and_useful(graph, topo, ok, pending)
        if graph.goal in ok or graph.goal not in alive:
            break
        pending.discard(v)
        if v in useful:
            spent += graph.nodes[v].cost
            if outcome[v]:
                ok = ok | {v}
    return graph.goal in ok, spent


def evaluate_plan(graph: Graph, order: list[str]) -> tuple[float, float]:
    """(P(goal), expected cost) of a plan, exact; ``order`` already checked."""
    topo = graph.structure()[0]
    memo: dict = {}

    def value(i: int, ok: frozenset) -> tuple[float, float]:  # from step i on, given the successes so far
        if (i, ok) in memo:
            return memo[i, ok]
        alive, useful = _alive_and_useful(graph, topo, ok, set(order[i:]))
        if graph.goal in ok or graph.goal not in alive:
            out = (float(graph.goal in ok), 0.0)
        elif order[i] not in useful:
            out = value(i + 1, ok)
        else:
            node = graph.nodes[order[i]]
            p_win, c_win = value(i + 1, ok | {node.name}) if node.p_success > 0 else (0.0, 0.0)
            p_lose, c_lose = value(i + 1, ok) if node.p_success < 1 else (0.0, 0.0)
            q = node.p_success
            out = (q * p_win + (1 - q) * p_lose, node.cost + q * c_win + (1 - q) * c_lose)
        memo[i, ok] = out
        return out

    return value(0, frozenset())


# ----------------------------------------------------------------------------- choosing a plan

def _relevant(graph: Graph) -> list[str]:
    """The goal and its ancestors, in topological order (no other node can change the outcome)."""
    keep = graph.ancestors(graph.goal) | {graph.goal}
    return [v for v in graph.validate() if v in keep]


def linear_extensions(graph: Graph) -> Iterator[list[str]]:
    """Every order of the goal and its ancestors that runs each node after its prerequisites.

    >>> from labutils.research import Graph
    >>> g = Graph().add("a", cost=1, p_success=1).add("b", cost=1, p_success=1).add("idle", cost=1, p_success=1)
    >>> list(linear_extensions(g.add("goal", cost=1, p_success=1, requires=["a", "b"]).set_goal("goal")))
    [['a', 'b', 'goal'], ['b', 'a', 'goal']]
    """
    nodes = _relevant(graph)
    placed: list[str] = []

    def extend() -> Iterator[list[str]]:
        if len(placed) == len(nodes):
            yield list(placed)
            return
        for v in nodes:
            if v not in placed and all(r in placed for r in graph.nodes[v].requires):
                placed.append(v)
                yield from extend()
                placed.pop()

    yield from extend()


def best_order(graph: Graph) -> tuple[list[str], float]:
    """The order of least expected cost among all linear extensions (brute force), and that cost.

    >>> from labutils.research import Graph
    >>> g = Graph().add("slow", cost=10, p_success=0.9).add("risky", cost=1, p_success=0.2)
    >>> g = g.add("goal", cost=0, p_success=1, requires=["slow", "risky"]).set_goal("goal")
    >>> best_order(g)
    (['risky', 'slow', 'goal'], 3.0)
    """
    best, best_cost = None, math.inf
    for order in linear_extensions(graph):
        c = evaluate_plan(graph, order)[1]
        if c < best_cost - 1e-12:
            best, best_cost = order, c
    return best, best_cost


def greedy_order(graph: Graph, key: Callable[[Node], float]) -> list[str]:
    """List scheduling: repeatedly run the ready node (prerequisites placed) with the smallest ``key(node)``.

    >>> from labutils.research import Graph
    >>> g = Graph().add("a", cost=3, p_success=0.5).add("b", cost=1, p_success=0.9)
    >>> g = g.add("goal", cost=1, p_success=1, requires=["a", "b"]).set_goal("goal")
    >>> greedy_order(g, key=lambda node: node.cost)    # cheapest first
    ['b', 'a', 'goal']
    """
    nodes, placed = _relevant(graph), []
    while len(placed) < len(nodes):
        ready = [v for v in nodes if v not in placed and all(r in placed for r in graph.nodes[v].requires)]
        placed.append(min(ready, key=lambda v: key(graph.nodes[v])))  # min keeps the first of equal keys
    return placed
