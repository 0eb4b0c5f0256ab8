"""Checkers for 06_research_graph. Each runs fixed cases and compares the learner's answer with the
reference in ``labutils.research`` (itself tested against brute force in tests/test_research.py): the
exact tree of a plan's outcomes, every permutation of a chain, direct sums, numerical integration.

    >>> check_best_of_n(lambda rho, n: rho)   # prints which cases are wrong and why, then raises
    Traceback (most recent call last):
    ...
    labutils.checks.CheckFailed: Exercise 6.4 · best_of_n: 6 of 7 cases failed (details above)
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from labutils.checks import Case, Exercise, compare, run_cases
from labutils.research import Graph, chain_cost, expected_max_normal, value_of_information

NOTEBOOK = "06_research_graph"
EX_PLAN = Exercise(NOTEBOOK, "6.1", "plan_value")
EX_CHAIN = Exercise(NOTEBOOK, "6.2", "chain_order")
EX_EVSI = Exercise(NOTEBOOK, "6.3", "evsi")
EX_TASTE = Exercise(NOTEBOOK, "6.4", "best_of_n")


def _close(a: float, b: float, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def _as_float(x) -> float | None:
    try:
        v = float(np.asarray(x).reshape(()))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------- 6.1 plan_value

class _ExamGraph(Graph):
    """A graph that counts the plans a learner executes and keeps the reference's answer to itself."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.nodes, self.goal, self.n_runs = dict(graph.nodes), graph.goal, 0

    def run(self, order, outcome):
        self.n_runs += 1
        return super().run(order, outcome)

    def success_probability(self, order):
        raise RuntimeError("this exercise computes P(goal) itself: use graph.nodes and graph.run only")

    def expected_cost(self, order):
        raise RuntimeError("this exercise computes the expected cost itself: use graph.nodes and graph.run only")


def describe(graph: Graph) -> str:
    """Every node with its parameters, e.g. ``b←a: c=2 p=0.5; m←or(r1,r2): c=1 p=0.9; goal m``."""
    parts = []
    for v, node in graph.nodes.items():
        req = ",".join(node.requires)
        req = (f"←or({req})" if node.kind == "or" else f"←{req}") if node.requires else ""
        parts.append(f"{v}{req}: c={node.cost:g} p={node.p_success:g}")
    return "; ".join(parts) + f"; goal {graph.goal}"


def _plan_cases() -> list[tuple[str, Graph, list[str]]]:
    chain = (Graph().add("a", cost=1, p_success=0.9).add("b", cost=2, p_success=0.5, requires=["a"])
             .add("g", cost=1, p_success=0.8, requires=["b"]).set_goal("g"))
    routes = (Graph().add("a", cost=1, p_success=0.8).add("r1", cost=3, p_success=0.5, requires=["a"])
              .add("r2", cost=2, p_success=0.6, requires=["a"])
              .add("m", cost=1, p_success=0.9, requires=["r1", "r2"], kind="or").set_goal("m"))
    sure = (Graph().add("z", cost=5, p_success=0.5).add("s", cost=0.5, p_success=1.0)
            .add("u", cost=2, p_success=0.0, requires=["s"]).add("v", cost=1, p_success=0.7, requires=["s"])
            .add("w", cost=1, p_success=0.9, requires=["u", "v"], kind="or").set_goal("w"))
    project = (Graph().add("data", cost=1, p_success=0.6).add("sweep", cost=5, p_success=0.9, requires=["data"])
               .add("law", cost=0.5, p_success=0.7, requires=["sweep"]).add("kernel", cost=2, p_success=0.5)
               .add("lay_a", cost=1, p_success=0.5).add("lay_b", cost=1.5, p_success=0.7)
               .add("layout", cost=0.5, p_success=0.95, requires=["lay_a", "lay_b"], kind="or")
               .add("ship", cost=3, p_success=0.9, requires=["law", "kernel", "layout"]).set_goal("ship"))
    split = (Graph().add("x", cost=1, p_success=0.5).add("y", cost=2, p_success=0.8)
             .add("left", cost=1, p_success=0.9, requires=["x", "y"]).add("z", cost=3, p_success=0.6)
             .add("right", cost=1, p_success=0.7, requires=["z"])
             .add("g", cost=0.5, p_success=0.9, requires=["left", "right"], kind="or").add("after", cost=2, p_success=0.5)
             .set_goal("g"))
    return [("a chain", chain, ["a", "b", "g"]),
            ("two routes into an OR node", routes, ["a", "r1", "r2", "m"]),
            ("an unneeded node first, a sure step, a route that always fails", sure, ["z", "s", "u", "v", "w"]),
            ("a small project, big steps first", project,
             ["data", "sweep", "law", "lay_b", "lay_a", "layout", "kernel", "ship"]),
            ("the same project, risky steps first", project,
             ["kernel", "lay_a", "lay_b", "layout", "data", "sweep", "law", "ship"]),
            ("a route whose first input failed, and a node after the goal", split,
             ["x", "z", "y", "left", "right", "g", "after"])]


