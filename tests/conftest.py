"""Test-wide setup: tests never touch a learner's training cache or progress record.

Both locations are pointed at a fresh temporary folder before any test or notebook kernel starts
(nbval's kernels inherit this environment), so every run starts from a cold cache.
"""

import os
import shutil
import tempfile

_TMP = tempfile.mkdtemp(prefix="labutils-tests-")
os.environ["LABUTILS_CACHE_DIR"] = os.path.join(_TMP, "cache")
os.environ["LABUTILS_PROGRESS_FILE"] = os.path.join(_TMP, "progress.json")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_unconfigure(config):
    shutil.rmtree(_TMP, ignore_errors=True)
