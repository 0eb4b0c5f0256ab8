"""The learner's real path: every learner notebook run in JupyterLab in a real (headless) browser.

For each notebooks/NN_*.ipynb (found by glob, so new labs are covered without editing this file) the
test copies the notebook into the server's temporary folder with its FIRST exercise answered from
solutions/ (as a learner who did one exercise), opens it, runs all cells, waits for the kernel to go
idle and checks: no error output; every widget renders, every control is visible and moving it
changes its cell's output; every figure is a decoded image; the progress widget at the end shows
exactly the checkers' verdicts of this run (one passed, the rest not attempted). nbval already runs
both copies without a browser; this layer catches what only a browser shows.

Two self-tests prove that the harness can fail: a tiny notebook with a live slider and dropdown must
pass, and one with a dead slider and an error must be reported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from labdriver import run_notebook

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = float(os.environ.get("LABUTILS_BROWSER_TIMEOUT", 600))  # per notebook; each is sized to ≤ 120 s


def solve_first_exercise(learner, solution):
    """The learner copy with its first exercise replaced by the solution's code; also its exercise label.

    Cells pair up one to one once the solution's `solution-only` cells are dropped (that is how
    labutils.authoring builds the copy). Returns (notebook, None) when nothing pairs up."""
    from labutils.authoring import BEGIN, END, SOLUTION_ONLY_TAG

    sol_cells = [c for c in solution.cells if SOLUTION_ONLY_TAG not in c.get("metadata", {}).get("tags", [])]
    if len(sol_cells) != len(learner.cells):
        return learner, None
    for mine, sol in zip(learner.cells, sol_cells):
        if mine.cell_type == "code" and "raise NotImplementedError(" in mine.source and BEGIN in sol.source:
            label = sol.source.split(BEGIN, 1)[1].split("\n", 1)[0].strip(" :—-")
            mine.source = "\n".join(line for line in sol.source.split("\n")
                                    if not line.strip().startswith((BEGIN, END, "# NBVAL_")))
            return learner, label
    return learner, None


def _images_in(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_learner_notebook_in_jupyterlab(path, lab, page, screenshots):
    learner = nbformat.read(path, as_version=4)
    solution_path = ROOT / "solutions" / path.name
    solution = nbformat.read(solution_path, as_version=4) if solution_path.exists() else None
    solved = None
    if solution is not None:
        learner, solved = solve_first_exercise(learner, solution)
    nbformat.write(learner, lab.root / "notebooks" / path.name)

    problems = run_notebook(page, lab, f"notebooks/{path.name}", timeout_s=TIMEOUT_S,
                            min_images=1 if solution is not None and _images_in(solution) else 0,
                            screenshot=screenshots / f"{path.stem}.png")
    if solved:  # the answered exercise must pass in the browser too (and the widget then shows it, see above)
        number = re.match(r"Exercise (\S+?):?\s", solved + " ")
        saved = lab.api("GET", f"/api/contents/notebooks/{path.name}?content=1&type=notebook")["content"]
        text = "".join(o.get("text", "") for c in saved["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
        if number and not re.search(rf"Exercise {re.escape(number[1])} · \S+ — all \d+ cases pass", text):
            problems.append(f"the answered exercise ({solved}) did not pass its check in the browser")
    assert not problems, f"{path.name} in JupyterLab:\n  " + "\n  ".join(problems) + \
        f"\n(screenshot: {screenshots / (path.stem + '.png')})"


# ----------------------------------------------------------------------------- the harness can fail

def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


_PLOT = """\
import matplotlib.pyplot as plt
import ipywidgets as widgets

def draw(n=2, colour="C0"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(10), [i ** n for i in range(10)], color=colour)
    ax.set_xlabel("x"); ax.set_ylabel(f"x^{n}")
    plt.show()
"""


def test_harness_passes_a_live_widget_notebook(lab, page, screenshots):
    nb = _notebook([
        _PLOT,
        "draw()",
        'widgets.interact(draw, n=widgets.IntSlider(value=2, min=1, max=4), colour=widgets.Dropdown(options=["C0", "C1"]));',
        'from labutils.checks import progress_widget\n\nprogress_widget("selftest_live")',
    ])
    nbformat.write(nb, lab.root / "notebooks" / "selftest_live.ipynb")
    problems = run_notebook(page, lab, "notebooks/selftest_live.ipynb", timeout_s=120, min_images=1,
                            control_timeout_s=30, screenshot=screenshots / "selftest_live.png")
    assert problems == []


def test_harness_reports_a_dead_widget_and_an_error(lab, page):
    nb = _notebook([
        _PLOT,
        'widgets.interact(lambda x: print("always the same"), x=widgets.IntSlider(value=1, min=0, max=3));',
        'raise ValueError("a cell that fails")',
        'from labutils.checks import progress_widget\n\nprogress_widget("selftest_dead")',
    ])
    nbformat.write(nb, lab.root / "notebooks" / "selftest_dead.ipynb")
    problems = "\n".join(run_notebook(page, lab, "notebooks/selftest_dead.ipynb", timeout_s=120, control_timeout_s=5))
    assert "ValueError: a cell that fails" in problems
    assert "not every code cell ran" in problems
    assert "widget-slider" in problems and "did not change its cell's output" in problems
    assert "progress widget at the end did not render" in problems
