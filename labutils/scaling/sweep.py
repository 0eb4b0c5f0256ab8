"""The IsoFLOP sweep behind lab 01: ``python -m labutils.scaling sweep [--preset cpu] [--device cpu]``
(the command line is in ``__main__.py``).

Everything is frozen before the first run and written into the output's metadata: the language
(the course default), context length, batch size, the ladder of model shapes, the compute budgets,
the learning-rate grid and the seeds. The sweep then runs, in order:

1. a learning-rate sweep: each model size at the smallest budget it appears in, three learning
   rates; the best is that size's learning rate for every budget (an untuned optimiser biases
   N_opt — Porian et al. 2024);
2. the IsoFLOP grid: per budget C, the five ladder sizes (≈2× apart) centred on the N with
   C = 6·N·(TOKENS_PER_PARAM·N), each trained for D = C/(6N) tokens with a cosine schedule matched to D;
3. the one-shot "big run": budget = BIG_FACTOR × the largest sweep budget, its N chosen from the
   parametric fit of step 2, trained with several seeds so the notebook can report how often the
   80% interval covers the outcome. It is stored apart from the sweep so the notebook can reveal it
   only after the learner has written down a prediction.

Each finished run is written to the output at once (atomically), so an interrupted sweep resumes
where it stopped. Left out on purpose: batch-size tuning, several seeds per sweep point,
Hägele et al.'s constant-LR-plus-cooldown trick.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labutils import atomic_write, positive_int

DATA_PATH = Path(__file__).resolve().parent.parent / "data" / "scaling_sweep.json"
# Window centre in tokens per parameter. Chinchilla's ≈20 (Hoffmann et al. 2022) put every window
# to the right of the valley here: these tiny models learn slowly per token. Probe runs on the
# default language (before the sweep was frozen) found the best size per budget at ≈100–190 tokens
# per parameter between 5e9 and 1e11 FLOPs, so the windows are centred on 150.
TOKENS_PER_PARAM = 150
BIG_FACTOR = 5  # the one-shot run uses 5× the largest sweep budget
LEVEL = 0.8  # the prediction interval's nominal coverage
N_BOOTSTRAP = 200  # bootstrap resamples behind the prediction interval

# (d_model, n_layers, n_heads): sizes ≈2× apart in total parameters at V = 64, T = 64.
LADDER = [(4, 1, 1), (6, 1, 1), (8, 1, 1), (12, 1, 2), (16, 2, 2), (24, 2, 2), (32, 2, 2), (48, 2, 2), (64, 2, 4),
          (80, 3, 4), (112, 3, 4), (160, 3, 4), (224, 4, 4), (320, 4, 8)]

PRESETS = {
    # what the stored file holds: ≈18 CPU-minutes (≈10 wall-minutes with --jobs 2). Five budgets, 2×
    # apart, span log10(16) = 1.2 orders of magnitude. The first design wanted the one-shot run (5× the
    # largest budget) to train live in the notebook in ≤ 60 s. Here the law picks a tiny model
    # (≈4k parameters) for a long run, and such models are overhead-bound: ≈15–19 ms per step of
    # 2,048 tokens on one core, ≈1–2e9 FLOP/s counted as 6ND (measured). So 3.2e11 FLOPs is ≈6,200
    # steps, 2–3 minutes, and the one-shot seeds are trained by this command and stored. A sweep
    # scaled down to fit the 60 s (1.6e9–2.56e10, one-shot 1.28e11 on d8) was tried. Its loss drops
    # stayed at ≈0.05 nats per doubling (no sign yet of the flattening that follows), so the law
    # predicted 3.701 for a run that measured 3.752: 13% of the reducible loss. This sweep's
    # prediction lands within ≈2%.
    "cpu": dict(budgets=[4e9, 8e9, 1.6e10, 3.2e10, 6.4e10], sizes_per_budget=5, lrs=[2e-3, 6e-3, 2e-2],
                batch_size=32, seed=0, big_seeds=[0, 1, 2]),
    # for a learner with a GPU: ten times the compute, same code.
    "gpu": dict(budgets=[1e11, 3e11, 1e12, 3e12], sizes_per_budget=5, lrs=[1e-3, 3e-3, 1e-2],
                batch_size=64, seed=0, big_seeds=[0, 1, 2, 3, 4]),
    # seconds: for tests of the machinery only.
    "tiny": dict(budgets=[2e9, 4e9], sizes_per_budget=3, lrs=[6e-3], batch_size=16, seed=0, big_seeds=[0]),
}


def ladder_configs(context_length: int = 64, vocab_size: int = 64):
    from labutils.model import GPTConfig

    return [GPTConfig(vocab_size, context_length, d, L, h) for d, L, h in LADDER]


def design(preset: str) -> dict:
    """The frozen design: which (config, budget) pairs run. Pure arithmetic, no training."""
    from labutils.data import DEFAULT_CONTEXT, DEFAULT_LANGUAGE
    from labutils.model import count_params

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = dict(PRESETS[preset])
    cfgs = ladder_configs(DEFAULT_CONTEXT, DEFAULT_LANGUAGE["vocab_size"])
    logN = np.log([count_params(c, embeddings=True) for c in cfgs])
    grid = []
    k = p["sizes_per_budget"]
    for C in p["budgets"]:
        centre = math.log(math.sqrt(C / (6 * TOKENS_PER_PARAM)))
        i = int(np.argmin(np.abs(logN - centre)))
        lo = min(max(0, i - k // 2), len(cfgs) - k)
        grid += [dict(budget=C, size=j) for j in range(lo, lo + k)]
    p["grid"] = grid
    p["ladder"] = [c.to_dict() for c in cfgs]
    p["context_length"] = DEFAULT_CONTEXT
    p["language"] = dict(DEFAULT_LANGUAGE)
    return p


def _tokens(C: float, cfg) -> int:
    from labutils.model import count_params

    return int(C / (6 * count_params(cfg, embeddings=True)))


def _record(r, **extra) -> dict:
    return dict(extra, n_params=r.n_params, n_params_nonembedding=r.n_params_nonembedding, tokens=r.tokens,
                flops=r.flops, flops_with_attention=r.flops_with_attention, eval_loss=r.eval_loss, floor=r.floor,
                wall_time_s=round(r.wall_time_s, 2), eval_curve=r.eval_curve)


def _versions() -> dict:
    import scipy
    import torch

    import labutils

    return dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                scipy=scipy.__version__, labutils=labutils.__version__)


def _train_one(args) -> float:
    """Worker for ``jobs > 1``: train one run into the training cache (the main process then reads it)."""
    cfg_dict, tokens, B, lr, s, threads = args
    from labutils.data import default_language
    from labutils.model import GPTConfig
    from labutils.train import train_lm

    return train_lm(GPTConfig(**cfg_dict), default_language(), tokens=tokens, batch_size=B, lr=lr, seed=s,
                    progress=False, threads=threads).wall_time_s


def _prefill(todo: list, jobs: int, progress: bool, desc: str) -> None:
    """Train ``todo`` = [(cfg_dict, tokens, B, lr, seed, threads), …] in ``jobs`` processes (cache only)."""
    if jobs <= 1 or len(todo) < 2:
        return
    import multiprocessing as mp

    from tqdm.auto import tqdm

    todo = sorted(todo, key=lambda a: -a[1])  # most tokens first (these runs are overhead-bound): less idle at the end
    with mp.get_context("spawn").Pool(jobs) as pool:
        for _ in tqdm(pool.imap_unordered(_train_one, todo), total=len(todo), desc=desc, disable=not progress):
            pass


@dataclass
class _Sweep:
    """What every step of a sweep shares: the design, the results so far, where they are saved."""

    d: dict
    res: dict
    out: Path
    cfgs: list
    train: Callable  # (cfg, tokens, lr, seed, desc) -> (RunResult, CPU seconds)
    jobs: int
    progress: bool
    threads: int

    def save(self) -> None:
        atomic_write(self.out, json.dumps(self.res, indent=1), mode=0o644)  # package data: readable by everyone

    def prefill(self, todo: list, desc: str) -> None:
        """Train (cfg index, tokens, lr, seed) runs in ``jobs`` processes first (they land in the cache)."""
        _prefill([(self.cfgs[j].to_dict(), tokens, self.d["batch_size"], lr, s, self.threads) for j, tokens, lr, s in todo],
                 self.jobs, self.progress, desc)


def _done(rows: list, **kv) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)


def _start(preset: str, device: str, out: Path, threads: int, progress: bool, jobs: int) -> _Sweep:
    """The frozen design and the results so far (resumed from ``out`` when it holds the same design)."""
    from labutils.data import default_language
    from labutils.model import GPTConfig
    from labutils.train import train_lm

    d = design(preset)
    argv = sys.argv[2:] if sys.argv[1:2] == ["sweep"] else []
    meta = dict(preset=preset, device=device, command="python -m labutils.scaling sweep " + shlex.join(argv),
                design={k: v for k, v in d.items()}, versions=_versions(), machine=platform.platform(),
                cpu=platform.processor() or platform.machine(), torch_threads=threads)
    saved = json.loads(out.read_text()) if out.exists() else {}
    if saved.get("meta", {}).get("design") != meta["design"]:
        saved = {}  # a different design: start over rather than mix two sweeps
    res = dict(meta=meta, lr_sweep=saved.get("lr_sweep", []), runs=saved.get("runs", []), big=saved.get("big", {}))
    res["meta"]["started"] = saved.get("meta", {}).get("started") or _dt.datetime.now().isoformat(timespec="seconds")
    lang = default_language()

    def train(cfg, tokens, lr, s, desc):
        t0 = time.process_time()
        r = train_lm(cfg, lang, tokens=tokens, batch_size=d["batch_size"], lr=lr, seed=s, progress=progress, desc=desc,
                     threads=threads)
        return r, (r.wall_time_s if r.from_cache else time.process_time() - t0)

    return _Sweep(d, res, out, [GPTConfig(**c) for c in d["ladder"]], train, jobs, progress, threads)


def _lr_sweep(sw: _Sweep) -> dict:
    """Step 1: each size at the smallest budget it appears in, every learning rate. Returns {size: best lr}."""
    from tqdm.auto import tqdm

    d, res, seed = sw.d, sw.res, sw.d["seed"]
    first_budget = {}
    for g in d["grid"]:
        first_budget.setdefault(g["size"], g["budget"])
    todo = [(j, C, lr) for j, C in sorted(first_budget.items()) for lr in d["lrs"]]
    sw.prefill([(j, _tokens(C, sw.cfgs[j]), lr, seed) for j, C, lr in todo
                if not _done(res["lr_sweep"], size=j, budget=C, lr=lr)], "learning-rate sweep (parallel)")
    for j, C, lr in tqdm(todo, desc="learning-rate sweep", disable=not sw.progress):
        if _done(res["lr_sweep"], size=j, budget=C, lr=lr):
            continue
        r, cpu = sw.train(sw.cfgs[j], _tokens(C, sw.cfgs[j]), lr, seed, f"lr {lr:g} size {j}")
        res["lr_sweep"].append(_record(r, size=j, budget=C, lr=lr, seed=seed, cpu_s=round(cpu, 2)))
        sw.save()
    best_lr = {}
    for j in first_budget:
        rows = [r for r in res["lr_sweep"] if r["size"] == j]
        best_lr[j] = min(rows, key=lambda r: r["eval_loss"])["lr"]
    res["meta"]["best_lr"] = {str(j): v for j, v in sorted(best_lr.items())}
    return best_lr


def _isoflop_grid(sw: _Sweep, best_lr: dict) -> None:
    """Step 2: every (budget, size) of the grid at its size's best learning rate (step 1's runs are cache hits)."""
    from tqdm.auto import tqdm

    res, seed = sw.res, sw.d["seed"]
    sw.prefill([(g["size"], _tokens(g["budget"], sw.cfgs[g["size"]]), best_lr[g["size"]], seed) for g in sw.d["grid"]
                if not _done(res["runs"], size=g["size"], budget=g["budget"])], "IsoFLOP sweep (parallel)")
    for g in tqdm(sw.d["grid"], desc="IsoFLOP sweep", disable=not sw.progress):
        j, C = g["size"], g["budget"]
        if _done(res["runs"], size=j, budget=C):
            continue
        r, cpu = sw.train(sw.cfgs[j], _tokens(C, sw.cfgs[j]), best_lr[j], seed, f"C={C:.0e} size {j}")
        res["runs"].append(_record(r, size=j, budget=C, lr=best_lr[j], seed=seed, cpu_s=round(cpu, 2),
                                   config=sw.cfgs[j].to_dict()))
        sw.save()


def _big_run(sw: _Sweep, best_lr: dict) -> None:
    """Step 3, the one-shot run: choose N from the fit, predict with an interval, then train several seeds."""
    from tqdm.auto import tqdm

    from labutils.model import count_params
    from labutils.scaling.law import bootstrap_fits, fit_chinchilla, predict_interval

    d, res, cfgs = sw.d, sw.res, sw.cfgs
    N, D, L = (np.array([r[k] for r in res["runs"]], dtype=float) for k in ("n_params", "tokens", "eval_loss"))
    fit = fit_chinchilla(N, D, L)
    C_big = BIG_FACTOR * max(d["budgets"])
    N_opt, _ = fit.compute_optimal(C_big)
    j = min(sorted(best_lr), key=lambda s: abs(math.log(count_params(cfgs[s], embeddings=True) / N_opt)))
    tokens = _tokens(C_big, cfgs[j])
    n_big = count_params(cfgs[j], embeddings=True)
    fits = bootstrap_fits(N, D, L, n_resamples=N_BOOTSTRAP, seed=d["seed"])
    lo, hi = predict_interval(fits, n_big, tokens, LEVEL)
    big = res["big"] if res["big"].get("size") == j else {}
    big.update(budget=C_big, size=j, config=cfgs[j].to_dict(), lr=best_lr[j], tokens_requested=tokens,
               fit=fit.params, N_opt=N_opt, prediction=float(fit.predict(n_big, tokens)), interval=[lo, hi],
               level=LEVEL, n_bootstrap=N_BOOTSTRAP, seeds=d["big_seeds"])
    big.setdefault("runs", [])
    res["big"] = big
    sw.prefill([(j, tokens, best_lr[j], s) for s in d["big_seeds"] if not _done(big["runs"], seed=s)],
               "big run (parallel)")
    for s in tqdm(d["big_seeds"], desc="big run", disable=not sw.progress):
        if _done(big["runs"], seed=s):
            continue
        r, cpu = sw.train(cfgs[j], tokens, best_lr[j], s, f"big run seed {s}")
        big["runs"].append(_record(r, seed=s, cpu_s=round(cpu, 2), inside=bool(lo <= r.eval_loss <= hi)))
        sw.save()
    big["coverage"] = float(np.mean([r["inside"] for r in big["runs"]]))


def run_sweep(preset: str = "cpu", *, device: str = "cpu", out: Path = DATA_PATH, progress: bool = True,
              threads: int = 1, jobs: int = 1) -> dict:
    """Run (or resume) the sweep and write ``out`` after every run. Returns the stored dict.

    jobs > 1 (CPU only) trains each phase's runs in that many processes first; they land in the
    training cache, and the sweep then records them in order exactly as a one-process sweep would.

    threads=1: these models are overhead-bound, and on a shared 2-core machine one torch thread was
    ≈10–30× faster than two (measured here); it also keeps the arithmetic identical run to run.
    """
    import torch

    positive_int("threads", threads)
    positive_int("jobs", jobs)
    if jobs > 1 and device != "cpu":
        raise ValueError("jobs > 1 runs CPU processes; on a GPU use jobs=1")
    if device != "cpu":  # train_lm runs on the default device; a GPU sweep sets it here
        torch.set_default_device(device)
    sw = _start(preset, device, Path(out), threads, progress, jobs)
    best_lr = _lr_sweep(sw)
    _isoflop_grid(sw, best_lr)
    _big_run(sw, best_lr)
    res = sw.res
    res["meta"]["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    res["meta"]["cpu_s_total"] = round(sum(r["cpu_s"] for r in res["lr_sweep"] + res["runs"] + res["big"]["runs"]), 1)
    sw.save()
    return res


def load_sweep(path: Path | str | None = None) -> dict:
    """The stored sweep (package data) as a dict with keys meta, lr_sweep, runs, big."""
    path = Path(path) if path else DATA_PATH
    if not path.exists():
        raise ValueError(f"no sweep at {path}; run `python -m labutils.scaling sweep` to make one")
    return json.loads(path.read_text())
