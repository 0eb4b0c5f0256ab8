"""Notebook 00's checkers: the reference passes, and wrong answers learners really write each fail by name."""

import math

import numpy as np
import pytest
import torch

from labutils.checks import CheckFailed
from labutils.start_here import (
    check_matmul_flops,
    check_tensor_bytes,
    matmul_flops_reference,
    tensor_bytes_reference,
)


def multiplies_only(m, k, n):  # forgets the adds
    return m * k * n


def exact_adds(m, k, n):  # k − 1 adds per dot product: true for one dot product, not the convention
    return m * (2 * k - 1) * n


def drops_n(m, k, n):  # leaves one dimension out of the product
    return 2 * m * k


def float_overflow_free_but_wrong(m, k, n):  # squares k (confuses with an attention cost)
    return 2 * m * k * k * n // max(k, 1) + m


@pytest.mark.parametrize("wrong, case, words", [
    (multiplies_only, "m=1, k=1, n=1", "multiplies only"),
    (exact_adds, "m=1, k=1, n=1", "k − 1 adds"),
    (drops_n, "m=2, k=3, n=4", "missing from the product"),
    (float_overflow_free_but_wrong, "m=1, k=1, n=1", "expected 2 FLOPs, got 3 FLOPs"),
])
def test_matmul_flops_rejects(wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check_matmul_flops(wrong)
    out = capsys.readouterr().out
    assert f"({'(m, k) @ (k, n) with ' + case})" in out and words in out, out


def bits_not_bytes(shape, dtype):  # element_size in bits
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size() * 8


def always_float32(shape, dtype):  # ignores the dtype
    return math.prod(shape) * 4


def sum_of_sizes(shape, dtype):  # adds the sizes instead of multiplying them
    return sum(shape) * torch.empty((), dtype=dtype).element_size()


def numpy_prod_scalar_zero(shape, dtype):  # treats a scalar as empty
    return (int(np.prod(shape)) if shape else 0) * torch.empty((), dtype=dtype).element_size()


@pytest.mark.parametrize("wrong, case, words", [
    (bits_not_bytes, "shape=(3,), dtype=float32", "bits, not bytes"),
    (always_float32, "shape=(2, 3), dtype=float64", "counted as 4 bytes"),
    (sum_of_sizes, "shape=(2, 3), dtype=float64", "were added"),
    (numpy_prod_scalar_zero, "shape=(), dtype=float32", "empty product is 1"),
])
def test_tensor_bytes_rejects(wrong, case, words, capsys):
    with pytest.raises(CheckFailed):
        check_tensor_bytes(wrong)
    out = capsys.readouterr().out
    assert f"({case})" in out and words in out, out


def test_references_pass(capsys):
    check_matmul_flops(matmul_flops_reference)
    check_tensor_bytes(tensor_bytes_reference)
    assert capsys.readouterr().out.count("cases pass ✓") == 2
