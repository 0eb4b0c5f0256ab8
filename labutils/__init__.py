"""labutils: the helper package of the LLM-systems course.

Notebooks import it; it never imports notebooks. Nothing here seeds or downloads on import.

    >>> from labutils import set_seed
    >>> set_seed(0)
"""

from __future__ import annotations

import random

__version__ = "0.1.0"
__all__ = ["set_seed", "__version__"]


def set_seed(seed: int) -> None:
    """Seed Python's random, numpy's global generator and torch (CPU and, if present, CUDA)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
