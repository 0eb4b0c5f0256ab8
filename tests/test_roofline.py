"""Roofline arithmetic against its closed forms; the measurements return sane values quickly."""

import math

import pytest
import torch

from labutils import roofline as rl


def test_matmul_intensity_closed_form():
    assert rl.matmul_intensity(2, 3, 4, 2) == pytest.approx(2 * 2 * 3 * 4 / (2 * (6 + 12 + 8)))
    assert rl.matmul_intensity(4096, 4096, 4096, 2) == pytest.approx(4096 / 3)
    # a decode GEMV in bf16 is ≈ 1 FLOP/B, and AI ≈ B when B ≪ D, F ("How to Scale Your Model", roofline chapter)
    assert rl.matmul_intensity(1, 8192, 8192, 2) == pytest.approx(1.0, rel=1e-3)
    assert rl.matmul_intensity(64, 8192, 8192, 2) == pytest.approx(64, rel=0.02)


def test_attainable_flops_is_the_roofline():
    peak, bw = 100.0, 10.0
    assert rl.attainable_flops(1.0, peak, bw) == 10.0
    assert rl.attainable_flops(10.0, peak, bw) == 100.0
    assert rl.attainable_flops(1e6, peak, bw) == 100.0
    assert rl.roofline_time(200.0, 10.0, peak, bw) == 2.0 and rl.roofline_time(10.0, 100.0, peak, bw) == 10.0


@pytest.mark.parametrize("bad", [dict(intensity=0), dict(intensity=-1), dict(peak_flops=float("nan")), dict(bandwidth=True)])
def test_bad_inputs_raise(bad):
    args = dict(intensity=1.0, peak_flops=1.0, bandwidth=1.0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        rl.attainable_flops(**args)
    with pytest.raises(ValueError, match="m must be"):
        rl.matmul_intensity(0, 1, 1, 2)


def test_chip_table_ridges():
    # ridge points from the vendors' datasheets (dense bf16 FLOP/s ÷ HBM bandwidth)
    for chip, ridge in [(rl.A100_SXM, 153), (rl.H100_SXM, 295), (rl.H200, 206), (rl.TPU_V5E, 240), (rl.TPU_V6E, 560)]:
        assert chip.ridge == pytest.approx(ridge, rel=0.01), chip.name
    assert all(c.source for c in rl.CHIPS.values())


def test_decode_step_time():
    kv = rl.kv_bytes_per_token(32, 8, 128, 2)
    assert kv == 2 * 32 * 8 * 128 * 2
    one = rl.decode_step_time(rl.H100_SXM, 8e9, 1, 0, kv)
    assert one["regime"] == "memory-bound" and one["step_s"] == pytest.approx(16e9 / 3.35e12)
    # with no KV reads the crossover batch is the ridge point (bf16 weights: 2 FLOPs per 2 bytes per token)
    assert rl.decode_step_time(rl.H100_SXM, 8e9, 280, 0, kv)["regime"] == "memory-bound"
    assert rl.decode_step_time(rl.H100_SXM, 8e9, 310, 0, kv)["regime"] == "compute-bound"
    # long contexts add KV bytes per sequence, so the same batch is memory-bound again
    assert rl.decode_step_time(rl.H100_SXM, 8e9, 310, 32768, kv)["regime"] == "memory-bound"
    b = rl.compute_bound_batch(rl.H100_SXM, 8e9, 0, kv)
    assert b == pytest.approx(rl.H100_SXM.ridge)  # 2 B/param, 2 FLOPs/param: the crossover is the ridge
    b = rl.compute_bound_batch(rl.H100_SXM, 8e9, 256, kv)
    step = rl.decode_step_time(rl.H100_SXM, 8e9, math.floor(b), 256, kv)  # just below the crossover
    assert rl.decode_step_time(rl.H100_SXM, 8e9, math.ceil(b), 256, kv)["regime"] == "compute-bound" and step["regime"] == "memory-bound"
    assert rl.compute_bound_batch(rl.H100_SXM, 8e9, 10**6, kv) == math.inf


def test_machine_description_and_caches():
    desc = rl.machine_description()
    assert desc["usable_cores"] >= 1 and desc["cpu"]
    assert rl.last_level_cache_bytes() > 0
    assert 1024**2 <= rl.bandwidth_array_bytes() <= 1024**3


def test_peak_flops_measurement_is_sane_and_quick():
    m = rl.measure_peak_flops(torch.float32, max_n=256, max_seconds=1.0, repeats=3)
    assert m.unit == "FLOP/s" and 1e6 < m.value < 1e15 and m.value == max(m.samples)
    assert "float32" in m.method and len(m.samples) >= 1
    with pytest.raises(ValueError, match="dtype"):
        rl.measure_peak_flops(torch.int32)


def test_big_matmul_beats_tiny_one():
    # 8³ is a few µs of overhead around 1 kFLOP; 512³ is 268 MFLOP of real work (small
    # matmuls are overhead-bound) — a gap of orders of magnitude, so noise from other programs cannot flip it
    big = rl.measure_peak_flops(torch.float32, max_n=512, max_seconds=2.0, repeats=5, threads=1)
    tiny = rl.measure_peak_flops(torch.float32, max_n=8, max_seconds=0.5, repeats=20, threads=1)
    assert "(8×8)" in tiny.method and "(512×512)" in big.method
    assert big.value > 3 * tiny.value


def test_bandwidth_measurement_is_sane_and_quick():
    for kind in ("copy", "triad"):
        m = rl.measure_bandwidth(kind, array_bytes=8 * 1024**2, repeats=3, max_seconds=1.0)
        assert m.unit == "B/s" and 1e7 < m.value < 1e13 and kind in m.method
    with pytest.raises(ValueError, match="kind"):
        rl.measure_bandwidth("scale")
    assert math.isfinite(rl.measure_bandwidth("copy", array_bytes=1024**2, repeats=1).value)


def test_thread_choice_and_restore():
    before = torch.get_num_threads()
    assert rl.best_threads(max_seconds=0.5) in (1, rl.machine_description()["usable_cores"])
    m = rl.measure_peak_flops(torch.float32, max_n=128, max_seconds=0.5, repeats=2, threads=1)
    assert "1 thread(s)" in m.method and torch.get_num_threads() == before
    assert "1 thread(s)" in rl.measure_bandwidth("copy", array_bytes=1024**2, repeats=1, threads=1).method
    with pytest.raises(ValueError, match="threads"):
        rl.measure_peak_flops(threads=0)
