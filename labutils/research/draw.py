"""Draw a research graph with matplotlib: prerequisites on the left, the goal on the right.

Each box shows the node's name, cost and success probability; an ``"or"`` node has a dashed border,
the goal a thick one. ``highlight`` (e.g. the critical path) is drawn in the accent colour.

    >>> from labutils.research import Graph
    >>> g = Graph().add("a", cost=1, p_success=0.5).add("goal", cost=2, p_success=0.9, requires=["a"])
    >>> ax = draw_graph(g.set_goal("goal"))
"""

from __future__ import annotations

from labutils.plotting import PALETTE, new_figure
from labutils.research.graph import Graph


def _layout(graph: Graph) -> dict[str, tuple[float, float]]:
    """Columns as late as possible (a node sits just left of its first dependant, so the goal's last
    prerequisites share its left neighbour column); within a column, ordered by where the prerequisites sit."""
    topo = graph.validate()
    children = graph.children()
    height = {}  # edges on the longest path from the node down to a sink
    for v in reversed(topo):
        height[v] = 1 + max((height[w] for w in children[v]), default=-1)
    top = max(height.values())
    column = {v: top - height[v] for v in topo}
    for v in topo:  # a node with no dependants other than ones far right: pull it next to them
        if children[v]:
            column[v] = min(column[w] for w in children[v]) - 1
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(column.values())):
        names = [v for v in topo if column[v] == c]
        bary = {v: sum(pos[r][1] for r in graph.nodes[v].requires) / len(graph.nodes[v].requires)
                if graph.nodes[v].requires else -1e9 for v in names}
        names.sort(key=lambda v: -bary[v])  # higher prerequisites first; roots (no prerequisites) last
        for i, v in enumerate(names):
            pos[v] = (float(c), (len(names) - 1) / 2 - i)  # centred column
    return pos


def draw_graph(graph: Graph, ax=None, *, highlight=(), title: str | None = None, unit: str = ""):
    """Draw the graph on ``ax`` (a new figure when None); return the axes."""
    pos = _layout(graph)
    if ax is None:
        n_cols = 1 + max(x for x, _ in pos.values())
        n_rows = max(sum(1 for x, _ in pos.values() if x == c) for c in range(int(n_cols)))
        _, ax = new_figure(width=max(4.0, 1.9 * n_cols), height=max(2.0, 1.0 * n_rows + 0.6))
    on = set(highlight)
    for v, node in graph.nodes.items():
        for r in node.requires:
            both = v in on and r in on
            ax.annotate("", xy=pos[v], xytext=pos[r],
                        arrowprops=dict(arrowstyle="-|>", color=PALETTE[3] if both else "#777777", lw=2 if both else 1,
                                        ls="--" if node.kind == "or" else "-", shrinkA=30, shrinkB=30))
    for v, node in graph.nodes.items():
        colour = PALETTE[3] if v in on else PALETTE[0]
        text = f"{'OR ' if node.kind == 'or' else ''}{v}\nc={node.cost:g}{unit}, p={node.p_success:g}"
        ax.text(*pos[v], text, ha="center", va="center", fontsize=8, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", fc="white", ec=colour, lw=2.5 if v == graph.goal else 1.2,
                          ls="--" if node.kind == "or" else "-"))
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_axis_off()
    ax.set_title(title or f"research graph (goal: {graph.goal}; dashed: OR)", fontsize=10)
    return ax
