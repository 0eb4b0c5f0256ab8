"""`python -m labutils warmup` fills the training cache; a second run trains nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labutils.warmup import cache_entries, find_notebooks

ROOT = Path(__file__).resolve().parent.parent


def _warmup(env, *names):
    return subprocess.run([sys.executable, "-m", "labutils", "warmup", *names], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _tiny_notebook(path):
    """A notebook shaped like a lab, seconds to run: one cached training run and one passing checker."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from labutils.data import HMMLanguage\nfrom labutils.model import GPTConfig\nfrom labutils.train import train_lm\n"
            "run = train_lm(GPTConfig(8, 16, 8, 1, 1), HMMLanguage.random(4, 8, seed=0), tokens=4 * 16 * 20, batch_size=4,\n"
            "               lr=1e-3, seed=0, eval_sequences=16, n_evals=2, return_state=True)"),
        nbformat.v4.new_code_cell("from labutils.start_here import check_matmul_flops\n\n"
                                  "check_matmul_flops(lambda m, k, n: 2 * m * k * n)"),
    ]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_warmup_fills_the_cache_then_is_a_no_op(tmp_path):
    """Warms a tiny lab-shaped notebook (00_start_here would take ≈40 s here for the same checks)."""
    cache = tmp_path / "cache"
    progress = tmp_path / "progress.json"
    env = dict(os.environ, LABUTILS_CACHE_DIR=str(cache), LABUTILS_PROGRESS_FILE=str(progress))
    (tmp_path / "solutions").mkdir()
    notebook = tmp_path / "solutions" / "00_tiny.ipynb"
    _tiny_notebook(notebook)
    before = notebook.read_bytes()

    first = _warmup(env, str(notebook))
    assert first.returncode == 0, first.stdout + first.stderr
    entries = {p.name: p.stat().st_mtime_ns for p in cache.glob("run-*.pt")}
    assert entries, "the first warm-up should have cached at least one training run"
    assert f"{len(entries)} new cache entr" in first.stdout and str(cache) in first.stdout
    assert f"{len(entries)} run(s)" in first.stdout and ("kB" in first.stdout or "MB" in first.stdout)

    second = _warmup(env, str(notebook))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new cache entries  (already warm)" in second.stdout
    # nothing retrained: the same entries, none rewritten
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("run-*.pt")} == entries

    assert notebook.read_bytes() == before, "warm-up must run a copy, never the solution notebook itself"
    assert not progress.exists() or "00_start_here" not in progress.read_text(), "warm-up must not mark exercises done"


def test_a_number_names_a_solution_notebook():
    assert [p.name for p in find_notebooks(["00"])] == ["00_start_here.ipynb"]
    assert find_notebooks(["00_start_here"]) == find_notebooks(["00"])


def test_unknown_notebook_is_a_clear_error(tmp_path):
    env = dict(os.environ, LABUTILS_CACHE_DIR=str(tmp_path / "cache"))
    done = _warmup(env, "99_nothing")
    assert done.returncode == 2 and "no single solution notebook matches '99_nothing'" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match="known:"):
        find_notebooks(["nope"])


def test_cache_entries_ignores_temporary_files(tmp_path):
    (tmp_path / "run-abc.pt").write_bytes(b"x" * 10)
    (tmp_path / ".tmp-123.pt").write_bytes(b"y")
    assert cache_entries(tmp_path) == {"run-abc.pt": 10}
    assert cache_entries(tmp_path / "missing") == {}
