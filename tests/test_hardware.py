"""Roofline arithmetic against its closed forms; the measurements return sane values quickly."""

import math
import os

import pytest
import torch

from labutils import hardware as hw

MiB = 1024**2


def test_matmul_intensity_closed_form():
    assert hw.matmul_intensity(2, 3, 4, 2) == pytest.approx(2 * 2 * 3 * 4 / (2 * (6 + 12 + 8)))
    assert hw.matmul_intensity(4096, 4096, 4096, 2) == pytest.approx(4096 / 3)
    # a decode GEMV in bf16 is ≈ 1 FLOP/B, and AI ≈ B when B ≪ D, F ("How to Scale Your Model", roofline chapter)
    assert hw.matmul_intensity(1, 8192, 8192, 2) == pytest.approx(1.0, rel=1e-3)
    assert hw.matmul_intensity(64, 8192, 8192, 2) == pytest.approx(64, rel=0.02)


def test_attainable_flops_is_the_roofline():
    peak, bw = 100.0, 10.0
    assert hw.attainable_flops(1.0, peak, bw) == 10.0
    assert hw.attainable_flops(10.0, peak, bw) == 100.0
    assert hw.attainable_flops(1e6, peak, bw) == 100.0
    assert hw.roofline_time(200.0, 10.0, peak, bw) == 2.0 and hw.roofline_time(10.0, 100.0, peak, bw) == 10.0


