"""Lab 06: research as a stochastic dependency graph — plans, parallel compute, the value of an experiment.

Public names (the lab's contract): ``Graph`` (``.add``, ``.set_goal``, ``.success_probability``,
``.expected_cost``), ``optimal_chain_order``, ``simulate_schedule``, ``critical_path``,
``value_of_information``, ``taste_value``; and the helpers the notebook uses: ``chain_cost``,
``expected_max_normal``, ``best_order``, ``greedy_order``, ``linear_extensions``, ``draw_graph``.
Checkers live in ``labutils.research.checks``.
"""

from labutils.research.decisions import expected_max_normal, taste_value, value_of_information
from labutils.research.draw import draw_graph
from labutils.research.graph import Graph, Node
from labutils.research.plan import best_order, greedy_order, linear_extensions
from labutils.research.schedule import chain_cost, critical_path, optimal_chain_order, simulate_schedule

__all__ = ["Graph", "Node", "optimal_chain_order", "simulate_schedule", "critical_path", "value_of_information",
           "taste_value", "chain_cost", "expected_max_normal", "best_order", "greedy_order", "linear_extensions",
           "draw_graph"]
