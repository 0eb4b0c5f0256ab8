"""Checkers for 00_start_here: two warm-up exercises about cost.

    >>> check_matmul_flops(lambda m, k, n: 2 * m * k * n)
    Exercise 0.1 · matmul_flops — all 5 cases pass ✓
      cost: a (4096 × 4096) @ (4096 × 4096) matmul is 1.374e+11 FLOPs
"""

from __future__ import annotations

import torch

from labutils.checks import Case, Exercise, run_cases

NOTEBOOK = "00_start_here"
EX_MATMUL_FLOPS = Exercise(NOTEBOOK, "0.1", "matmul_flops")
EX_TENSOR_BYTES = Exercise(NOTEBOOK, "0.2", "tensor_bytes")

_MATMUL_SHAPES = [(1, 1, 1), (2, 3, 4), (64, 128, 32), (1, 4096, 4096), (4096, 4096, 4096)]


def matmul_flops_reference(m: int, k: int, n: int) -> int:
    """(m, k) @ (k, n): each of the m·n outputs needs k multiplies and k adds."""
    return 2 * m * k * n


def _diagnose_matmul_flops(got, expected, case) -> str | None:
    """Name the usual slips from the answer's ratio to the truth."""
    m, k, n = case.args
    if got == m * k * n:
        return "that is the number of multiplies only; each also has an add, so count 2 FLOPs per multiply-add"
    if got == m * (2 * k - 1) * n and got != expected:
        return "k multiplies and k − 1 adds is exact for one dot product, but the convention counts 2·k per output"
    if got in (2 * m * n, 2 * m * k, 2 * k * n):
        return "one of m, k, n is missing from the product: every one of the m·n outputs costs 2·k FLOPs"
    return None


def check_matmul_flops(matmul_flops) -> None:
    cases = [Case(f"(m, k) @ (k, n) with m={m}, k={k}, n={n}", (m, k, n), matmul_flops_reference(m, k, n),
                  unit="FLOPs", rtol=0, atol=0) for m, k, n in _MATMUL_SHAPES]
    run_cases(EX_MATMUL_FLOPS, matmul_flops, cases, diagnose=_diagnose_matmul_flops,
              hint="each output element is a dot product of length k: k multiplies and k adds",
              cost=lambda: f"a (4096 × 4096) @ (4096 × 4096) matmul is "
                           f"{matmul_flops_reference(4096, 4096, 4096):.3e} FLOPs")


def tensor_bytes_reference(shape, dtype: torch.dtype) -> int:
    """Bytes a dense tensor of this shape and dtype occupies."""
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty((), dtype=dtype).element_size()


def _diagnose_tensor_bytes(got, expected, case) -> str | None:
    shape, dtype = case.args
    n = expected // torch.empty((), dtype=dtype).element_size() if expected else 0
    if expected and got == 8 * expected:
        return "that is bits, not bytes: divide by 8 (or use element_size(), which is in bytes)"
    if n and got == 4 * n and expected != got:
        return f"every dtype was counted as 4 bytes; {str(dtype).replace('torch.', '')} has its own size"
    if shape == () and got == 0:
        return "a scalar (shape ()) holds one element: the empty product is 1"
    if shape and got == sum(shape) * torch.empty((), dtype=dtype).element_size():
        return "the sizes were added; the number of elements is their product"
    return None


def check_tensor_bytes(tensor_bytes) -> None:
    specs = [((3,), torch.float32), ((2, 3), torch.float64), ((1024, 1024), torch.bfloat16),
             ((8, 16, 64), torch.int8), ((), torch.float32), ((4, 0), torch.float16)]
    cases = [Case(f"shape={tuple(s)}, dtype={str(d).replace('torch.', '')}", (s, d), tensor_bytes_reference(s, d),
                  unit="bytes", rtol=0, atol=0) for s, d in specs]
    run_cases(EX_TENSOR_BYTES, tensor_bytes, cases, diagnose=_diagnose_tensor_bytes,
              hint="multiply the number of elements by the bytes per element "
                   "(float32: 4, bfloat16: 2, int8: 1; torch.empty((), dtype=d).element_size() tells you)")