@pytest.mark.parametrize("bad", [dict(intensity=0), dict(intensity=-1), dict(peak_flops=float("nan")), dict(bandwidth=True)])
def test_bad_inputs_raise(bad):
    args = dict(intensity=1.0, peak_flops=1.0, bandwidth=1.0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        hw.attainable_flops(**args)
    with pytest.raises(ValueError, match="m must be"):
        hw.matmul_intensity(0, 1, 1, 2)


def test_chip_table_ridges():
    # ridge points from the vendors' datasheets (dense bf16 FLOP/s ÷ HBM bandwidth)
    for chip, ridge in [(hw.A100_SXM, 153), (hw.H100_SXM, 295), (hw.H200, 206), (hw.TPU_V5E, 240), (hw.TPU_V6E, 560)]:
        assert chip.ridge == pytest.approx(ridge, rel=0.01), chip.name
    assert all(c.source for c in hw.CHIPS.values())


def test_decode_step_time():
    kv = hw.kv_bytes_per_token(32, 8, 128, 2)
    assert kv == 2 * 32 * 8 * 128 * 2
    one = hw.decode_step_time(hw.H100_SXM, 8e9, 1, 0, kv)
    assert one["regime"] == "memory-bound" and one["step_s"] == pytest.approx(16e9 / 3.35e12)
    # with no KV reads the crossover batch is the ridge point (bf16 weights: 2 FLOPs per 2 bytes per token)
    assert hw.decode_step_time(hw.H100_SXM, 8e9, 280, 0, kv)["regime"] == "memory-bound"
    assert hw.decode_step_time(hw.H100_SXM, 8e9, 310, 0, kv)["regime"] == "compute-bound"
    # long contexts add KV bytes per sequence, so the same batch is memory-bound again
    assert hw.decode_step_time(hw.H100_SXM, 8e9, 310, 32768, kv)["regime"] == "memory-bound"
    b = hw.compute_bound_batch(hw.H100_SXM, 8e9, 0, kv)
    assert b == pytest.approx(hw.H100_SXM.ridge)  # 2 B/param, 2 FLOPs/param: the crossover is the ridge
    b = hw.compute_bound_batch(hw.H100_SXM, 8e9, 256, kv)
    step = hw.decode_step_time(hw.H100_SXM, 8e9, math.floor(b), 256, kv)  # just below the crossover
    assert hw.decode_step_time(hw.H100_SXM, 8e9, math.ceil(b), 256, kv)["regime"] == "compute-bound" and step["regime"] == "memory-bound"
    assert hw.compute_bound_batch(hw.H100_SXM, 8e9, 10**6, kv) == math.inf


def test_machine_description_reports_this_machine():
    desc = hw.machine_description()
    assert desc["cpu"] == hw.cpu_model() and desc["usable_cores"] == hw.usable_cores()
    if hasattr(os, "sched_getaffinity"):
        assert hw.usable_cores() == len(os.sched_getaffinity(0))
    assert desc["torch_threads"] == torch.get_num_threads()


@pytest.mark.parametrize("llc, ram, want", [
    (8 * MiB, 64 * 1024 * MiB, 32 * MiB),  # 4× the cache fits easily in RAM
    (8 * MiB, 300 * MiB, 10 * MiB),  # RAM-limited: 3 arrays share 10% of 300 MiB
    (8 * MiB, 3 * MiB, 1 * MiB),  # never below 1 MiB
    (1024 * MiB, 1024**2 * MiB, 1024 * MiB),  # capped at 1 GiB per array
])
def test_bandwidth_arrays_are_sized_from_cache_and_ram(monkeypatch, llc, ram, want):
    monkeypatch.setattr(hw, "last_level_cache_bytes", lambda: llc)
    monkeypatch.setattr(hw, "available_memory_bytes", lambda: ram)
    assert hw.bandwidth_array_bytes() == want


def test_peak_flops_measurement_is_sane_and_quick():
    m = hw.measure_peak_flops(torch.float32, max_n=256, max_seconds=1.0, repeats=3)
    assert m.unit == "FLOP/s" and 1e6 < m.value < 1e15 and m.value == max(m.samples)
    assert "float32" in m.method and len(m.samples) >= 1
    with pytest.raises(ValueError, match="dtype"):
        hw.measure_peak_flops(torch.int32)


def test_big_matmul_beats_tiny_one():
    # 8³ is a few µs of overhead around 1 kFLOP; 512³ is 268 MFLOP of real work (small
    # matmuls are overhead-bound) — a gap of orders of magnitude, so noise from other programs cannot flip it
    big = hw.measure_peak_flops(torch.float32, max_n=512, max_seconds=2.0, repeats=5, threads=1)
    tiny = hw.measure_peak_flops(torch.float32, max_n=8, max_seconds=0.5, repeats=20, threads=1)
    assert "(8×8)" in tiny.method and "(512×512)" in big.method
    assert big.value > 3 * tiny.value


def test_bandwidth_measurement_is_sane_and_quick():
    for kind in ("copy", "triad"):
        m = hw.measure_bandwidth(kind, array_bytes=8 * 1024**2, repeats=3, max_seconds=1.0)
        assert m.unit == "B/s" and 1e7 < m.value < 1e13 and kind in m.method
    with pytest.raises(ValueError, match="kind"):
        hw.measure_bandwidth("scale")
    assert math.isfinite(hw.measure_bandwidth("copy", array_bytes=1024**2, repeats=1).value)


def test_thread_choice_and_restore():
    before = torch.get_num_threads()
    assert hw.best_threads(max_seconds=0.5) in (1, hw.machine_description()["usable_cores"])
    m = hw.measure_peak_flops(torch.float32, max_n=128, max_seconds=0.5, repeats=2, threads=1)
    assert "1 thread(s)" in m.method and torch.get_num_threads() == before
    assert "1 thread(s)" in hw.measure_bandwidth("copy", array_bytes=1024**2, repeats=1, threads=1).method
    with pytest.raises(ValueError, match="threads"):
        hw.measure_peak_flops(threads=0)


def test_decode_capacity_check():
    kv = hw.kv_bytes_per_token(32, 8, 128, 2)
    # TPU v5e holds 16 GB: 8e9 bf16 weights alone fill it, so nothing fits
    assert hw.max_decode_batch(hw.TPU_V5E, 8e9, 4096, kv) == 0 and not hw.decode_step_time(hw.TPU_V5E, 8e9, 1, 4096, kv)["fits"]
    b = hw.max_decode_batch(hw.H100_SXM, 8e9, 4096, kv)
    assert b == (80e9 - 16e9) // (4096 * kv)
    assert hw.decode_step_time(hw.H100_SXM, 8e9, b, 4096, kv)["fits"]
    assert not hw.decode_step_time(hw.H100_SXM, 8e9, b + 1, 4096, kv)["fits"]
    # the example: batch 4096 at a 32k context is ≈17.6 TB of KV cache
    step = hw.decode_step_time(hw.H100_SXM, 8e9, 4096, 32768, kv)
    assert step["resident_bytes"] - 16e9 == pytest.approx(17.6e12, rel=0.01) and not step["fits"]


def test_bandwidth_staircase_and_levels():
    small = hw.measure_read_bandwidth(16 * 1024, repeats=2, max_seconds=0.2, threads=1)
    assert small.value > 1e9 and "sweeps" in small.method  # a 16 KiB set is swept ≥ 64 times per call
    stairs = hw.bandwidth_staircase([16 * 1024, 1 << 20], repeats=2, max_seconds=0.2, threads=1)
    assert [s for s, _ in stairs] == [16 * 1024, 1 << 20]
    assert hw.roof_at(1000, stairs) == stairs[0][1].value and hw.roof_at(1 << 30, stairs) == stairs[-1][1].value
    # the upper bound reads the largest swept set at or below the working set: between the two points, the smaller
    assert hw.roof_at(1 << 19, stairs, upper_bound=True) == stairs[0][1].value
    assert hw.roof_at(1 << 19, stairs) == stairs[1][1].value
    assert hw.cache_level(1) in set(hw.cache_sizes()) | {"DRAM"} and hw.cache_level(1 << 50) == "DRAM"
    with pytest.raises(ValueError, match="working_set_bytes"):
        hw.measure_read_bandwidth(0)
