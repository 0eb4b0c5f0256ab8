"""Exercise checkers and the learner's progress record.

A checker runs fixed, seeded cases through the learner's function and compares each answer
with an independent reference. It prints a short verdict in plain words and:

* on a wrong answer, names the case, what was expected, what came back and a hint, then raises a
  short ``CheckFailed`` (so nbval and pytest see the failure — a check that only prints cannot fail);
* on ``NotImplementedError`` (the stub), says "not attempted yet" and returns — the learner can skip;
* on garbage (None, a string, wrong shape or dtype, NaN), says what was wrong, never a traceback.

Passes are recorded in a small JSON file (``$LABUTILS_PROGRESS_FILE``, default
``~/.local/share/labutils/progress.json``); ``python -m labutils progress`` prints it.

    >>> EX = Exercise("00_start_here", "0.1", "matmul_flops")
    >>> run_cases(EX, lambda m, k, n: 2 * m * k * n, [Case("m=k=n=2", (2, 2, 2), 16)])  # prints ✓
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


class CheckFailed(AssertionError):
    """Raised by a checker when an answer is wrong. Jupyter shows one line, not a traceback."""

    def _render_traceback_(self):  # IPython calls this instead of printing the stack
        return [f"CheckFailed: {self}"]


@dataclass(frozen=True)
class Exercise:
    notebook: str  # e.g. "01_scaling_laws"
    number: str  # e.g. "1.2"
    name: str  # the function the learner writes, e.g. "kd_loss"

    def __post_init__(self):
        if not self.name.isidentifier():  # verdict lines and the progress record name the learner's function
            raise ValueError(f"Exercise name must be the learner's function name (an identifier), got {self.name!r}")
        _REGISTRY.setdefault(self.notebook, {})[self.number] = self

    @property
    def label(self) -> str:
        return f"Exercise {self.number} · {self.name}"


@dataclass
class Case:
    """One test case: call fn(*args, **kwargs) and compare with ``expected``.

    expected may be a value or a zero-argument callable (computed only when needed).
    """

    name: str
    args: tuple = ()
    expected: Any = None
    kwargs: dict = field(default_factory=dict)
    hint: str | None = None  # overrides the exercise's hint for this case
    rtol: float | None = None
    atol: float | None = None
    unit: str = ""  # printed after numbers, e.g. "nats", "FLOPs", "bytes"


_REGISTRY: dict[str, dict[str, Exercise]] = {}
_SESSION: dict[tuple[str, str], str] = {}  # (notebook, number) -> "passed" | "failed" | "not attempted"


def exercises(notebook: str) -> list[Exercise]:
    """The exercises registered for a notebook, in number order."""
    items = _REGISTRY.get(notebook, {})
    return [items[k] for k in sorted(items, key=lambda s: [int(p) if p.isdigit() else p for p in s.split(".")])]


def session_status(notebook: str) -> dict[str, str]:
    """What happened to each exercise of a notebook in this Python session."""
    return {n: s for (nb, n), s in _SESSION.items() if nb == notebook}


# ----------------------------------------------------------------------------- comparing answers

def _fmt(x, unit: str = "") -> str:
    u = f" {unit}" if unit else ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}{u}"
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return (f"{v:.4g}" if (v == 0 or 1e-3 <= abs(v) < 1e6) else f"{v:.4e}") + u
    if isinstance(x, np.ndarray):
        if x.size <= 6:
            return np.array2string(x, precision=4, separator=", ") + u
        return f"array of shape {x.shape}"
    text = repr(x)
    return text if len(text) < 80 else text[:77] + "..."


def _to_numpy(x):
    """Tensors and sequences of numbers -> numpy; anything else comes back unchanged."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return x


def compare(got, expected, *, rtol: float = 1e-6, atol: float = 1e-9, unit: str = "") -> str | None:
    """None when ``got`` matches ``expected``; otherwise a plain-words reason."""
    if got is None:
        return "got None — did the function forget to `return` its result?"
    got, expected = _to_numpy(got), _to_numpy(expected)
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} values, got {_fmt(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = compare(g, e, rtol=rtol, atol=atol, unit=unit)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(expected, (bool, np.bool_)):
        return None if isinstance(got, (bool, np.bool_)) and bool(got) == bool(expected) else f"expected {expected}, got {_fmt(got)}"
    if isinstance(expected, str):
        return None if got == expected else f"expected {expected!r}, got {_fmt(got)}"
    if isinstance(expected, (int, float, np.number)):
        if isinstance(got, np.ndarray) and got.size == 1:
            got = got.reshape(()).item()
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, float, np.number)):
            return f"expected a number ({_fmt(expected, unit)}), got {type(got).__name__}: {_fmt(got)}"
        if not math.isfinite(float(got)):
            return f"expected {_fmt(expected, unit)}, got {got} (not finite)"
        if not math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol):
            return f"expected {_fmt(expected, unit)}, got {_fmt(got, unit)}"
        return None
    if isinstance(expected, np.ndarray):
        if isinstance(got, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in got):
            got = np.asarray(got)
        if not isinstance(got, np.ndarray):
            return f"expected an array of shape {expected.shape}, got {type(got).__name__}: {_fmt(got)}"
        if got.shape != expected.shape:
            return f"expected shape {expected.shape}, got shape {got.shape}"
        if not (np.issubdtype(got.dtype, np.number) or got.dtype == bool):
            return f"expected numbers, got an array of dtype {got.dtype}"
        if np.issubdtype(expected.dtype, np.floating) and not np.all(np.isfinite(got)):
            bad = np.argwhere(~np.isfinite(got))[0]
            return f"the answer contains NaN or inf (first at index {tuple(int(i) for i in bad)})"
        ok = np.isclose(got.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol)
        if not ok.all():
            idx = tuple(int(i) for i in np.argwhere(~ok)[0])
            err = np.max(np.abs(got.astype(np.float64) - expected))
            return (f"{int((~ok).sum())} of {ok.size} entries differ; first at index {idx}: "
                    f"expected {_fmt(expected[idx])}, got {_fmt(got[idx])} (max abs error {err:.3g})")
        return None
    return None if got == expected else f"expected {_fmt(expected, unit)}, got {_fmt(got, unit)}"


