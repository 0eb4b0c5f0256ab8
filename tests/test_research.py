"""Lab 06's reference code against brute force: every outcome of a plan, every permutation of a chain, every
valid order of a graph, direct sums for the value of information, numerical integration for taste."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from labutils.research import (
    Graph,
    best_order,
    chain_cost,
    critical_path,
    draw_graph,
    expected_max_normal,
    greedy_order,
    linear_extensions,
    optimal_chain_order,
    simulate_schedule,
    taste_value,
    value_of_information,
)


def enumerate_plan(graph: Graph, order) -> tuple[float, float]:
    """P(goal) and expected cost by brute force: all 2^n outcomes, each executed with graph.run."""
    names, p_goal, cost = list(graph.nodes), 0.0, 0.0
    for bits in itertools.product([True, False], repeat=len(names)):
        outcome = dict(zip(names, bits))
        w = math.prod(graph.nodes[v].p_success if ok else 1 - graph.nodes[v].p_success for v, ok in outcome.items())
        reached, spent = graph.run(order, outcome)
        p_goal, cost = p_goal + w * reached, cost + w * spent
    return p_goal, cost


def random_graph(rng, n: int) -> Graph:
    """A random DAG on n nodes (node i may require any earlier ones), AND and OR mixed, the last node the goal."""
    g = Graph()
    for i in range(n):
        earlier = [f"n{j}" for j in range(i) if rng.random() < 0.45]
        kind = "or" if len(earlier) >= 2 and rng.random() < 0.4 else "and"
        p = float(rng.choice([0.0, 1.0, rng.uniform(0.1, 0.95)], p=[0.05, 0.1, 0.85]))
        g.add(f"n{i}", cost=float(rng.choice([0.0, rng.uniform(0.5, 5)], p=[0.1, 0.9])), p_success=p,
              requires=earlier, kind=kind)
    return g.set_goal(f"n{n - 1}")


def random_order(rng, graph: Graph) -> list[str]:
    """A random valid order of every node (not only the goal's ancestors)."""
    placed = []
    while len(placed) < len(graph.nodes):
        ready = [v for v in graph.nodes if v not in placed and all(r in placed for r in graph.nodes[v].requires)]
        placed.append(ready[rng.integers(len(ready))])
    return placed


# ----------------------------------------------------------------------------- the graph and its plans

def test_plans_match_enumeration_of_outcomes_on_random_graphs():
    rng = np.random.default_rng(0)
    for trial in range(60):
        g = random_graph(rng, int(rng.integers(2, 8)))
        order = random_order(rng, g)
        p, c = enumerate_plan(g, order)
        assert g.success_probability(order) == pytest.approx(p, abs=1e-12), (trial, order)
        assert g.expected_cost(order) == pytest.approx(c, abs=1e-12), (trial, order)


def test_a_chain_of_must_pass_nodes_costs_the_chain_formula():
    costs, p = [2.0, 1.0, 4.0, 0.5], [0.9, 0.3, 0.6, 1.0]
    g = Graph()
    for i, (c, q) in enumerate(zip(costs, p)):
        g.add(f"s{i}", cost=c, p_success=q)
    g.add("goal", cost=0, p_success=1, requires=[f"s{i}" for i in range(4)]).set_goal("goal")
    for perm in itertools.permutations(range(4)):
        order = [f"s{i}" for i in perm] + ["goal"]
        assert g.expected_cost(order) == pytest.approx(chain_cost(costs, p, perm), abs=1e-12)
        assert g.success_probability(order) == pytest.approx(math.prod(p), abs=1e-12)


def test_the_rules_by_hand():
    # an OR node's second route runs only when the first failed; a node nobody needs is never paid for
    g = (Graph().add("idle", cost=7, p_success=0.5).add("a", cost=1, p_success=0.5).add("b", cost=2, p_success=0.5)
         .add("goal", cost=1, p_success=1, requires=["a", "b"], kind="or").set_goal("goal"))
    order = ["idle", "a", "b", "goal"]
    assert g.run(order, {"idle": True, "a": True, "b": True, "goal": True}) == (True, 2.0)  # a, goal
    assert g.run(order, {"idle": True, "a": False, "b": True, "goal": True}) == (True, 4.0)  # a, b, goal
    assert g.run(order, {"idle": False, "a": False, "b": False, "goal": True}) == (False, 3.0)  # a, b: goal dead
    assert g.success_probability(order) == pytest.approx(0.75)
    assert g.expected_cost(order) == pytest.approx(1 + 0.5 * 2 + 0.75 * 1)
    # an AND node whose prerequisite failed is dead: the plan stops before paying for anything else
    h = (Graph().add("a", cost=1, p_success=0.0).add("b", cost=5, p_success=0.9)
         .add("goal", cost=1, p_success=1, requires=["a", "b"]).set_goal("goal"))
    assert h.expected_cost(["a", "b", "goal"]) == 1.0 and h.success_probability(["b", "a", "goal"]) == 0.0


def goal_succeeds(graph: Graph, passed) -> bool:
    """Whether the goal succeeds when exactly the nodes in ``passed`` pass (each only if its prerequisites allow)."""
    ok = set()
    for v in graph.validate():
        node = graph.nodes[v]
        met = [r in ok for r in node.requires]
        if v in passed and (all(met) if node.kind == "and" else any(met)):
            ok.add(v)
    return graph.goal in ok


def contract_run(graph: Graph, order, outcome) -> tuple[bool, float]:
    """The contract read literally, by brute force over the nodes still to come: stop once no outcome of theirs can
    change the goal's result; pay for a node only if, for some outcome of the others, its own outcome decides the goal."""
    passed, spent = frozenset(), 0.0
    for i, v in enumerate(order):
        rest = order[i:]
        subsets = lambda nodes: (set(s) for k in range(len(nodes) + 1) for s in itertools.combinations(nodes, k))
        if len({goal_succeeds(graph, passed | s) for s in subsets(rest)}) == 1:
            break
        others = [u for u in rest if u != v]
        if any(goal_succeeds(graph, passed | s | {v}) != goal_succeeds(graph, passed | s) for s in subsets(others)):
            spent += graph.nodes[v].cost
            passed = passed | {v} if outcome[v] else passed
    return goal_succeeds(graph, passed), spent


def test_execution_follows_the_contract_word_for_word():
    rng = np.random.default_rng(5)
    for trial in range(40):
        g = random_graph(rng, int(rng.integers(2, 8)))
        order = random_order(rng, g)
        for bits in itertools.product([True, False], repeat=len(g.nodes)):
            outcome = dict(zip(g.nodes, bits))
            reached, spent = g.run(order, outcome)
            want = contract_run(g, order, outcome)
            assert reached == want[0] and spent == pytest.approx(want[1], abs=1e-12), (trial, order, outcome)


def test_a_route_masked_by_a_shared_prerequisite_is_never_paid_for():
    # goal = AND(a, m), m = OR(a, b): if a fails the goal fails, if a passes m needs no b; so b can never matter
    g = (Graph().add("a", cost=1, p_success=0.5).add("b", cost=5, p_success=0.5)
         .add("m", cost=1, p_success=1, requires=["a", "b"], kind="or")
         .add("goal", cost=1, p_success=1, requires=["a", "m"]).set_goal("goal"))
    assert g.expected_cost(["b", "a", "m", "goal"]) == pytest.approx(1 + 0.5 * 2)  # b listed first, still skipped


def test_success_probability_does_not_depend_on_the_order():
    rng = np.random.default_rng(1)
    for _ in range(10):
        g = random_graph(rng, 6)
        values = {round(g.success_probability(o), 12) for o in linear_extensions(g)}
        assert len(values) == 1


def test_linear_extensions_and_best_order_against_all_permutations():
    rng = np.random.default_rng(2)
    for _ in range(10):
        g = random_graph(rng, 6)
        keep = [v for v in g.nodes if v == g.goal or v in g.ancestors(g.goal)]
        valid = []
        for perm in itertools.permutations(keep):
            try:
                valid.append(g.validate_order(perm))
            except ValueError:
                continue
        assert sorted(map(tuple, linear_extensions(g))) == sorted(map(tuple, valid))
        order, cost = best_order(g)
        assert cost == pytest.approx(min(g.expected_cost(o) for o in valid), abs=1e-12)
        assert g.expected_cost(order) == pytest.approx(cost, abs=1e-12)


def test_greedy_order_respects_prerequisites():
    rng = np.random.default_rng(3)
    for _ in range(10):
        g = random_graph(rng, 7)
        g.validate_order(greedy_order(g, key=lambda node: node.cost))  # raises if a prerequisite comes later


@pytest.mark.parametrize("build, words", [
    (lambda: Graph().add("a", cost=1, p_success=1.5), "node 'a': p_success"),
    (lambda: Graph().add("a", cost=-1, p_success=0.5), "node 'a': cost"),
    (lambda: Graph().add("a", cost=1, p_success=0.5).add("a", cost=1, p_success=0.5), "'a' is already"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, kind="xor"), "node 'a': kind"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, kind="or"), "node 'a': an 'or' node"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, requires="b"), "node 'a': requires"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, requires=5), "node 'a': requires"),
    (lambda: Graph().add("a", cost=np.float64(1), p_success=np.float32(2)), "node 'a': p_success"),
    (lambda: Graph().add("a", cost=1, p_success=0.5).set_goal("b"), "goal 'b'"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, requires=["ghost"]).set_goal("a").validate(),
     "node 'a' requires 'ghost'"),
    (lambda: Graph().add("a", cost=1, p_success=0.5, requires=["b"]).add("b", cost=1, p_success=0.5, requires=["a"])
     .set_goal("a").validate(), "node 'a' is on a cycle"),
    (lambda: Graph().add("a", cost=1, p_success=0.5).expected_cost(["a"]), "no goal"),
])
def test_bad_graphs_raise_naming_the_node(build, words):
    with pytest.raises(ValueError, match=words):
        build()


