"""labutils: the helper package of the LLM-systems course.

Notebooks import it; it never imports notebooks. Nothing here seeds or downloads on import.

    >>> from labutils import set_seed
    >>> set_seed(0)
"""

from __future__ import annotations

import contextlib
import numbers
import os
import random
import tempfile
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["set_seed", "torch_threads", "atomic_write", "positive_int", "__version__"]


def positive_int(name: str, value, *, allow_none: bool = False):
    """Return ``value`` as an int if it is a positive integer (Python or numpy; bools are not), else raise
    a ValueError naming it.

    >>> positive_int("batch_size", 32)
    32
    >>> positive_int("batch_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive int, got 0
    """
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive int{extra}, got {value!r}")
    return int(value)


def atomic_write(path, data: bytes | str, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash mid-write never leaves a half-written file under the real name, and two processes
    writing the same path leave one whole version. ``mode`` sets the file's permissions (mkstemp
    makes files private; package data wants 0o644).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, "hello")
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    positive_int("threads", n, allow_none=True)
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