def _check_plan(got, case: Case) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        shown = "None — did the function forget to `return` its result?" if got is None else \
            f"{type(got).__name__}: {str(got)[:60]}"
        return f"expected a pair (P(goal), expected cost), got {shown}"
    for what, g, want in zip(("P(goal)", "expected cost"), got, case.expected):
        why = compare(g, want, rtol=1e-9, atol=1e-12)
        if why:
            return f"{what}: {why}"
    return None


def _weighted(graph: Graph, order: list[str], weight) -> tuple[float, float]:
    """Σ over all outcomes of weight(outcome)·(reached, cost): the enumeration with a given weighting."""
    names, p, c = list(graph.nodes), 0.0, 0.0
    for bits in itertools.product([True, False], repeat=len(names)):
        outcome = dict(zip(names, bits))
        reached, spent = Graph.run(graph, order, outcome)
        w = weight(outcome)
        p, c = p + w * reached, c + w * spent
    return p, c


def _diagnose_plan(got, expected, case: Case) -> str | None:
    graph, order = case.args
    p, c = (_as_float(x) for x in got) if isinstance(got, (tuple, list)) and len(got) == 2 else (None, None)
    if p is None or c is None:
        return None
    want_p, want_c = expected
    probs = [graph.nodes[v].p_success for v in order]
    reach = np.concatenate([[1.0], np.cumprod(probs)[:-1]])
    chain = (float(np.prod(probs)), float(sum(graph.nodes[v].cost * r for v, r in zip(order, reach))))
    same = lambda pair: _close(p, pair[0]) and _close(c, pair[1])
    if same((want_c, want_p)):
        return "the pair is swapped: return (P(goal), expected cost)"
    if same(chain):
        return ("that is a chain's formula (every node must pass, in order); on this graph an OR node survives a "
                "failed route and skipped nodes cost nothing")
    if _close(c, sum(graph.nodes[v].cost for v in order)):
        return "every node in the order was paid for; a plan stops early and skips nodes (graph.run says what it paid)"
    if same(_weighted(graph, order, lambda out: 0.5 ** len(out))):
        return "every outcome was weighted equally; an outcome's probability is the product of its nodes' p or 1 − p"
    if same(_weighted(graph, order, lambda out: math.prod(graph.nodes[v].p_success for v, ok in out.items() if ok))):
        return "the outcomes' weights miss a factor (1 − p) for each node that fails"
    if not 0 <= p <= 1:
        return "a probability outside [0, 1]: the outcomes' weights must sum to 1"
    if graph.n_runs == 0:
        return ("your function never called graph.run: executing a plan has several rules (stop once the goal is "
                "decided, skip what can no longer matter); graph.run applies them for one outcome")
    return None


def check_plan_value(plan_value) -> None:
    cases = []
    for title, graph, order in _plan_cases():
        want = (graph.success_probability(order), graph.expected_cost(order))
        cases.append(Case(f"{title} — {describe(graph)}; order {','.join(order)}", (_ExamGraph(graph), order), want))

    def cost() -> str:
        runs = sum(case.args[0].n_runs for case in cases)
        most = max(len(case.args[0].nodes) for case in cases)
        return f"your function executed {runs:,} plans for {len(cases)} graphs of up to {most} nodes"

    run_cases(EX_PLAN, plan_value, cases, check=_check_plan, diagnose=_diagnose_plan, cost=cost,
              hint="enumerate all 2^n outcomes (itertools.product([True, False], repeat=n)); weight each by "
                   "∏ p over nodes that succeed × ∏ (1 − p) over nodes that fail; graph.run(order, outcome) "
                   "returns (goal reached, cost paid) — sum both, weighted")


# ----------------------------------------------------------------------------- 6.2 chain_order