@pytest.mark.parametrize("order, words", [
    (["b", "a", "goal"], "runs 'b' before its prerequisite 'a'"),
    (["a", "b", "b", "goal"], "'b' twice"),
    (["a", "b", "zz", "goal"], "'zz', which is not a node"),
    (["a", "b"], "never runs the goal"),
    ("abc", "list of node names"),
])
def test_bad_orders_raise(order, words):
    g = (Graph().add("a", cost=1, p_success=0.5).add("b", cost=1, p_success=0.5, requires=["a"])
         .add("goal", cost=1, p_success=0.5, requires=["b"]).set_goal("goal"))
    with pytest.raises(ValueError, match=words):
        g.expected_cost(order)


def test_run_names_a_missing_outcome():
    g = Graph().add("a", cost=1, p_success=0.5).set_goal("a")
    with pytest.raises(ValueError, match="no entry for node 'a'"):
        g.run(["a"], {})


def test_draw_graph_draws_every_node():
    g = (Graph().add("a", cost=1, p_success=0.5).add("b", cost=2, p_success=0.9)
         .add("goal", cost=1, p_success=1, requires=["a", "b"], kind="or").set_goal("goal"))
    ax = draw_graph(g, highlight=["a", "goal"])
    labels = [t.get_text() for t in ax.texts if "c=" in t.get_text()]
    assert sorted(label.split("\n")[0] for label in labels) == ["OR goal", "a", "b"]


