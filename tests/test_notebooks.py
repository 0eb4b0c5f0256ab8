"""The notebook frame: every notebook opens with the same setup cell and ends with its progress widget."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labutils.authoring import SETUP_CELL

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_frame(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.strip() == SETUP_CELL.strip(), "first code cell must be labutils.authoring.SETUP_CELL"
    assert f'progress_widget("{path.stem}")' in code[-1].source, "last code cell shows this notebook's progress"
    for c in code:
        for out in c.get("outputs", []):
            assert out.output_type != "error", f"stored error output in {path.name}"


def test_setup_cell_gives_advice_without_labutils(tmp_path):
    """A fresh machine without the course installed sees one line of advice, not a traceback."""
    script = "import sys\nsys.modules['labutils'] = None  # makes `import labutils` raise ImportError\n" + SETUP_CELL
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "requirements.txt").write_text("")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "notebooks", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "-m pip install -r" in lines[0] and "restart the kernel" in lines[0]
    assert str(tmp_path / "requirements.txt") in lines[0] and sys.executable in lines[0]


LEARNER = ROOT / "notebooks"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_learner_copy_structure(path):
    """The learner copy (executed by the browser layer, not by nbval): cleared, one stub per solution region."""
    copy = LEARNER / path.name
    assert copy.exists(), f"no learner copy of {path.name}: run `python -m labutils.authoring build`"
    learner = nbformat.read(copy, as_version=4)
    solution = nbformat.read(path, as_version=4)
    code = [c for c in learner.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs must be cleared"
    regions = sum(c.source.count("### BEGIN SOLUTION") for c in solution.cells if c.cell_type == "code")
    stubs = sum(c.source.count("raise NotImplementedError(") for c in code)
    assert stubs >= regions, f"{regions} solution regions but {stubs} stubs"
    checks_called = sum("check_" in c.source for c in code)
    assert checks_called >= regions, "every exercise is followed by its checker"
