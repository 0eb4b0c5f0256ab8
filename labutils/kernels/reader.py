"""What a blockwise kernel read and how much memory it took: the instruments behind lab 03's checkers.

``BlockReader`` wraps an input array and records, for every read, how many positions along one axis
(the sequence axis) it touched, and how many times each element has been read (passes over the input).
``peak_extra_bytes`` runs a function under ``tracemalloc`` (numpy reports its allocations to it) and
returns the peak of what it allocated; ``no_torch`` refuses torch conversions, whose allocations
tracemalloc cannot see.

Left out on purpose: reads through ``np.asarray`` of a slice's ``.base``, and torch views — the
exercises are numpy-only, and the checkers say so.

    >>> r = BlockReader(np.arange(12.0).reshape(3, 4), axis=-1)
    >>> _ = r[:, 0:2]; _ = r[:, 0:2]; _ = r.max()   # two block reads, then one whole-array read
    >>> r.log, r.passes()
    ([2, 2, 4], 3)
"""

from __future__ import annotations

import contextlib
import tracemalloc

import numpy as np


class BlockReader(np.lib.mixins.NDArrayOperatorsMixin):
    """An input array that notes every read. Slicing returns a plain ndarray and notes its extent along
    ``axis``; any whole-array use (arithmetic, ``np.asarray``, methods such as ``.max()``) reads every
    position. Shape queries and ``np.empty_like``-style allocation read nothing; ``swapaxes``/``transpose``
    give a view that still tracks the axis and shares the counts."""

    _NO_READ = {np.empty_like, np.zeros_like, np.ones_like, np.full_like, np.shape, np.ndim, np.size, np.result_type}

    def __init__(self, a: np.ndarray, axis: int, log: list | None = None, counts: np.ndarray | None = None,
                 pos: np.ndarray | None = None):
        self._a, self._axis = a, axis % a.ndim
        self.log = [] if log is None else log  # extents of every read, shared by views
        self.counts = np.zeros(a.shape, dtype=np.int32) if counts is None else counts  # reads of each element
        if pos is None:  # each element's position along the axis, a broadcast view made once (no allocation per read)
            shape = [1] * a.ndim
            shape[self._axis] = -1
            pos = np.broadcast_to(np.arange(a.shape[self._axis]).reshape(shape), a.shape)
        self._pos = pos

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    __len__ = lambda self: len(self._a)

    def passes(self) -> int:
        """The most times any one element was read."""
        return int(self.counts.max(initial=0))

    def reads_along_axis(self) -> np.ndarray:
        """(n,) the most times any element at each position of the tracked axis was read."""
        return np.moveaxis(self.counts, self._axis, -1).reshape(-1, self._a.shape[self._axis]).max(axis=0)

    def _full(self) -> np.ndarray:
        self.log.append(self._a.shape[self._axis])
        self.counts += 1
        return self._a

    def __getitem__(self, idx):
        idx = _unwrap(idx)
        self.log.append(int(np.unique(self._pos[idx]).size))
        self.counts[idx] += 1  # a repeated fancy index counts once: enough for blocks
        return self._a[idx]

    def swapaxes(self, a1, a2):
        axes = list(range(self.ndim))
        axes[a1], axes[a2] = axes[a2], axes[a1]
        return self.transpose(axes)

    def transpose(self, *axes):
        one = len(axes) == 1 and not isinstance(axes[0], int)
        axes = list(axes[0]) if one else list(axes) or list(range(self.ndim))[::-1]
        axes = [a % self.ndim for a in axes]
        return BlockReader(self._a.transpose(axes), axes.index(self._axis), self.log, self.counts.transpose(axes),
                           self._pos.transpose(axes))

    T = property(lambda self: self.transpose())
    _slow = property(lambda self: self._a)  # the raw array, for FastMemory.load, which counts its own reads

    def __array__(self, dtype=None, copy=None):
        a = self._full()
        return a if dtype is None else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [x._full() if isinstance(x, BlockReader) else x for x in inputs]
        return getattr(ufunc, method)(*inputs, **_unwrap(kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func is np.swapaxes:
            return args[0].swapaxes(*args[1:], **kwargs)
        if func is np.transpose:
            return args[0].transpose(*args[1:], **kwargs)
        if func in self._NO_READ:
            return func(*[x._a if isinstance(x, BlockReader) else x for x in args], **kwargs)
        return func(*_unwrap(args), **_unwrap(kwargs))

    def __getattr__(self, name):  # any other ndarray method (.max, .copy, .astype, .reshape…) reads it all
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._full(), name)


def _unwrap(x):
    if isinstance(x, BlockReader):
        return x._full()
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def peak_extra_bytes(fn, *args, **kwargs) -> tuple:
    """(fn's result, peak bytes allocated while it ran, as tracemalloc saw them; numpy reports to it).

    >>> _, peak = peak_extra_bytes(np.ones, 1_000_000)   # 8 MB of float64
    >>> 7.9e6 < peak < 8.2e6
    True
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        out = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return out, peak


class TorchRefused(TypeError):
    pass


@contextlib.contextmanager
def no_torch():
    """While active, torch.from_numpy / as_tensor / tensor / asarray raise TorchRefused (tracemalloc cannot
    see torch's allocations, so a memory rule on numpy code cannot be checked through them)."""
    import torch

    names = [n for n in ("from_numpy", "as_tensor", "tensor", "asarray") if hasattr(torch, n)]
    saved = {n: getattr(torch, n) for n in names}

    def refuse(*args, **kwargs):
        raise TorchRefused("this exercise is numpy-only: the checker measures memory with tracemalloc, which cannot "
                           "see torch's allocations — use numpy arrays and operations")

    try:
        for n in names:
            setattr(torch, n, refuse)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch, n, f)