# ----------------------------------------------------------------------------- chains

def test_optimal_chain_order_against_every_permutation():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        c = np.round(rng.choice([0.0, 1.0], size=n, p=[0.1, 0.9]) * rng.uniform(0.1, 10, size=n), 2)
        p = np.round(rng.choice([rng.uniform(0, 1), 1.0, 0.0], size=n, p=[0.8, 0.15, 0.05]), 2)
        best = min(chain_cost(c, p, o) for o in itertools.permutations(range(n)))
        order = optimal_chain_order(c, p)
        assert sorted(order) == list(range(n))
        assert chain_cost(c, p, order) == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_chain_cost_is_the_direct_sum():
    c, p, order = [3.0, 1.0, 2.0], [0.5, 0.9, 0.2], [1, 2, 0]
    assert chain_cost(c, p, order) == pytest.approx(1.0 + 0.9 * 2.0 + 0.9 * 0.2 * 3.0)


@pytest.mark.parametrize("costs, p, words", [
    ([1, 2], [0.5, 1.2], r"p_success\[1\]"),
    ([1, -2], [0.5, 0.5], r"costs\[1\]"),
    ([1, float("nan")], [0.5, 0.5], r"costs\[1\]"),
    ([1, 2, 3], [0.5, 0.5], "same length"),
])
def test_optimal_chain_order_validates(costs, p, words):
    with pytest.raises(ValueError, match=words):
        optimal_chain_order(costs, p)


