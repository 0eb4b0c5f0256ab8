"""Lab 06's checkers: the reference passes, and wrong answers learners really write each fail, naming the case."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from labutils.checks import CheckFailed
from labutils.research import Graph, optimal_chain_order, taste_value, value_of_information
from labutils.research.checks import check_best_of_n, check_chain_order, check_evsi, check_plan_value


def outcomes(graph):
    """Every outcome {node: succeeded?} with its probability."""
    names = list(graph.nodes)
    for bits in itertools.product([True, False], repeat=len(names)):
        outcome = dict(zip(names, bits))
        yield outcome, math.prod(graph.nodes[v].p_success if ok else 1 - graph.nodes[v].p_success
                                 for v, ok in outcome.items())


def rejects(check, wrong, capsys) -> str:
    with pytest.raises(CheckFailed):
        check(wrong)
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- 6.1 plan_value

def plan_value(graph, order):  # the reference answer: enumerate outcomes, weight, execute
    p = c = 0.0
    for outcome, w in outcomes(graph):
        reached, spent = graph.run(order, outcome)
        p, c = p + w * reached, c + w * spent
    return p, c


def chain_formula(graph, order):  # treats any graph as a chain of must-pass steps
    probs = [graph.nodes[v].p_success for v in order]
    reach = np.concatenate([[1.0], np.cumprod(probs)[:-1]])
    return math.prod(probs), sum(graph.nodes[v].cost * r for v, r in zip(order, reach))


def pays_for_everything(graph, order):  # right P(goal), but every node in the order is paid for
    return plan_value(graph, order)[0], sum(graph.nodes[v].cost for v in order)


def uniform_weights(graph, order):  # averages the outcomes as if each were equally likely
    n, p, c = 0, 0.0, 0.0
    for outcome, _ in outcomes(graph):
        reached, spent = graph.run(order, outcome)
        n, p, c = n + 1, p + reached, c + spent
    return p / n, c / n


def no_failure_factor(graph, order):  # weights by ∏ p of the successes only, forgetting (1 − p) of the failures
    p = c = 0.0
    for outcome, _ in outcomes(graph):
        w = math.prod(graph.nodes[v].p_success for v, ok in outcome.items() if ok)
        reached, spent = graph.run(order, outcome)
        p, c = p + w * reached, c + w * spent
    return p, c


def swapped(graph, order):  # returns (expected cost, P(goal))
    return plan_value(graph, order)[::-1]


def asks_the_reference(graph, order):  # uses the graph's own exact answer instead of computing it
    return graph.success_probability(order), graph.expected_cost(order)


def only_probability(graph, order):  # returns a single number
    return plan_value(graph, order)[0]


@pytest.mark.parametrize("wrong, case, words", [
    (chain_formula, "case 2 (two routes into an OR node", "a chain's formula"),
    (pays_for_everything, "case 1 (a chain", "every node in the order was paid for"),
    (uniform_weights, "case 1 (a chain", "weighted equally"),
    (no_failure_factor, "case 1 (a chain", "miss a factor (1 − p)"),
    (swapped, "case 1 (a chain", "the pair is swapped"),
    (asks_the_reference, "case 1 (a chain", "computes P(goal) itself"),
    (only_probability, "case 1 (a chain", "expected a pair (P(goal), expected cost), got float"),
])
def test_plan_value_rejects(wrong, case, words, capsys):
    out = rejects(check_plan_value, wrong, capsys)
    assert case in out and words in out, out
    assert "a: c=1 p=0.8; r1←a: c=3 p=0.5" in out or "a: c=1 p=0.9; b←a: c=2 p=0.5" in out  # every parameter


def copy_graph(graph, **change):
    """The same graph with each node's fields replaced by change[field](node)."""
    out = Graph()
    for v, node in graph.nodes.items():
        fields = dict(cost=node.cost, p_success=node.p_success, requires=node.requires, kind=node.kind)
        out.add(v, **(fields | {k: f(node) for k, f in change.items()}))
    return out.set_goal(graph.goal)


def live_nodes(graph, ok, done):
    """Nodes that succeeded, or have not run yet and may still get their prerequisites."""
    live = set()
    for v in graph.validate():
        node = graph.nodes[v]
        met = [r in live for r in node.requires]
        if v in ok or (v not in done and (all(met) if node.kind == "and" else any(met))):
            live.add(v)
    return live