_CHAINS = [([10, 1, 2], [0.5, 0.9, 0.2]), ([1, 2, 10], [0.99, 0.5, 0.1]), ([3, 3, 3, 3], [0.9, 0.5, 0.7, 0.2]),
           ([5, 1, 4, 2, 3], [0.2, 0.95, 0.5, 0.9, 0.6]), ([0, 4, 1, 2, 6, 1], [0.5, 1.0, 0.8, 0.3, 0.6, 1.0]),
           ([7.1, 0.8, 3.3, 9.5, 2.2, 5.0, 1.4], [0.35, 0.9, 0.62, 0.08, 0.5, 0.77, 0.95]),
           ([2, 0, 3, 1, 2, 0], [0.0, 1.0, 0.5, 0.75, 0.0, 0.4])]  # ties, a free sure step, steps that always fail


def _brute_force_chain(costs, p) -> tuple[list[int], float, float]:
    """(best order, its expected cost, the worst order's expected cost) over every permutation."""
    scored = [(chain_cost(costs, p, o), list(o)) for o in itertools.permutations(range(len(costs)))]
    best = min(scored, key=lambda t: t[0])
    return best[1], best[0], max(s for s, _ in scored)


def _as_order(got, n: int) -> tuple[list[int] | None, str | None]:
    if got is None:
        return None, "got None — did the function forget to `return` its result?"
    if isinstance(got, (str, bytes, dict, set)):
        return None, f"expected a list of step indices, got {type(got).__name__}: {str(got)[:60]}"
    try:
        arr = np.asarray(got)
        order = [int(i) for i in arr.reshape(-1)]
    except (TypeError, ValueError):
        return None, f"expected a list of step indices, got {type(got).__name__}: {str(got)[:60]}"
    if arr.ndim != 1 or not np.array_equal(arr.astype(float), np.asarray(order, dtype=float)):
        return None, f"expected a list of whole-number step indices, got {str(got)[:60]}"
    if sorted(order) != list(range(n)):
        return None, f"expected a permutation of the indices 0..{n - 1}, got {order}"
    return order, None


def _check_chain(got, case: Case) -> str | None:
    costs, p = case.args
    order, why = _as_order(got, len(costs))
    if why:
        return why
    best_order, best_cost, _ = case.expected
    why = compare(chain_cost(costs, p, order), best_cost, rtol=1e-9, atol=1e-12)
    return f"expected cost of your order {order}: {why}; the best order is {best_order}" if why else None


def _diagnose_chain(got, expected, case: Case) -> str | None:
    c, p = case.args
    order, _ = _as_order(got, len(c))
    if order is None:
        return None
    n = range(len(c))
    key = [math.inf if q == 1 else ci / (1 - q) for ci, q in zip(c, p)]
    rules = [
        (sorted(n, key=lambda i: c[i]), "cheapest first ignores how likely each step is to stop the chain"),
        (sorted(n, key=lambda i: -p[i]), "most likely to pass first ignores what each step costs"),
        (sorted(n, key=lambda i: p[i]), "riskiest first ignores what each step costs"),
        (sorted(n, key=lambda i: c[i] / p[i] if p[i] else math.inf),
         "cost / p belongs to the opposite problem (stop at the first success); this chain stops at the first failure"),
        (sorted(n, key=lambda i: -key[i]), "the right key, sorted the wrong way round"),
        ([int(i) for i in np.argsort(np.argsort(key, kind="stable"), kind="stable")],
         "these are each step's ranks (its position in the run); return the step indices in running order"),
    ]
    return next((why for wrong, why in rules if order == wrong), None)


def check_chain_order(chain_order) -> None:
    cases = [Case(f"costs={c}, p_success={p}", (c, p), _brute_force_chain(c, p)) for c, p in _CHAINS]
    _, best, worst = cases[-2].expected
    run_cases(EX_CHAIN, chain_order, cases, check=_check_chain, diagnose=_diagnose_chain,
              hint="compare two neighbours i, j: running i first is cheaper when c_i·(1 − p_j) < c_j·(1 − p_i), "
                   "so sort by cost / (1 − p), increasing; a step that never fails (p = 1) goes last",
              cost=lambda: f"{sum(math.factorial(len(c)) for c, _ in _CHAINS):,} orders brute-forced; on the "
                           f"7-step chain the worst order costs {worst / best:.1f}× the best")


# ----------------------------------------------------------------------------- 6.3 evsi

