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
    >>> run_cases(EX, lambda m, k, n: 2 * m * k * n, [Case("m=k=n=2", (2, 2, 2), 16)])
    Exercise 0.1 · matmul_flops — all 1 cases pass ✓
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
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
        # One numbering scheme course-wide: exercise k of notebook NN_… is "N.k" (00 → 0.1, 05 → 5.2),
        # so an id never clashes across notebooks.
        lab, _, rest = self.number.partition(".")
        if self.notebook[:2].isdigit() and (not lab.isdigit() or int(lab) != int(self.notebook[:2]) or not rest):
            raise ValueError(f"Exercise number {self.number!r} must start with the notebook's number: "
                             f"'{int(self.notebook[:2])}.k' for {self.notebook}")
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
_PASSED_FN: dict[tuple[str, str], Callable] = {}  # (notebook, number) -> the function object that passed, this kernel


def reset_session() -> None:
    """Forget this kernel's verdicts and passing functions (tests start from a clean slate with it)."""
    _SESSION.clear()
    _PASSED_FN.clear()


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


def _digits_to_differ(a: float, b: float) -> int:
    """The fewest significant digits (≥ 4) at which a and b print differently (17 when they never do)."""
    for p in range(4, 18):
        if f"{a:.{p}g}" != f"{b:.{p}g}":
            return p
    return 17


def _fmt_pair(expected, got, unit: str = "") -> str:
    """'expected E, got G (difference …)': both numbers in one format, with enough digits to differ."""
    u = f" {unit}" if unit else ""
    e, g = float(expected), float(got)
    if isinstance(expected, (int, np.integer)) and isinstance(got, (int, np.integer)):
        return f"expected {int(expected):,}{u}, got {int(got):,}{u} (got − expected = {int(got) - int(expected):+,})"
    p = _digits_to_differ(e, g)
    diff = f"got − expected = {g - e:+.3g}{u}"
    if e != 0 and g != 0 and abs(g / e - 1) >= 0.01:  # a ratio names scale mistakes (×V, ×τ², ×2)
        diff += f", got/expected = {g / e:.4g}"
    return f"expected {e:.{p}g}{u}, got {g:.{p}g}{u} ({diff})"


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
            return _fmt_pair(expected, got, unit)
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
                    f"{_fmt_pair(expected[idx], got[idx])}; max abs error {err:.3g}")
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
    diagnose: Callable[[Any, Any, Case], str | None] | None = None,
    learner: Callable | None = None,
) -> None:
    """Run every case, print the verdict, record a pass; raise CheckFailed on any wrong answer.

    ``check(got, case)`` replaces the default comparison (return None when right, else a reason).
    ``diagnose(got, expected, case)`` names a recognisable mistake from a wrong answer's symptom
    (e.g. a ratio of exactly V means ``reduction='mean'``); it is asked only about failing cases.
    ``cost()`` returns one line printed after a pass (FLOPs, bytes moved, messages…); it must describe
    what the learner's function did, or a fact about the problem — never a constant about the function.
    ``learner`` is the learner's own function when ``fn`` wraps it (to count reads, say): a pass is
    credited to it, so ``use(learner, reference)`` finds it.
    Returns None (a checker's verdict is what it prints, or the CheckFailed it raises), so a check
    cell shows no stray value; ``session_status(notebook)`` tells what happened.
    """
    key = (exercise.notebook, exercise.number)
    credited = fn if learner is None else learner
    if not callable(credited) or not callable(fn):
        bad = credited if not callable(credited) else fn
        print(f"{exercise.label} — expected a function, got {type(bad).__name__}: {_fmt(bad)}")
        print(f"  hint: pass the function itself, e.g. check_{exercise.name}({exercise.name}), without calling it")
        _record_failure(exercise)
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
        if why and diagnose is not None:
            try:
                mistake = diagnose(got, expected, case)
            except Exception:  # a diagnosis is a courtesy: it never hides the verdict
                mistake = None
            if mistake:
                why += f"\n    likely mistake: {mistake}"
        if why:
            failures.append((i, case, why))
    n = len(cases)
    if not failures:
        print(f"{exercise.label} — all {n} cases pass ✓")
        if cost is not None:
            print(f"  cost: {cost()}")
        _SESSION[key] = "passed"
        _PASSED_FN[key] = credited
        record_pass(exercise)
        return None
    print(f"{exercise.label} — {n - len(failures)} of {n} cases pass")
    for i, case, why in failures:
        print(f"  ✗ case {i} ({case.name}): {why}")
        if case.hint:
            print(f"    hint: {case.hint}")
    if hint:
        print(f"  hint: {hint}")
    _record_failure(exercise)
    raise CheckFailed(f"{exercise.label}: {len(failures)} of {n} cases failed (details above)")