def own_run(graph, order, outcome):
    """A learner's own executor: stops once the goal is decided, skips an OR node's later routes, but still pays
    for the inputs of a route that has already died."""
    ok, done, spent = set(), set(), 0.0
    needed = graph.ancestors(graph.goal) | {graph.goal}
    for v in order:
        live = live_nodes(graph, ok, done)
        if graph.goal in ok or graph.goal not in live:
            break
        done.add(v)
        open_ = lambda w: graph.nodes[w].kind == "and" or not any(r in ok for r in graph.nodes[w].requires)
        if v in live and (v == graph.goal or any(v in graph.nodes[w].requires and open_(w) for w in needed - ok)):
            spent += graph.nodes[v].cost
            ok |= {v} if outcome[v] else set()
    return graph.goal in ok, spent


def pays_inputs_of_dead_routes(graph, order):  # its own executor keeps feeding a route whose other input failed
    p = c = 0.0
    for outcome, w in outcomes(graph):
        reached, spent = own_run(graph, order, outcome)
        p, c = p + w * reached, c + w * spent
    return p, c


def or_as_and(graph, order):  # every node waits for all of its prerequisites, OR nodes too
    return plan_value(copy_graph(graph, kind=lambda node: "and"), order)


def sure_steps_are_free(graph, order):  # a step with p = 1 "cannot change the outcome", so it is not paid for
    return plan_value(copy_graph(graph, cost=lambda node: 0.0 if node.p_success == 1 else node.cost), order)


def doomed_steps_are_free(graph, order):  # a step with p = 0 is skipped at no cost, as if it could not run
    return plan_value(copy_graph(graph, cost=lambda node: 0.0 if node.p_success == 0 else node.cost), order)


def keeps_going_after_goal(graph, order):  # once the goal succeeded, still pays for the nodes listed after it
    after = order[order.index(graph.goal) + 1:]
    p = c = 0.0
    for outcome, w in outcomes(graph):
        reached, spent = graph.run(order, outcome)
        p, c = p + w * reached, c + w * (spent + reached * sum(graph.nodes[v].cost for v in after))
    return p, c


@pytest.mark.parametrize("wrong, case, words", [
    (pays_inputs_of_dead_routes, "case 6 (a route whose first input failed, and a node after the goal", "got − expected"),
    (or_as_and, "case 2 (two routes into an OR node", "got − expected"),
    (sure_steps_are_free, "case 3 (an unneeded node first, a sure step", "expected cost"),
    (doomed_steps_are_free, "case 3 (an unneeded node first, a sure step, a route that always fails", "expected cost"),
    (keeps_going_after_goal, "case 6 (a route whose first input failed, and a node after the goal", "expected cost"),
])
def test_plan_value_rejects_executions_that_break_a_rule(wrong, case, words, capsys):
    out = rejects(check_plan_value, wrong, capsys)
    assert case in out and words in out, out


def test_own_executor_passes_all_but_the_dead_route_case(capsys):  # so case 6 is what catches it
    with pytest.raises(CheckFailed):
        check_plan_value(pays_inputs_of_dead_routes)
    out = capsys.readouterr().out
    assert "6 cases" in out and out.count("✗ case") == 1, out


def test_plan_value_failure_prints_expected_and_got_with_their_difference(capsys):
    out = rejects(check_plan_value, pays_for_everything, capsys)
    assert "expected cost: expected 3.25, got 4 (got − expected = +0.75" in out, out


# ----------------------------------------------------------------------------- 6.2 chain_order

def chain_order(costs, p_success):  # the reference answer
    return optimal_chain_order(costs, p_success)


def cheapest_first(costs, p_success):  # ignores how likely each step is to fail
    return sorted(range(len(costs)), key=lambda i: costs[i])


def most_likely_first(costs, p_success):  # "most important first": the safest steps first
    return sorted(range(len(costs)), key=lambda i: -p_success[i])


def riskiest_first(costs, p_success):  # ignores what each step costs
    return sorted(range(len(costs)), key=lambda i: p_success[i])


def satisficing_rule(costs, p_success):  # c/p: the rule for stopping at the first success, not the first failure
    return sorted(range(len(costs)), key=lambda i: costs[i] / p_success[i] if p_success[i] else math.inf)


def reversed_key(costs, p_success):  # the right key, decreasing
    return sorted(range(len(costs)), key=lambda i: -(costs[i] / (1 - p_success[i]) if p_success[i] < 1 else math.inf))


def ranks_not_order(costs, p_success):  # argsort of argsort: each step's position, not the running order
    key = [c / (1 - p) if p < 1 else math.inf for c, p in zip(costs, p_success)]
    return list(np.argsort(np.argsort(key, kind="stable"), kind="stable"))


