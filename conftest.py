"""Test-wide setup: one cold training cache and one progress record for the whole run, and the schedule.

Tests never touch a learner's training cache or progress record: both are pointed at a fresh temporary
folder before any test or notebook kernel starts (nbval's kernels inherit this environment). Under
pytest-xdist the controller makes the folder and its workers inherit it, so a notebook that trained a
run saves every later test on either worker the training; cache writes are atomic, so workers can share.

The schedule (``--dist loadgroup``): every notebook's cells stay together on one worker; the browser
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
# Sent first, longest first (seconds, cold, idle 2-core machine): the browser layer, then the solutions.
_ORDER = ["browser", "nb-02_distillation", "nb-05_factuality", "measures-machine", "nb-01_scaling_laws",
          "nb-06_research_graph", "nb-00_start_here"]


def _group(item) -> str | None:
    path = str(getattr(item, "path", item.fspath))
    if path.endswith(".ipynb"):
        stem = os.path.basename(path)[: -len(".ipynb")]
        return "measures-machine" if stem in MEASURING_NOTEBOOKS else f"nb-{stem}"
    if item.get_closest_marker("browser") is not None:
        return "browser"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist turns xdist_group marks into work units
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    rank = {g: i for i, g in enumerate(_ORDER)}
    items.sort(key=lambda it: rank.get(_group(it), len(_ORDER)))  # stable: cells keep their order


def pytest_unconfigure(config):
    if _OWNER and not hasattr(config, "workerinput"):
        shutil.rmtree(_TMP, ignore_errors=True)
        os.environ.pop("LABUTILS_TEST_TMP", None)
