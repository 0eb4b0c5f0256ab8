"""One figure style for the whole course, and the few plotting helpers the labs share.

Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies).
Every axis gets a label with its unit; log axes say so.

    >>> fig, ax = new_figure()
    >>> line = plot_loss_curve(ax, [(1e3, 3.0), (2e3, 2.5)], floor=2.0)
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

# Okabe & Ito 2008, "Color Universal Design": distinguishable with any common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
FLOOR_COLOR = "#555555"

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "legend.frameon": False,
    "font.size": 10,
}


def use_style() -> None:
    """Apply the course style to every figure that follows."""
    plt.rcParams.update(STYLE)


def new_figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.0):
    """A figure with ``ncols`` side-by-side axes in the course style; returns (fig, ax or axes)."""
    use_style()
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols if ncols > 1 else width, height), layout="constrained")
    return fig, axes


def plot_loss_curve(ax, curve, *, floor: float | None = None, label: str | None = None, color=None, eval_curve=None):
    """Training loss vs tokens seen, with the exact entropy floor as a dashed line."""
    xs, ys = zip(*curve) if curve else ((), ())
    line, = ax.plot(xs, ys, label=f"{label} (train)" if label else "train loss", color=color, alpha=0.8)
    if eval_curve:
        ex, ey = zip(*eval_curve)
        ax.plot(ex, ey, "o", color=line.get_color(), label=(label + " (eval)") if label else "eval loss")
    if floor is not None:
        ax.axhline(floor, ls="--", color=FLOOR_COLOR, lw=1)
        ax.annotate(f"entropy floor {floor:.3f}", xy=(1, floor), xycoords=("axes fraction", "data"),
                    xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom", color=FLOOR_COLOR, fontsize=9)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    return line


def log_log(ax, xlabel: str, ylabel: str) -> None:
    """Log axes on both sides, labelled (the labels should carry units)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel(f"{ylabel} (log scale)")