def divides_by_zero(costs, p_success):  # c / (1 − p) with no care for a step that never fails
    return sorted(range(len(costs)), key=lambda i: costs[i] / (1 - p_success[i]))


def nan_key(costs, p_success):  # numpy division: a free step that never fails gets the key 0/0 = nan, which breaks sort
    with np.errstate(divide="ignore", invalid="ignore"):
        return sorted(range(len(costs)), key=lambda i: np.float64(costs[i]) / (1 - p_success[i]))


def forgets_return(costs, p_success):  # sorts in place and returns nothing
    sorted(range(len(costs)), key=lambda i: costs[i] / (1 - p_success[i]) if p_success[i] < 1 else math.inf)


def returns_costs(costs, p_success):  # returns the sorted costs instead of indices
    return sorted(costs)


@pytest.mark.parametrize("wrong, case, words", [
    (cheapest_first, "case 2 (costs=[1, 2, 10], p_success=[0.99, 0.5, 0.1])", "cheapest first"),
    (most_likely_first, "case 1 (costs=[10, 1, 2], p_success=[0.5, 0.9, 0.2])", "most likely to pass first"),
    (riskiest_first, "case 4 (costs=[5, 1, 4, 2, 3]", "riskiest first"),
    (satisficing_rule, "case 1 (costs=[10, 1, 2]", "opposite problem"),
    (reversed_key, "case 1 (costs=[10, 1, 2]", "the wrong way round"),
    (ranks_not_order, "case 4 (costs=[5, 1, 4, 2, 3]", "ranks"),
    (divides_by_zero, "case 5 (costs=[0, 4, 1, 2, 6, 1], p_success=[0.5, 1.0", "raised ZeroDivisionError"),
    (nan_key, "case 7 (costs=[2, 0, 3, 1, 2, 0], p_success=[0.0, 1.0, 0.5, 0.75, 0.0, 0.4])", "got − expected"),
    (forgets_return, "case 1 (costs=[10, 1, 2]", "forget to `return`"),
    (returns_costs, "case 1 (costs=[10, 1, 2]", "permutation of the indices"),
])
def test_chain_order_rejects(wrong, case, words, capsys):
    out = rejects(check_chain_order, wrong, capsys)
    assert case in out and words in out, out


def test_chain_order_failure_names_the_best_order_and_the_difference(capsys):
    out = rejects(check_chain_order, cheapest_first, capsys)
    assert "expected cost of your order [1, 2, 0]: expected 4, got 4.6 (got − expected = +0.6" in out, out
    assert "the best order is [2, 1, 0]" in out, out


# ----------------------------------------------------------------------------- 6.3 evsi

def evsi(prior, likelihood, payoffs):  # the reference answer
    return value_of_information(prior, likelihood, payoffs)


def no_subtraction(prior, likelihood, payoffs):  # the value of deciding later, not its gain over deciding now
    return float(np.sum(np.max(payoffs @ (prior[:, None] * likelihood), axis=0)))


def max_outside(prior, likelihood, payoffs):  # max_a Σ_o … − max_a …: always 0
    joint = prior[:, None] * likelihood
    return float(np.max(np.sum(payoffs @ joint, axis=1)) - np.max(payoffs @ prior))


def perfect_information(prior, likelihood, payoffs):  # ignores the likelihood, as if the test showed the state
    return float(prior @ payoffs.max(axis=0) - np.max(payoffs @ prior))


def divides_by_p_o(prior, likelihood, payoffs):  # normalises every posterior, even when P(o) = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = prior @ likelihood
        post = prior[:, None] * likelihood / p_o
        return float(np.sum(p_o * np.max(payoffs @ post, axis=0)) - np.max(payoffs @ prior))


def ignores_prior(prior, likelihood, payoffs):  # posterior ∝ P(o | s) alone
    p_o = prior @ likelihood
    post = likelihood / np.maximum(likelihood.sum(axis=0), 1e-300)
    return float(np.sum(p_o * np.max(payoffs @ post, axis=0)) - np.max(payoffs @ prior))


def unweighted_observations(prior, likelihood, payoffs):  # averages the posteriors' values without P(o)
    joint = prior[:, None] * likelihood
    p_o = joint.sum(axis=0)
    seen = p_o > 0
    values = np.max(payoffs @ (joint[:, seen] / p_o[seen]), axis=0)
    return float(values.mean() - np.max(payoffs @ prior))


def rows_as_observations(prior, likelihood, payoffs):  # reads row o of the likelihood as P(o | s) across the states
    value = 0.0
    for o in range(len(likelihood)):
        value += np.max(payoffs @ (prior * likelihood[o]))
    return float(value - np.max(payoffs @ prior))


