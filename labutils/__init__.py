"""labutils: the helper package of the LLM-systems course.

Notebooks import it; it never imports notebooks. Nothing here seeds or downloads on import.

    >>> from labutils import set_seed
    >>> set_seed(0)
"""

from __future__ import annotations

import contextlib
import random

__version__ = "0.1.0"
__all__ = ["set_seed", "torch_threads", "__version__"]


def set_seed(seed: int) -> None:
    """Seed Python's random, numpy's global generator and torch (CPU and, if present, CUDA)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: leave as is), then restore the previous count.

    Tiny models are overhead-bound: on a busy 2-core machine one thread often beats two that wait
    for each other.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
