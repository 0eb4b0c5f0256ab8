"""Lab 01, scaling laws: Chinchilla's parametric law and its fit (``law``), a fit driven by any objective and
Approach 2 on noise-free data (``extras``), the IsoFLOP sweep behind the notebook (``sweep``;
``python -m labutils.scaling sweep``), the frozen targets beyond it (``targets``; ``… targets``), a step-time
benchmark (``bench``; ``… bench``) and the notebook's checkers (``checks``).

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
from labutils.scaling.extras import approach2_vertices, fit_with_objective
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
from labutils.scaling.targets import (
    TARGETS_PATH,
    compute_only_law,
    design_hash,
    load_targets,
    predict_compute_only,
    run_targets,
    target_design,
)

__all__ = [
    "BOOTSTRAP_MAXITER", "HUBER_DELTA", "PARAM_NAMES", "TIGHT", "ChinchillaFit", "bootstrap_fits",
    "chinchilla_loss", "fit_chinchilla", "fit_intervals", "huber", "isoflop_optimum", "lbfgs", "objective",
    "paper_grid", "percentile_interval", "power_law_fit", "predict_interval", "BIG_FACTOR", "DATA_PATH", "LEVEL",
    "N_BOOTSTRAP", "PRESETS", "design", "load_sweep", "run_sweep", "check_compute_optimal", "check_huber_objective",
    "check_isoflop_vertex", "check_prediction_interval", "check_score_prediction", "check_tinygpt_params",
    "score_reference", "approach2_vertices", "fit_with_objective", "TARGETS_PATH", "compute_only_law", "design_hash",
    "load_targets", "predict_compute_only", "run_targets", "target_design",
]
