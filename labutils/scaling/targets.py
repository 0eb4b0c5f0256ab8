"""Lab 01's targets beyond the sweep: ``python -m labutils.scaling targets [--jobs 1]``.

The stored sweep (``scaling_sweep.json``) is fitted once; from that fit the design below is derived,
frozen, hashed and written to ``scaling_targets.json`` *before* any target is trained:

* a **live** target at ``LIVE_FACTOR`` × the largest sweep budget (the notebook trains seed 0 itself);
* a **far** target at ``FAR_FACTOR`` × the largest sweep budget, trained with five seeds;
* an **off-frontier** run: a small model trained far past its compute-optimal tokens (as inference-aware
  training does, Sardana et al. 2023), which a law in C alone cannot place.

For each target the law picks N (the ladder shape nearest its N_opt in log N) and D = C/(6N); the
learning rate is the sweep's choice for that shape. Three forecasts are frozen with it: the 2-D law
(with its 80% bootstrap interval), a compute-only law L(C) = E′ + a·C^(−b) fitted to the per-budget
minima (as GPT-4's report did), and "no change" (the best sweep run at the largest budget).
Each finished run is written at once, so an interrupted command resumes.

    >>> d = target_design(load_sweep())
    >>> d["far"]["budget"] / max(d["sweep_budgets"]), d["far"]["n_params"] > d["largest_best_n"]
    (40.0, True)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from labutils import atomic_write, positive_int
from labutils.scaling.law import bootstrap_fits, fit_chinchilla, predict_interval
from labutils.scaling.sweep import DATA_PATH, LEVEL, N_BOOTSTRAP, _record, _tokens, load_sweep

TARGETS_PATH = DATA_PATH.parent / "scaling_targets.json"
LIVE_FACTOR, FAR_FACTOR = 10, 40
SEEDS = dict(live=[0, 1, 2], far=[0, 1, 2, 3, 4], off_frontier=[0, 1, 2])
OFF_FRONTIER = dict(size=1, factor=4)  # d6 L1 (1,674 parameters) at 4× the largest budget: ≈15,000 tokens/param


def compute_only_law(budgets, best_losses) -> tuple[float, float, float]:
    """(E′, a, b) of L(C) = E′ + a·(C/C₀)^(−b), C₀ = the first budget; least squares on per-budget minima.

        >>> C = np.array([1e9, 2e9, 4e9, 8e9]); E, a, b = compute_only_law(C, 3.0 + 0.5 * (C / 1e9) ** -0.3)
        >>> round(E, 3), round(a, 3), round(b, 3)
        (3.0, 0.5, 0.3)
    """
    C, y = np.asarray(budgets, dtype=float), np.asarray(best_losses, dtype=float)
    if len(C) != len(y) or len(C) < 3:
        raise ValueError(f"need ≥ 3 budgets with one best loss each, got {len(C)} and {len(y)}")
    x = C / C[0]
    f = lambda x, E, a, b: E + a * x ** (-b)
    (E, a, b), _ = curve_fit(f, x, y, p0=(y.min() - 0.1, y.max() - y.min() + 0.1, 0.3), maxfev=20_000)
    return float(E), float(a), float(b)


def predict_compute_only(law: tuple[float, float, float], C, C0: float) -> float:
    """The compute-only law's loss at budget C (``law`` from ``compute_only_law``, C₀ its first budget)."""
    E, a, b = law
    return float(E + a * (np.asarray(C, dtype=float) / C0) ** (-b))


def _target(fit, fits, cfgs, best_lr, j, C) -> dict:
    from labutils.model import count_params

    n = count_params(cfgs[j], embeddings=True)
    tokens = _tokens(C, cfgs[j])
    lo, hi = predict_interval(fits, n, tokens, LEVEL)
    return dict(budget=C, size=j, config=cfgs[j].to_dict(), n_params=n, tokens=tokens, lr=best_lr[j],
                prediction=float(fit.predict(n, tokens)), interval=[lo, hi])