# ----------------------------------------------------------------------------- parallel workers

def all_paths_to(graph: Graph, v: str):
    node = graph.nodes[v]
    if not node.requires:
        yield [v]
    for r in node.requires:
        for path in all_paths_to(graph, r):
            yield path + [v]


def test_critical_path_is_the_costliest_chain_of_an_and_graph():
    rng = np.random.default_rng(5)
    for _ in range(20):
        g = random_graph(rng, 7)
        for node in list(g.nodes.values()):  # make every node an AND node
            g.nodes[node.name] = type(node)(node.name, node.cost, node.p_success, node.requires, "and")
        path, length = critical_path(g)
        assert length == pytest.approx(max(sum(g.nodes[v].cost for v in p) for p in all_paths_to(g, g.goal)))
        assert sum(g.nodes[v].cost for v in path) == pytest.approx(length)
        assert path[-1] == g.goal and all(a in g.nodes[b].requires for a, b in zip(path, path[1:]))


def test_schedule_with_sure_nodes_is_serial_time_or_the_critical_path():
    g = (Graph().add("a", cost=2, p_success=1).add("b", cost=3, p_success=1).add("c", cost=1, p_success=1,
                                                                                 requires=["a"])
         .add("x", cost=4, p_success=1).add("y", cost=1, p_success=1)
         .add("alt", cost=1, p_success=1, requires=["x", "y"], kind="or")
         .add("goal", cost=1, p_success=1, requires=["c", "b", "alt"]).set_goal("goal"))
    serial = simulate_schedule(g, 1, n_runs=3, seed=0)
    assert np.all(serial == 4 + 2 + 3 + 1 + 1 + 1)  # x first (longest chain ahead), then y is never needed
    wide = simulate_schedule(g, 10, n_runs=3, seed=0)
    assert np.all(wide == critical_path(g)[1])  # the OR node waits for its quicker route only
    assert critical_path(g) == (["a", "c", "goal"], 4.0)


def test_schedule_success_rate_matches_the_exact_probability():
    rng = np.random.default_rng(6)
    for _ in range(5):
        g = random_graph(rng, 6)
        times = simulate_schedule(g, 2, n_runs=4000, seed=1)
        p = g.success_probability(next(linear_extensions(g)))
        se = math.sqrt(max(p * (1 - p), 1e-4) / times.size)
        assert abs(np.isfinite(times).mean() - p) < 5 * se
        assert np.array_equal(times, simulate_schedule(g, 2, n_runs=4000, seed=1))  # seeded


def test_more_workers_never_slow_a_sure_graph_down():
    rng = np.random.default_rng(7)
    for _ in range(10):
        g = random_graph(rng, 7)
        for node in list(g.nodes.values()):
            g.nodes[node.name] = type(node)(node.name, node.cost, 1.0, node.requires, node.kind)
        times = [simulate_schedule(g, k, n_runs=1, seed=0)[0] for k in range(1, 8)]
        assert times[-1] == pytest.approx(critical_path(g)[1])
        assert times[0] >= times[-1] - 1e-12


@pytest.mark.parametrize("kwargs, words", [(dict(workers=0, n_runs=1, seed=0), "workers"),
                                           (dict(workers=1, n_runs=0, seed=0), "n_runs"),
                                           (dict(workers=1, n_runs=1, seed=-1), "seed")])
def test_simulate_schedule_validates(kwargs, words):
    g = Graph().add("a", cost=1, p_success=0.5).set_goal("a")
    with pytest.raises(ValueError, match=words):
        simulate_schedule(g, kwargs.pop("workers"), **kwargs)


# ----------------------------------------------------------------------------- value of information

