"""Pre-warm the training cache for a workshop room: ``python -m labutils warmup [NOTEBOOK ...]``.

Every training run a notebook makes goes through ``train_lm``, which caches finished runs on disk
keyed by their full configuration. Executing each solution notebook once, headless, fills that cache
with exactly the runs the learners' notebooks will ask for, so in the room every training cell
answers at once. The notebooks run in a temporary copy: neither solutions/ nor a learner's
notebooks/ are touched, and the learner's progress record is pointed at a throw-away file (warming
the cache must not mark exercises done).

Left out on purpose: copying a cache between machines (a run is keyed by the package version, so
copy ``~/.cache/labutils`` only between identical installs) and running notebooks in parallel (the
machine's cores already go to each training run).

    >>> warmup(["00_start_here"])  # doctest: +SKIP
    warmed 00_start_here in 31.2 s: 1 new cache entry
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from labutils.train import cache_dir

ROOT = Path(__file__).resolve().parent.parent


def cache_entries(folder: Path | None = None) -> dict[str, int]:
    """{file name: bytes} of the finished runs in the cache folder (temporary files excluded)."""
    folder = Path(folder) if folder else cache_dir()
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in folder.glob("run-*.pt") if p.is_file()}


def _human(n_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


def find_notebooks(names: list[str] | None = None, root: Path = ROOT) -> list[Path]:
    """Solution notebooks by name ("00_start_here", "00_start_here.ipynb" or a path); default: all."""
    sol = root / "solutions"
    every = sorted(sol.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        if not every:
            raise ValueError(f"no solution notebooks in {sol}")
        return every
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path.resolve())
            continue
        stem = path.stem if path.suffix == ".ipynb" else path.name
        match = [p for p in every if p.stem == stem or p.stem.startswith(stem + "_") or p.stem.split("_", 1)[0] == stem]
        if len(match) != 1:
            known = ", ".join(p.stem for p in every) or "none"
            raise ValueError(f"no single solution notebook matches {name!r} (known: {known})")
        found.append(match[0])
    return found


def warm(path: Path, *, timeout_s: int = 900) -> float:
    """Execute one notebook headless in a temporary copy of its folder's context; return seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    saved = os.environ.get("LABUTILS_PROGRESS_FILE")
    with tempfile.TemporaryDirectory(prefix="labutils-warmup-") as tmp:
        work = Path(tmp) / "notebooks"
        work.mkdir()
        if (path.parent.parent / "requirements.txt").exists():  # the setup cell looks for ../requirements.txt
            shutil.copy(path.parent.parent / "requirements.txt", Path(tmp) / "requirements.txt")
        os.environ["LABUTILS_PROGRESS_FILE"] = str(Path(tmp) / "progress.json")  # never mark exercises done
        try:
            start = time.perf_counter()
            NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                           resources={"metadata": {"path": str(work)}}).execute()
            return time.perf_counter() - start
        finally:
            if saved is None:
                os.environ.pop("LABUTILS_PROGRESS_FILE", None)
            else:
                os.environ["LABUTILS_PROGRESS_FILE"] = saved


def warmup(names: list[str] | None = None, *, root: Path = ROOT, out=print) -> dict[str, int]:
    """Run each named (default: every) solution notebook once; report new entries and the cache's size."""
    paths = find_notebooks(names, root)
    folder = cache_dir()
    out(f"warming the training cache in {folder} with {len(paths)} notebook(s)")
    failed = []
    for path in paths:
        before = cache_entries(folder)
        try:
            seconds = warm(path)
        except Exception as err:  # one broken notebook must not stop the room's warm-up
            failed.append(path.stem)
            out(f"  {path.stem}: FAILED — {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            continue
        new = len(set(cache_entries(folder)) - set(before))
        out(f"  {path.stem}: {seconds:.1f} s, {new} new cache entr{'y' if new == 1 else 'ies'}"
            + ("  (already warm)" if new == 0 else ""))
    entries = cache_entries(folder)
    out(f"cache: {folder} — {len(entries)} run(s), {_human(sum(entries.values()))}")
    if failed:
        raise RuntimeError(f"could not execute {', '.join(failed)}; run it in JupyterLab to see why")
    return entries
