"""Lab 01, scaling laws: Chinchilla's parametric law and its fit (``law``), the IsoFLOP sweep behind the
notebook (``sweep``; ``python -m labutils.scaling sweep``) and the notebook's checkers (``checks``).

    >>> from labutils.scaling import ChinchillaFit
    >>> N, D = ChinchillaFit(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491).compute_optimal(5.76e23)
    >>> round(N / 1e9), round(D / 1e12, 1)     # Hoffmann et al. 2022's unrounded law at Gopher's budget
    (40, 2.4)
"""

from labutils.scaling.checks import (
    check_compute_optimal,
    check_huber_objective,
    check_isoflop_vertex,
    check_prediction_interval,
    check_score_prediction,
    check_tinygpt_params,
    score_reference,
)
from labutils.scaling.law import (
    BOOTSTRAP_MAXITER,
    HUBER_DELTA,
    PARAM_NAMES,
    TIGHT,
    ChinchillaFit,
    bootstrap_fits,
    chinchilla_loss,
    fit_chinchilla,
    fit_intervals,
    huber,
    isoflop_optimum,
    lbfgs,
    objective,
    paper_grid,
    percentile_interval,
    power_law_fit,
    predict_interval,
)
from labutils.scaling.sweep import BIG_FACTOR, DATA_PATH, LEVEL, N_BOOTSTRAP, PRESETS, design, load_sweep, run_sweep

__all__ = [
    "BOOTSTRAP_MAXITER", "HUBER_DELTA", "PARAM_NAMES", "TIGHT", "ChinchillaFit", "bootstrap_fits",
    "chinchilla_loss", "fit_chinchilla", "fit_intervals", "huber", "isoflop_optimum", "lbfgs", "objective",
    "paper_grid", "percentile_interval", "power_law_fit", "predict_interval", "BIG_FACTOR", "DATA_PATH", "LEVEL",
    "N_BOOTSTRAP", "PRESETS", "design", "load_sweep", "run_sweep", "check_compute_optimal", "check_huber_objective",
    "check_isoflop_vertex", "check_prediction_interval", "check_score_prediction", "check_tinygpt_params",
    "score_reference"
]