# ----------------------------------------------------------------------------- running a check

def run_cases(
    exercise: Exercise,
    fn: Callable,
    cases: list[Case],
    *,
    hint: str = "",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    cost: Callable[[], str] | None = None,
    check: Callable[[Any, Case], str | None] | None = None,
) -> None:
    """Run every case, print the verdict, record a pass; raise CheckFailed on any wrong answer.

    ``check(got, case)`` replaces the default comparison (return None when right, else a reason).
    ``cost()`` returns one line printed after a pass (FLOPs, bytes moved, messages…).
    Returns None (a checker's verdict is what it prints, or the CheckFailed it raises), so a check
    cell shows no stray value; ``session_status(notebook)`` tells what happened.
    """
    key = (exercise.notebook, exercise.number)
    if not callable(fn):
        print(f"{exercise.label} — expected a function, got {type(fn).__name__}: {_fmt(fn)}")
        print(f"  hint: pass the function itself, e.g. check(...)({exercise.name}), without calling it")
        _SESSION[key] = "failed"
        raise CheckFailed(f"{exercise.label}: not a function")
    failures = []
    for i, case in enumerate(cases, 1):
        try:
            got = fn(*case.args, **case.kwargs)
        except NotImplementedError:
            print(f"{exercise.label} — not attempted yet (the rest of the notebook uses the reference)")
            _SESSION.setdefault(key, "not attempted")
            return None
        except Exception as err:  # the learner's code raised: report it in one line
            failures.append((i, case, f"your function raised {type(err).__name__}: {err}"))
            continue
        expected = case.expected() if callable(case.expected) else case.expected
        try:
            why = (check(got, case) if check else
                   compare(got, expected, rtol=case.rtol if case.rtol is not None else rtol,
                           atol=case.atol if case.atol is not None else atol, unit=case.unit))
        except Exception as err:  # an answer so odd that comparing it failed
            why = f"could not compare the answer ({type(err).__name__}: {err}); got {_fmt(got)}"
        if why:
            failures.append((i, case, why))
    n = len(cases)
    if not failures:
        print(f"{exercise.label} — all {n} cases pass ✓")
        if cost is not None:
            print(f"  cost: {cost()}")
        _SESSION[key] = "passed"
        record_pass(exercise)
        return None
    print(f"{exercise.label} — {n - len(failures)} of {n} cases pass")
    for i, case, why in failures:
        print(f"  ✗ case {i} ({case.name}): {why}")
        if case.hint:
            print(f"    hint: {case.hint}")
    if hint:
        print(f"  hint: {hint}")
    _SESSION[key] = "failed"
    raise CheckFailed(f"{exercise.label}: {len(failures)} of {n} cases failed (details above)")


# ----------------------------------------------------------------------------- progress record

def progress_file() -> Path:
    env = os.environ.get("LABUTILS_PROGRESS_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "labutils" / "progress.json"


def load_progress() -> dict:
    """{notebook: {number: {"name": ..., "passed_at": iso time}}}; empty when there is no record."""
    path = progress_file()
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def record_pass(exercise: Exercise) -> None:
    """Add a pass to the record (atomic write; a record that cannot be written is skipped quietly)."""
    data = load_progress()
    data.setdefault(exercise.notebook, {})[exercise.number] = dict(
        name=exercise.name, passed_at=_dt.datetime.now().isoformat(timespec="seconds"))
    path = progress_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".progress-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def progress_table(notebook: str | None = None) -> str:
    """A plain-text table of recorded passes, one block per notebook."""
    data = load_progress()
    notebooks = [notebook] if notebook else sorted(set(_REGISTRY) | set(data))
    lines = []
    for nb in notebooks:
        known = {e.number: e.name for e in exercises(nb)}
        passed = data.get(nb, {})
        numbers = sorted(set(known) | set(passed), key=lambda s: [int(p) if p.isdigit() else p for p in s.split(".")])
        lines.append(f"{nb}: {sum(n in passed for n in numbers)} of {len(numbers)} exercises passed")
        for n in numbers:
            mark = f"✓ {passed[n]['passed_at']}" if n in passed else "·"
            lines.append(f"  {n:>5}  {known.get(n) or passed[n].get('name', ''):<28} {mark}")
    return "\n".join(lines) if lines else "No exercises recorded yet."


def progress_widget(notebook: str):
    """A small widget for the end of a notebook: each exercise and what happened to it in this run."""
    import ipywidgets as widgets

    status = session_status(notebook)
    recorded = load_progress().get(notebook, {})
    rows = []
    for ex in exercises(notebook):
        s = status.get(ex.number, "not run")
        icon = {"passed": "✓", "failed": "✗", "not attempted": "·", "not run": "·"}[s]  # plain glyphs: no emoji font needed
        before = " (passed before)" if s != "passed" and ex.number in recorded else ""
        rows.append(f"<tr><td>{icon}</td><td>Exercise {ex.number}</td><td><code>{ex.name}</code></td><td>{s}{before}</td></tr>")
    n_passed = sum(v == "passed" for v in status.values())
    html = (f"<div class='labutils-progress'><b>{notebook}: {n_passed} of {len(exercises(notebook))} exercises "
            f"passed in this run</b><table>{''.join(rows)}</table></div>")
    return widgets.HTML(value=html)