def _evsi_cases() -> list[tuple[str, list, list, list]]:
    rng = np.random.default_rng(4)
    first = np.round(rng.uniform(0.05, 0.95, size=4), 2)
    like = np.stack([first, np.round(1 - first, 2)], axis=1)
    pay = np.round(rng.normal(0, 3, size=(3, 4)), 2)
    return [("a perfect test", [0.3, 0.7], [[1, 0], [0, 1]], [[10, -5], [0, 0]]),
            ("a useless test", [0.3, 0.7], [[0.5, 0.5], [0.5, 0.5]], [[10, -5], [0, 0]]),
            ("a noisy test, 3 states, 3 observations", [0.2, 0.5, 0.3],
             [[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]], [[-2, 1, 4], [0, 0, 0]]),
            ("an observation that never happens", [0.6, 0.4], [[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]], [[3, -4], [1, 1]]),
            ("4 states, 2 observations, 3 actions", [0.1, 0.4, 0.3, 0.2], like.tolist(), pay.tolist()),
            ("a lopsided test (rows and columns differ)", [0.5, 0.3, 0.2],
             [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]], [[4, -2, -6], [0, 0, 0]])]


def _diagnose_evsi(got, expected, case: Case) -> str | None:
    prior, like, pay = case.args
    g = _as_float(got)
    if g is None:
        if isinstance(got, (float, np.floating)) and math.isnan(got):
            return "NaN: an observation with P(o) = 0 was divided by; it never happens, so its weight is 0 — skip it"
        return None
    joint = prior[:, None] * like
    with_info = float(np.sum(np.max(pay @ joint, axis=0)))
    evpi = float(prior @ pay.max(axis=0) - np.max(pay @ prior))
    if _close(g, with_info, 1e-9, 1e-10):
        return "that is the value of deciding after the test; the value of deciding now must be subtracted"
    if _close(g, 0.0) and expected > 0:
        return "the max over actions was taken outside the average over observations (that gives 0 always)"
    if _close(g, evpi, 1e-9, 1e-10):
        return "that is the value of perfect information: it ignores the likelihood, as if the test showed the state"
    return None


def check_evsi(evsi) -> None:
    cases = [Case(f"{title}: prior={prior}, likelihood={like}, payoffs={pay}",
                  (np.array(prior, dtype=float), np.array(like, dtype=float), np.array(pay, dtype=float)),
                  value_of_information(prior, like, pay))
             for title, prior, like, pay in _evsi_cases()]
    run_cases(EX_EVSI, evsi, cases, rtol=1e-9, atol=1e-10, diagnose=_diagnose_evsi,
              hint="P(s, o) = P(s)·P(o | s); deciding after o earns max_a Σ_s P(s, o)·payoff(a, s), summed over o "
                   "(the posterior's 1/P(o) cancels the weight P(o)); subtract max_a Σ_s P(s)·payoff(a, s)")


# ----------------------------------------------------------------------------- 6.4 best_of_n

_TASTE = [(1.0, 1), (1.0, 2), (0.6, 10), (0.3, 600), (0.0, 50), (0.8, 1000), (-0.5, 5)]


def _diagnose_taste(got, expected, case: Case) -> str | None:
    rho, n = case.args
    g = _as_float(got)
    if g is None:
        return None
    e = expected_max_normal(n)
    if _close(g, rho**2 * e, 1e-6, 1e-9):
        return "ρ² is the share of variance the estimate explains; the expected value given the estimate is ρ·X"
    if _close(g, e, 1e-6, 1e-9):
        return "that is the oracle's value (ρ = 1): the factor ρ is missing"
    if rho < 0 and _close(g, abs(rho) * e, 1e-6, 1e-9):
        return ("taste that points the wrong way (ρ < 0) still picks the highest estimate, so it earns less than a "
                "random pick: keep the sign of ρ")
    if n > 1 and _close(g, rho * math.sqrt(2 * math.log(n)), 1e-6, 1e-9):
        return "√(2 ln n) is only how E[max] grows for large n, not its value"
    if _close(g, rho * expected_max_normal(n + 1), 1e-6, 1e-9):
        return "that is the best of n + 1: the density of the max of n has Φ(x) to the power n − 1"
    if abs(g - expected) <= 0.02 * max(abs(expected), 0.05):
        return "close but not exact — a simulation? Integrate numerically instead"
    return None


def check_best_of_n(best_of_n) -> None:
    cases = [Case(f"rho={rho}, n={n}", (rho, n), rho * expected_max_normal(n), unit="SD") for rho, n in _TASTE]
    run_cases(EX_TASTE, best_of_n, cases, rtol=1e-6, atol=1e-9, diagnose=_diagnose_taste,
              hint="E[V | X] = ρ·X, so the value is ρ·E[max of n standard normals], and "
                   "E[max of n] = ∫ x·n·φ(x)·Φ(x)^(n−1) dx (scipy.integrate.quad over the real line)")