def target_design(sweep: dict) -> dict:
    """The frozen design of the targets, derived from the stored sweep alone (deterministic)."""
    from labutils.model import GPTConfig, count_params

    runs = sweep["runs"]
    N, D, L, C = (np.array([r[k] for r in runs], dtype=float) for k in ("n_params", "tokens", "eval_loss", "budget"))
    budgets = sorted(set(C.tolist()))
    fit = fit_chinchilla(N, D, L)
    fits = bootstrap_fits(N, D, L, n_resamples=N_BOOTSTRAP, seed=0)
    cfgs = [GPTConfig(**c) for c in sweep["meta"]["design"]["ladder"]]
    best_lr = {int(k): v for k, v in sweep["meta"]["best_lr"].items()}
    best = [runs[int(np.argmin(np.where(C == b, L, np.inf)))] for b in budgets]
    out = dict(sweep_budgets=budgets, largest_best_n=max(r["n_params"] for r in best), fit=fit.params,
               no_change=best[-1]["eval_loss"], level=LEVEL, n_bootstrap=N_BOOTSTRAP, seeds=SEEDS)
    E, a, b = compute_only_law(budgets, [r["eval_loss"] for r in best])
    out["compute_only"] = dict(E=E, a=a, b=b, C0=budgets[0])
    for name, factor in (("live", LIVE_FACTOR), ("far", FAR_FACTOR)):
        Ct = factor * budgets[-1]
        n_opt = fit.compute_optimal(Ct)[0]
        j = min(best_lr, key=lambda s: abs(math.log(count_params(cfgs[s], embeddings=True) / n_opt)))
        out[name] = dict(_target(fit, fits, cfgs, best_lr, j, Ct), N_opt=n_opt,
                         compute_only=predict_compute_only((E, a, b), Ct, budgets[0]))
    out["off_frontier"] = _target(fit, fits, cfgs, best_lr, OFF_FRONTIER["size"], OFF_FRONTIER["factor"] * budgets[-1])
    return out


def design_hash(design: dict) -> str:
    """sha256 (first 16 hex digits) of the design's canonical JSON: any change gives a new hash."""
    return hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:16]


def run_targets(*, out: Path = TARGETS_PATH, threads: int = 1, progress: bool = True, only=None) -> dict:
    """Freeze the design (written with its hash before any training), then train every target seed.

    Resumes from ``out`` when its hash matches; a changed design is refused rather than mixed.
    ``only`` limits training to some targets, e.g. ``("live",)``.
    """
    from labutils.data import default_language
    from labutils.model import GPTConfig
    from labutils.train import train_lm

    positive_int("threads", threads)
    sweep = load_sweep()
    d = target_design(sweep)
    h = design_hash(d)
    saved = json.loads(Path(out).read_text()) if Path(out).exists() else {}
    if saved and saved.get("design_hash") != h:
        raise ValueError(f"{out} holds design {saved.get('design_hash')}, the sweep now gives {h}: "
                         "a redesign needs a new file (and the notebook must tell that history)")
    res = saved or dict(design=d, design_hash=h, frozen_at=_dt.datetime.now().isoformat(timespec="seconds"),
                        command="python -m labutils.scaling targets", runs={k: [] for k in SEEDS})
    atomic_write(Path(out), json.dumps(res, indent=1), mode=0o644)  # frozen before the first run
    lang = default_language()
    B = sweep["meta"]["design"]["batch_size"]
    for name in only or SEEDS:
        t = d[name]
        for s in SEEDS[name]:
            if any(r["seed"] == s for r in res["runs"][name]):
                continue
            r = train_lm(GPTConfig(**t["config"]), lang, tokens=t["tokens"], batch_size=B, lr=t["lr"], seed=s,
                         progress=progress, desc=f"{name} seed {s}", threads=threads)
            lo, hi = t["interval"]
            res["runs"][name].append(_record(r, seed=s, inside=bool(lo <= r.eval_loss <= hi)))
            atomic_write(Path(out), json.dumps(res, indent=1), mode=0o644)
    return res


def load_targets(path: Path | str | None = None) -> dict:
    """The stored targets: {design, design_hash, frozen_at, command, runs: {live, far, off_frontier}}."""
    path = Path(path) if path else TARGETS_PATH
    if not path.exists():
        raise ValueError(f"no targets at {path}; run `python -m labutils.scaling targets` to make them")
    return json.loads(path.read_text())