@pytest.mark.parametrize("wrong, case, words", [
    (rows_as_observations, "case 6 (a lopsided test (rows and columns differ)", "got − expected"),
    (no_subtraction, "case 3 (a noisy test, 3 states", "the value of deciding now must be subtracted"),
    (max_outside, "case 1 (a perfect test", "outside the average over observations"),
    (perfect_information, "case 2 (a useless test", "value of perfect information"),
    (divides_by_p_o, "case 4 (an observation that never happens", "P(o) = 0 was divided by"),
    (ignores_prior, "case 3 (a noisy test", "expected 0.3"),
    (unweighted_observations, "case 3 (a noisy test", "got − expected"),
])
def test_evsi_rejects(wrong, case, words, capsys):
    out = rejects(check_evsi, wrong, capsys)
    assert case in out and words in out, out
    assert "likelihood=[[1, 0], [0, 1]], payoffs=[[10, -5], [0, 0]]" in out or "case 1" not in case


# ----------------------------------------------------------------------------- 6.4 best_of_n

def best_of_n(rho, n):  # the reference answer, integrated the way a learner would
    e_max, _ = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -np.inf, np.inf)
    return rho * e_max


def rho_squared(rho, n):  # the share of variance explained instead of the correlation
    return rho**2 * taste_value(1.0, n)


def no_rho(rho, n):  # the oracle's value, whatever the taste
    return taste_value(1.0, n)


def asymptotic(rho, n):  # the large-n growth of E[max] taken as its value
    return rho * math.sqrt(2 * math.log(n))


def exponent_n(rho, n):  # density n·φ·Φ^n: the best of n + 1
    return rho * integrate.quad(lambda x: x * (n + 1) * stats.norm.pdf(x) * stats.norm.cdf(x) ** n, -np.inf, np.inf)[0]


def monte_carlo(rho, n):  # a simulation: close, but not exact
    rng = np.random.default_rng(0)
    V = rng.standard_normal((20_000, n))
    X = rho * V + math.sqrt(1 - rho**2) * rng.standard_normal((20_000, n))
    return float(V[np.arange(20_000), X.argmax(axis=1)].mean())


def quantile_guess(rho, n):  # the n/(n+1) quantile as "the typical maximum"
    return rho * stats.norm.ppf(n / (n + 1))


def abs_rho(rho, n):  # takes the size of the correlation and drops its sign
    return abs(rho) * taste_value(1.0, n)


def returns_text(rho, n):  # a formatted string instead of a number
    return f"{taste_value(rho, n):.3f}"


@pytest.mark.parametrize("wrong, case, words", [
    (rho_squared, "case 3 (rho=0.6, n=10)", "share of variance"),
    (no_rho, "case 3 (rho=0.6, n=10)", "oracle"),
    (asymptotic, "case 2 (rho=1.0, n=2)", "only how E[max] grows"),
    (exponent_n, "case 1 (rho=1.0, n=1)", "best of n + 1"),
    (monte_carlo, "case 2 (rho=1.0, n=2)", "close but not exact"),
    (quantile_guess, "case 2 (rho=1.0, n=2)", "got − expected"),
    (returns_text, "case 1 (rho=1.0, n=1)", "expected a number"),
    (abs_rho, "case 7 (rho=-0.5, n=5)", "keep the sign of ρ"),
])
def test_best_of_n_rejects(wrong, case, words, capsys):
    out = rejects(check_best_of_n, wrong, capsys)
    assert case in out and words in out, out


# ----------------------------------------------------------------------------- the references, skips, garbage

def test_references_pass(capsys):
    check_plan_value(plan_value)
    check_chain_order(chain_order)
    check_evsi(evsi)
    check_best_of_n(best_of_n)
    assert capsys.readouterr().out.count("cases pass ✓") == 4


@pytest.mark.parametrize("check", [check_plan_value, check_chain_order, check_evsi, check_best_of_n])
def test_a_stub_is_not_attempted_and_does_not_raise(check, capsys):
    def stub(*args):
        raise NotImplementedError("Exercise 6.x: …")

    check(stub)
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("check", [check_plan_value, check_chain_order, check_evsi, check_best_of_n])
@pytest.mark.parametrize("garbage", [None, "a string", lambda *args: None, lambda *args: float("nan"),
                                     lambda *args: [1, "x"]])
def test_garbage_gets_plain_words_not_a_traceback(check, garbage, capsys):
    with pytest.raises(CheckFailed):
        check(garbage)
    out = capsys.readouterr().out
    assert "Traceback" not in out and "✗" in out or "expected a function" in out, out
