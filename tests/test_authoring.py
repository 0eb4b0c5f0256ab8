"""The builder: markers become stubs at the right indentation, outputs go, edited copies are protected."""

from pathlib import Path

import nbformat
import pytest

from labutils import authoring
from labutils.authoring import AuthoringError, build, learner_copy, out_of_date, stub_source

ROOT = Path(__file__).resolve().parent.parent

SOURCE = '''def f(x):
    """Square x."""
    ### BEGIN SOLUTION Exercise 1.2: return x squared
    y = x * x
    # a comment does not count
    return y
    ### END SOLUTION

print(f)'''


def test_stub_keeps_indentation_and_counts_lines():
    out = stub_source(SOURCE)
    assert "    raise NotImplementedError('Exercise 1.2: return x squared')" in out
    assert "    # YOUR CODE HERE (about 2 lines)" in out
    assert "x * x" not in out and out.endswith("print(f)")
    compile(out, "<stub>", "exec")


def test_unbalanced_markers_are_errors():
    with pytest.raises(AuthoringError, match="without"):
        stub_source("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(AuthoringError, match="without"):
        stub_source("x = 1\n### END SOLUTION")


def _tiny_course(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    code = nbformat.v4.new_code_cell(SOURCE)
    code.outputs = [nbformat.v4.new_output("stream", text="hello")]
    code.execution_count = 3
    secret = nbformat.v4.new_code_cell("print('only in solutions')")
    secret.metadata["tags"] = ["solution-only"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), code, secret]
    (tmp_path / "solutions").mkdir()
    nbformat.write(nb, tmp_path / "solutions" / "07_demo.ipynb")
    return tmp_path / "notebooks" / "07_demo.ipynb"


def test_build_check_round_trip(tmp_path):
    dst = _tiny_course(tmp_path)
    assert out_of_date(tmp_path) == [dst]
    assert build(tmp_path) == [dst]
    assert out_of_date(tmp_path) == []
    nb = nbformat.read(dst, as_version=4)
    assert "widgets" not in nb.metadata  # widget state of the solution's run is not copied
    assert len(nb.cells) == 2  # solution-only dropped
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None
    assert "NotImplementedError" in nb.cells[1].source
    assert build(tmp_path) == []  # nothing to do the second time


def test_refuses_to_overwrite_an_edited_copy(tmp_path):
    dst = _tiny_course(tmp_path)
    build(tmp_path)
    nb = nbformat.read(dst, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("raise NotImplementedError", "return x * x  #")
    nbformat.write(nb, dst)
    learner_text = dst.read_text()
    src = tmp_path / "solutions" / "07_demo.ipynb"
    sol = nbformat.read(src, as_version=4)
    sol.cells[0].source = "# New title"
    nbformat.write(sol, src)
    with pytest.raises(AuthoringError, match="--force"):
        build(tmp_path)
    assert dst.read_text() == learner_text  # untouched
    assert authoring.main(["--root", str(tmp_path), "build"]) == 2
    build(tmp_path, force=True)
    assert dst.with_suffix(".ipynb.bak").read_text() == learner_text  # kept, not lost
    assert out_of_date(tmp_path) == []


def test_running_a_copy_is_not_editing_it(tmp_path):
    dst = _tiny_course(tmp_path)
    build(tmp_path)
    nb = nbformat.read(dst, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="ran it")]
    nbformat.write(nb, dst)
    assert build(tmp_path) == [dst]  # outputs only: safe to regenerate


def test_repository_notebooks_are_in_sync():
    """notebooks/ must be exactly what `python -m labutils.authoring build` makes from solutions/."""
    assert authoring.main(["check"]) == 0, "run `python -m labutils.authoring build`"


def test_solution_cells_never_leak():
    for src in sorted((ROOT / "solutions").glob("*.ipynb")):
        copy = learner_copy(nbformat.read(src, as_version=4), src.name)
        text = "\n".join(c.source for c in copy.cells)
        assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text, src.name
