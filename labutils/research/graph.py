"""A research project as a stochastic dependency graph: nodes that cost something and may fail.

Each node is an experiment or a piece of work with a cost (GPU-hours, FLOPs — any one unit), a
probability of success and prerequisites. An ``"and"`` node runs only when all of its prerequisites
succeeded; an ``"or"`` node runs when any one did. One node is the goal.

A *plan* is an order of execution. It follows the order, stops as soon as the goal has succeeded or
can no longer succeed, and skips at zero cost any node that cannot run or can no longer change the
outcome. Success probability and expected cost of a plan are exact: ``labutils.research.plan``
walks the tree of outcomes the plan can meet.

Left out on purpose: correlated outcomes (every node succeeds or fails independently), partial
results, and re-trying a failed node.

    >>> g = Graph()
    >>> g = g.add("data", cost=1, p_success=0.5).add("run", cost=4, p_success=0.9, requires=["data"])
    >>> g = g.set_goal("run")
    >>> round(g.success_probability(["data", "run"]), 4), round(g.expected_cost(["data", "run"]), 4)
    (0.45, 3.0)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from labutils.research.plan import evaluate_plan, run_plan

KINDS = ("and", "or")


@dataclass(frozen=True)
class Node:
    name: str
    cost: float  # paid when the node runs, whatever its outcome
    p_success: float  # independent of every other node
    requires: tuple[str, ...]  # prerequisites
    kind: str  # "and": all prerequisites must succeed; "or": any one suffices


def _number(name: str, what: str, x, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not lo <= float(x) <= hi:
        raise ValueError(f"node {name!r}: {what} must be a number in [{lo:g}, {hi:g}], got {x!r}")
    return float(x)


class Graph:
    """Nodes with a cost, a success probability and prerequisites; one goal. See the module docstring."""

    def __init__(self):
        self.nodes: dict[str, Node] = {}  # in the order they were added
        self.goal: str | None = None
        self._cache: tuple = ((), None, None)  # (nodes and goal it was computed for, topological order, children)

    def add(self, name: str, *, cost, p_success, requires=(), kind: str = "and") -> Graph:
        """Add a node (prerequisites may be added later); returns the graph, so calls chain."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a node's name must be a non-empty string, got {name!r}")
        if name in self.nodes:
            raise ValueError(f"node {name!r} is already in the graph")
        cost = _number(name, "cost", cost, 0.0, math.inf)
        if not math.isfinite(cost):
            raise ValueError(f"node {name!r}: cost must be finite, got {cost!r}")
        p_success = _number(name, "p_success", p_success, 0.0, 1.0)
        if isinstance(requires, str) or not hasattr(requires, "__iter__"):
            raise ValueError(f"node {name!r}: requires must be a list of node names, got {requires!r}")
        requires = tuple(requires)
        if not all(isinstance(r, str) for r in requires):
            raise ValueError(f"node {name!r}: requires must be a list of node names, got {list(requires)!r}")
        if len(set(requires)) != len(requires):
            raise ValueError(f"node {name!r}: a prerequisite is listed twice in {list(requires)}")
        if kind not in KINDS:
            raise ValueError(f"node {name!r}: kind must be 'and' or 'or', got {kind!r}")
        if kind == "or" and not requires:
            raise ValueError(f"node {name!r}: an 'or' node needs at least one prerequisite")
        self.nodes[name] = Node(name, cost, p_success, requires, kind)
        return self

    def set_goal(self, name: str) -> Graph:
        """Name the goal node (it must have been added)."""
        if name not in self.nodes:
            raise ValueError(f"goal {name!r} is not a node of the graph (known: {list(self.nodes)})")
        self.goal = name
        return self

    # ------------------------------------------------------------------------- structure

    def topological_order(self) -> list[str]:
        """Every node after its prerequisites (ties in the order the nodes were added).

        ValueError naming the node for an unknown prerequisite or a cycle."""
        for node in self.nodes.values():
            for r in node.requires:
                if r not in self.nodes:
                    raise ValueError(f"node {node.name!r} requires {r!r}, which is not a node of the graph")
        done, order = set(), []
        while len(order) < len(self.nodes):
            ready = [n for n, node in self.nodes.items() if n not in done and all(r in done for r in node.requires)]
            if not ready:
                stuck = next(n for n in self.nodes if n not in done)
                raise ValueError(f"node {stuck!r} is on a cycle of prerequisites (or depends on one)")
            for n in ready:
                done.add(n)
                order.append(n)
        return order

    def children(self) -> dict[str, list[str]]:
        """{node: the nodes that list it as a prerequisite}."""
        out = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for r in node.requires:
                out[r].append(node.name)
        return out

    def ancestors(self, name: str) -> set[str]:
        """Every node that ``name`` depends on, directly or not."""
        seen, todo = set(), list(self.nodes[name].requires)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.nodes[n].requires)
        return seen

    def validate(self) -> list[str]:
        """Validate the graph (goal set, prerequisites known, no cycle); return a topological order."""
        return list(self.structure()[0])

    def structure(self) -> tuple[tuple[str, ...], dict[str, list[str]]]:
        """(topological order, children) of a valid graph; computed once per state of the nodes and goal."""
        if self.goal is None:
            raise ValueError("the graph has no goal yet: call .set_goal(name)")
        key = (tuple(self.nodes.values()), self.goal)
        if self._cache[0] != key:
            self._cache = (key, tuple(self.topological_order()), self.children())
        return self._cache[1], self._cache[2]

    def validate_order(self, order) -> list[str]:
        """Validate a plan: known nodes, none twice, each after all of its prerequisites, the goal included."""
        self.validate()
        if isinstance(order, str) or not hasattr(order, "__iter__"):
            raise ValueError(f"order must be a list of node names, got {order!r}")
        order = list(order)
        seen = set()
        for name in order:
            if name not in self.nodes:
                raise ValueError(f"order lists {name!r}, which is not a node of the graph")
            if name in seen:
                raise ValueError(f"order lists node {name!r} twice")
            for r in self.nodes[name].requires:
                if r not in seen:
                    raise ValueError(f"order runs {name!r} before its prerequisite {r!r}")
            seen.add(name)
        if self.goal not in seen:
            raise ValueError(f"order never runs the goal {self.goal!r}")
        return order

    # ------------------------------------------------------------------------- plans

    def run(self, order, outcome) -> tuple[bool, float]:
        """Execute a plan against one fixed ``outcome`` ({node: succeeded?}); (goal reached, cost paid)."""
        return run_plan(self, self.validate_order(order), outcome)

    def success_probability(self, order) -> float:
        """P(the goal succeeds) under this plan, exact."""
        return evaluate_plan(self, self.validate_order(order))[0]

    def expected_cost(self, order) -> float:
        """The plan's expected cost, exact (nodes skipped or never reached cost nothing)."""
        return evaluate_plan(self, self.validate_order(order))[1]

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, goal={self.goal!r})"