def _record_failure(exercise: Exercise) -> None:
    """A failing check means "not passing now": this kernel forgets the pass and the record loses its ✓."""
    key = (exercise.notebook, exercise.number)
    _SESSION[key] = "failed"
    _PASSED_FN.pop(key, None)
    record_failure(exercise)


def use(learner_fn: Callable, reference_fn: Callable) -> Callable:
    """The learner's function if that exact object passed its checker in this kernel, else the reference.

    Prints one line saying which is used. ``reference_fn`` must take the exercise's own signature
    (wrap the course's function where it differs). Redefining the function after a pass gives a new
    object, which has not passed yet: run its check cell again.

        >>> f = use(lambda x: x, lambda x: x)  # doctest: +ELLIPSIS
        Using the course's reference for <lambda> ...
    """
    name = getattr(learner_fn, "__name__", type(learner_fn).__name__)
    for (nb, number), fn in _PASSED_FN.items():
        if fn is learner_fn:
            print(f"Using your {name} (it passed Exercise {number} in this kernel).")
            return learner_fn
    tried = [f"Exercise {ex.number}" for exs in _REGISTRY.values() for ex in exs.values() if ex.name == name]
    why = f"{' / '.join(tried)} has not passed in this kernel" if tried else "it has not passed a checker in this kernel"
    print(f"Using the course's reference for {name} ({why}).")
    return reference_fn


# ----------------------------------------------------------------------------- progress record

def progress_file() -> Path:
    env = os.environ.get("LABUTILS_PROGRESS_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "labutils" / "progress.json"


def load_progress() -> dict:
    """{notebook: {exercise name: {"number": ..., "passed_at": iso time}}}; empty when there is no record.

    Records written before exercises were keyed by name ({notebook: {number: {"name": ...}}}) are read
    in the new shape, so a pass survives renumbering.
    """
    try:
        data = json.loads(progress_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for nb, entries in data.items():
        if not isinstance(entries, dict):
            continue
        for key, entry in entries.items():
            if not isinstance(entry, dict):
                continue
            if not key.isidentifier() and isinstance(entry.get("name"), str):  # the old shape, keyed by number
                key, entry = entry["name"], dict(number=key, passed_at=entry.get("passed_at", ""))
            out.setdefault(nb, {})[key] = entry
    return out


def _write_progress(data: dict) -> None:
    """Write the record atomically; a record that cannot be written is skipped quietly."""
    from labutils import atomic_write

    try:
        atomic_write(progress_file(), json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass


def record_pass(exercise: Exercise) -> None:
    """Mark an exercise passed in the record, keyed by notebook and the learner's function name."""
    data = load_progress()
    data.setdefault(exercise.notebook, {})[exercise.name] = dict(
        number=exercise.number, passed_at=_dt.datetime.now().isoformat(timespec="seconds"))
    _write_progress(data)


def record_failure(exercise: Exercise) -> None:
    """Remove an exercise's ✓: the record means "passing now", and a later failing check says it is not."""
    data = load_progress()
    if data.get(exercise.notebook, {}).pop(exercise.name, None) is not None:
        _write_progress(data)


def progress_table(notebook: str | None = None) -> str:
    """A plain-text table of today's exercises and which pass, one block per notebook.

    Only exercises that exist now are listed; a record entry for a removed exercise is kept but not shown.
    """
    data = load_progress()
    notebooks = [notebook] if notebook else sorted(_REGISTRY)
    lines = []
    for nb in notebooks:
        known = exercises(nb)
        if not known:
            continue
        passed = data.get(nb, {})
        lines.append(f"{nb}: {sum(ex.name in passed for ex in known)} of {len(known)} exercises passed")
        for ex in known:
            mark = f"✓ {passed[ex.name].get('passed_at', '')}" if ex.name in passed else "·"
            lines.append(f"  {ex.number:>5}  {ex.name:<28} {mark}")
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
        before = " (passed before)" if s != "passed" and ex.name in recorded else ""
        rows.append(f"<tr><td>{icon}</td><td>Exercise {ex.number}</td><td><code>{ex.name}</code></td><td>{s}{before}</td></tr>")
    n_passed = sum(v == "passed" for v in status.values())
    html = (f"<div class='labutils-progress'><b>{notebook}: {n_passed} of {len(exercises(notebook))} exercises "
            f"passed in this run</b><table>{''.join(rows)}</table></div>")
    return widgets.HTML(value=html)
