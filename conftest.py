"""Test-wide setup: one cold training cache and one progress record for the whole run, and the schedule.

Tests never touch a learner's training cache or progress record: both are pointed at a fresh temporary
folder before any test or notebook kernel starts (nbval's kernels inherit this environment). Under
pytest-xdist the controller makes the folder and its workers inherit it, so a notebook that trained a
run saves every later test on either worker the training; cache writes are atomic, so workers can share.

The schedule (``pytest_xdist_make_scheduler`` below): every notebook's cells stay together on one worker; the browser
layer (one JupyterLab server) stays on one worker; the notebooks that measure this machine (03's
roofline, 04's latencies) share one group so they never run beside each other. Long groups are sent
first, so the two workers finish close together.
"""

import os
import shutil
import tempfile

import pytest

if "LABUTILS_TEST_TMP" not in os.environ:  # the controller (or a plain run); xdist workers inherit it
    os.environ["LABUTILS_TEST_TMP"] = tempfile.mkdtemp(prefix="labutils-tests-")
    _OWNER = True
else:
    _OWNER = False
_TMP = os.environ["LABUTILS_TEST_TMP"]
os.environ["LABUTILS_CACHE_DIR"] = os.path.join(_TMP, "cache")
os.environ["LABUTILS_PROGRESS_FILE"] = os.path.join(_TMP, "progress.json")
os.environ.setdefault("MPLBACKEND", "Agg")

MEASURING_NOTEBOOKS = ("03_kernel_intuition", "04_moe_sharding")  # their timings must not share the CPU
# Sent first, longest first (cold, idle 2-core machine): the browser layer, then the solution notebooks.
_ORDER = ["browser", "nb-02_distillation", "nb-05_factuality", "measures-machine", "nb-01_scaling_laws",
          "nb-06_research_graph", "nb-00_start_here"]


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: it runs on one worker with the rest of its unit.

    A notebook's cells form one unit (they share a kernel); the browser layer is one (one JupyterLab);
    03 and 04 share one; any other test goes with its module.
    """
    path = nodeid.split("::", 1)[0]
    if path.endswith(".ipynb") or "::ipynb::" in nodeid:  # pytest may print a notebook's id either way
        stem = path.rsplit("/", 1)[-1].removesuffix(".ipynb")
        return "measures-machine" if stem in MEASURING_NOTEBOOKS else f"nb-{stem}"
    if path.startswith("tests/browser/"):
        return "browser"
    return path


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with the course's work units (xdist_group marks do not reach pytest 9's ids)."""
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return CourseScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Long units first (a stable sort keeps each notebook's cells in order), so both workers finish together."""
    rank = {g: i for i, g in enumerate(_ORDER)}
    items.sort(key=lambda it: rank.get(work_unit(it.nodeid), len(_ORDER)))


def pytest_unconfigure(config):
    if _OWNER and not hasattr(config, "workerinput"):
        shutil.rmtree(_TMP, ignore_errors=True)
        os.environ.pop("LABUTILS_TEST_TMP", None)
