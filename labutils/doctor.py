"""Checks that this machine can run the course; ``python -m labutils doctor`` prints them.

Each check gives a name, what was found, whether it is fine, and what to do when it is not.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata

from labutils.hardware import cpu_model, usable_cores

# What the course needs: (distribution, why). Versions are pinned in requirements.txt.
REQUIRED = [
    ("torch", "models and training"),
    ("numpy", "arrays"),
    ("scipy", "the scaling-law fit (L-BFGS)"),
    ("matplotlib", "figures"),
    ("ipywidgets", "interactive explorers"),
    ("tqdm", "progress bars"),
    ("jupyterlab", "the notebook interface"),
]
MIN_PYTHON = (3, 11)  # the pinned numpy and torch need it


@dataclass
class Finding:
    name: str
    value: str
    ok: bool = True
    advice: str = ""


def findings() -> list[Finding]:
    out = []
    py_ok = sys.version_info[:2] >= MIN_PYTHON
    out.append(Finding("python", f"{platform.python_version()} ({sys.executable})", py_ok,
                       "" if py_ok else f"install Python >= {'.'.join(map(str, MIN_PYTHON))} and recreate the environment"))
    for dist, why in REQUIRED:
        try:
            out.append(Finding(dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append(Finding(dist, "missing", False, f"needed for {why}: run `python -m pip install -r requirements.txt`"))
    out.append(Finding("cpu", f"{cpu_model()} · {usable_cores()} usable core(s) of {os.cpu_count()}"))
    try:
        import torch

        out.append(Finding("torch threads", str(torch.get_num_threads())))
        if torch.cuda.is_available():
            gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
        else:
            gpu = "none (fine: the course runs on CPU)"
        out.append(Finding("gpu", gpu))
    except ImportError:
        pass
    try:
        metadata.version("jupyterlab_widgets")
        out.append(Finding("ipywidgets front-end", "jupyterlab_widgets installed"))
    except metadata.PackageNotFoundError:
        out.append(Finding("ipywidgets front-end", "missing", False,
                           "widgets will show as text: run `python -m pip install -r requirements.txt`, then restart JupyterLab"))
    from labutils.train import cache_dir

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        out.append(Finding("training cache", f"{path} (writable)"))
    except OSError as err:
        out.append(Finding("training cache", f"{path} not writable ({err.strerror})", False,
                           "set LABUTILS_CACHE_DIR to a folder you can write, e.g. export LABUTILS_CACHE_DIR=/tmp/labutils-cache"))
    return out


def report() -> bool:
    """Print every finding; return True when everything the course needs is present."""
    all_ok = True
    for f in findings():
        mark = "ok " if f.ok else "!! "
        print(f"{mark}{f.name:<22} {f.value}")
        if not f.ok:
            all_ok = False
            print(f"   {'':<22} → {f.advice}")
    print("All set: open notebooks/00_start_here.ipynb." if all_ok else "Something the course needs is missing (see → above).")
    return all_ok