def evsi_by_bayes(prior, likelihood, payoffs) -> float:
    """The textbook way: a posterior per observation, its best action, weighted by P(o)."""
    now = max(sum(prior[s] * payoffs[a][s] for s in range(len(prior))) for a in range(len(payoffs)))
    later = 0.0
    for o in range(len(likelihood[0])):
        p_o = sum(prior[s] * likelihood[s][o] for s in range(len(prior)))
        if p_o == 0:
            continue
        post = [prior[s] * likelihood[s][o] / p_o for s in range(len(prior))]
        later += p_o * max(sum(post[s] * payoffs[a][s] for s in range(len(prior))) for a in range(len(payoffs)))
    return later - now


def test_value_of_information_against_direct_sums():
    rng = np.random.default_rng(8)
    for _ in range(200):
        S, O, A = (int(k) for k in rng.integers(1, 6, size=3))
        prior = rng.dirichlet(np.ones(S))
        likelihood = rng.dirichlet(np.ones(O), size=S)
        if O > 1 and rng.random() < 0.2:  # sometimes an observation that never happens
            likelihood[:, rng.integers(O)] = 0.0
            likelihood /= likelihood.sum(axis=1, keepdims=True)
        payoffs = rng.normal(0, 2, size=(A, S))
        v = value_of_information(prior, likelihood, payoffs)
        assert v == pytest.approx(evsi_by_bayes(prior, likelihood, payoffs), abs=1e-12)
        assert v >= 0


def test_perfect_and_useless_tests():
    prior, payoffs = np.array([0.3, 0.7]), np.array([[10.0, -5.0], [0.0, 0.0]])
    evpi = prior @ payoffs.max(axis=0) - (payoffs @ prior).max()
    assert value_of_information(prior, np.eye(2), payoffs) == pytest.approx(evpi)
    assert value_of_information(prior, np.full((2, 3), 1 / 3), payoffs) == 0.0
    # a test that cannot change the decision is worth exactly nothing (no rounding residue)
    assert value_of_information([0.1, 0.4, 0.3, 0.2], [[0.3, 0.7]] * 4, np.arange(12.0).reshape(3, 4)) == 0.0


@pytest.mark.parametrize("prior, likelihood, payoffs, words", [
    ([0.5, 0.6], np.eye(2), np.ones((2, 2)), "prior must be non-negative and sum to 1"),
    ([0.5, 0.5], np.eye(3), np.ones((2, 2)), "likelihood must have one row per state"),
    ([0.5, 0.5], [[0.5, 0.6], [0.5, 0.5]], np.ones((2, 2)), "likelihood rows"),
    ([0.5, 0.5], np.eye(2), np.ones((2, 3)), "payoffs must have one column per state"),
    ([0.5, 0.5], np.eye(2), [[1.0, float("nan")], [0, 0]], "payoffs contains NaN"),
    ("ab", np.eye(2), np.ones((2, 2)), "prior must be an array of numbers"),
])
def test_value_of_information_validates(prior, likelihood, payoffs, words):
    with pytest.raises(ValueError, match=words):
        value_of_information(prior, likelihood, payoffs)


# ----------------------------------------------------------------------------- taste

@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100, 1000, 20000])
def test_expected_max_against_the_density_integrated_on_a_grid(n):
    x = np.linspace(-9, 9, 400_001)
    density = n * stats.norm.pdf(x) * np.exp((n - 1) * stats.norm.logcdf(x))
    assert expected_max_normal(n) == pytest.approx(np.trapezoid(x * density, x), abs=1e-9)


def test_expected_max_closed_forms():
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-12)
    assert expected_max_normal(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)), abs=1e-12)


def test_taste_value_against_a_simulation():
    rng = np.random.default_rng(9)
    rho, n, trials = 0.6, 10, 200_000
    V = rng.standard_normal((trials, n))
    X = rho * V + math.sqrt(1 - rho**2) * rng.standard_normal((trials, n))
    chosen = V[np.arange(trials), X.argmax(axis=1)]
    assert abs(chosen.mean() - taste_value(rho, n)) < 4 * chosen.std() / math.sqrt(trials)


@pytest.mark.parametrize("rho, n, words", [(1.5, 3, "rho"), (0.5, 0, "n must"), (0.5, 2.5, "n must"),
                                           (True, 3, "rho")])
def test_taste_value_validates(rho, n, words):
    with pytest.raises(ValueError, match=words):
        taste_value(rho, n)
