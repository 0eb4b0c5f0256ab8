"""Hardware: real chips' and links' specs (one table), the roofline arithmetic, and probes and
measurements of *this* machine. Part of the core: labs 03 and 04 and the doctor read it.

Time of a kernel ≥ max(FLOPs / peak FLOP/s, bytes / bandwidth); its arithmetic intensity is
FLOPs / bytes, and it is compute-bound when that exceeds the ridge point peak / bandwidth
("How to Scale Your Model", Austin et al. 2025, roofline chapter).

Left out on purpose: how caches are organised (lines, associativity, replacement — the staircase
measures each level's bandwidth, not its policy), clock and power throttling, and FLOP/s of dtypes
other than bf16 for the real chips (the course's reference table lists dense bf16 only).

    >>> matmul_intensity(4096, 4096, 4096, 2)          # big bf16 matmul: far above any ridge
    1365.33...
    >>> attainable_flops(1.0, H100_SXM.bf16_flops, H100_SXM.hbm_bandwidth) / 1e12   # AI = 1
    3.35
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from labutils import torch_threads

# ----------------------------------------------------------------------------- real chips


@dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # dense bf16 FLOP/s (no 2:4 sparsity)
    hbm_bytes: float  # accelerator memory, bytes
    hbm_bandwidth: float  # bytes/s
    link: str  # scale-up interconnect, as the vendor states it
    source: str

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound on this chip."""
        return self.bf16_flops / self.hbm_bandwidth


_BOOK = "Austin et al. 2025, 'How to Scale Your Model' (chip tables)"
# Vendors' datasheets (dense bf16 FLOP/s, HBM capacity and bandwidth) and the book's chip tables (Austin et al. 2025).
A100_SXM = Chip("A100 SXM", 312e12, 80e9, 2.04e12, "NVLink 600 GB/s bidi", "NVIDIA A100 datasheet; " + _BOOK)
H100_SXM = Chip("H100 SXM", 989e12, 80e9, 3.35e12, "NVLink 900 GB/s bidi", "NVIDIA H100 datasheet (1,979 TF is with 2:4 sparsity); " + _BOOK)
H200 = Chip("H200", 989e12, 141e9, 4.8e12, "NVLink 900 GB/s bidi", "NVIDIA H200 datasheet; " + _BOOK)
B200 = Chip("B200", 2.25e15, 180e9, 8.0e12, "NVLink 1.8 TB/s bidi", "NVIDIA B200 datasheet (≈2.25 PF dense, ≈180–192 GB); " + _BOOK)
TPU_V4 = Chip("TPU v4", 275e12, 32e9, 1.2e12, "ICI 4.5e10 B/s per link one-way", "Google Cloud TPU v4 docs; " + _BOOK)
TPU_V5E = Chip("TPU v5e", 197e12, 16e9, 0.82e12, "ICI 4.5e10 B/s per link one-way", "Google Cloud TPU v5e docs; " + _BOOK)
TPU_V5P = Chip("TPU v5p", 459e12, 95e9, 2.77e12, "ICI 9e10 B/s per link one-way", "Google Cloud TPU v5p docs; " + _BOOK)
TPU_V6E = Chip("TPU v6e", 918e12, 32e9, 1.64e12, "ICI 9e10 B/s per link one-way", "Google Cloud TPU v6e docs; " + _BOOK)
CHIPS = {c.name: c for c in (A100_SXM, H100_SXM, H200, B200, TPU_V4, TPU_V5E, TPU_V5P, TPU_V6E)}


@dataclass(frozen=True)
class Link:
    """A scale-up or scale-out link as the α–β model sees it: bandwidth one way per chip, latency per message."""

    name: str
    bandwidth: float  # bytes/s, one way, per chip
    alpha_s: float  # seconds per message
    source: str


# α = 0.68 µs per peer message: solved from DeepEP's low-latency kernels (github.com/deepseek-ai/DeepEP, README's
# low-latency table, H800, 128 tokens per batch, hidden 7168, top-8: dispatch + combine 77 + 114 µs at EP8 after
# the 2025-06-05 update, PR #173; 194 + 360 µs at EP256); we assume the same α over NVLink and InfiniBand. Such a
# benchmark is bandwidth-bound, so α is uncertain (the notebook shows verdicts as a function of it). TPU: α = 1 µs,
# the book's rule that collectives are latency-bound below ≈ W × 1 µs bytes (Austin et al. 2025, inference
# chapter, appendix C); the torus topology is left out.
DEEPEP_ALPHA_S = 0.68e-6
NVLINK_H100 = Link("NVLink (H100)", 450e9, DEEPEP_ALPHA_S,
                   "NVLink 900 GB/s bidirectional = 450 GB/s one way per H100, domains of 8 GPUs (NVIDIA H100 datasheet)")
INFINIBAND = Link("InfiniBand", 50e9, DEEPEP_ALPHA_S,
                  "InfiniBand 50 GB/s per GPU, beside NVLink's 160 GB/s on H800 (DeepSeek-V3 report, arXiv 2412.19437)")
ICI_V5P = Link("ICI (TPU v5p)", 9e10, 1e-6, "ICI 9e10 B/s per link one way (Google Cloud TPU v5p docs; " + _BOOK + ")")
LINKS = {link.name: link for link in (NVLINK_H100, INFINIBAND, ICI_V5P)}

# ----------------------------------------------------------------------------- the arithmetic


def _positive(name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return float(x)


def matmul_intensity(m: int, k: int, n: int, bytes_per_element: float) -> float:
    """FLOPs per byte of (m, k) @ (k, n) reading A and B and writing C once: 2mkn / (bytes·(mk + kn + mn)).

    >>> matmul_intensity(1, 4096, 4096, 2)   # a decode GEMV in bf16: ≈ 1 FLOP per byte
    0.99...
    """
    m, k, n = (_positive(s, v) for s, v in (("m", m), ("k", k), ("n", n)))
    b = _positive("bytes_per_element", bytes_per_element)
    return 2 * m * k * n / (b * (m * k + k * n + m * n))


def attainable_flops(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roofline: min(peak, intensity · bandwidth) FLOP/s."""
    return min(_positive("peak_flops", peak_flops), _positive("intensity", intensity) * _positive("bandwidth", bandwidth))


def roofline_time(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float) -> float:
    """Lower bound on run time (s): max(FLOPs / peak, bytes / bandwidth)."""
    if flops < 0 or bytes_moved < 0:
        raise ValueError(f"flops and bytes_moved must be >= 0, got {flops}, {bytes_moved}")
    return max(flops / _positive("peak_flops", peak_flops), bytes_moved / _positive("bandwidth", bandwidth))


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_element: float) -> float:
    """KV-cache bytes one token adds: 2 (K and V) · n_layers · n_kv_heads · head_dim · bytes ("How to Scale Your Model", inference chapter)."""
    return 2 * _positive("n_layers", n_layers) * _positive("n_kv_heads", n_kv_heads) * _positive("head_dim", head_dim) * \
        _positive("bytes_per_element", bytes_per_element)


def decode_step_time(chip: Chip, n_params: float, batch: int, context: int, kv_bytes_token: float,
                     bytes_per_param: float = 2.0) -> dict:
    """Lower bounds for one decode step of ``batch`` sequences each holding ``context`` cached tokens.

    memory: (weight bytes + batch · context · KV bytes per token) / HBM bandwidth ("How to Scale Your Model",
    inference chapter); compute: 2 · n_params · batch / peak. Attention FLOPs are left out: they are not
    small at long context (≈4 · layers · d_model · context per token, comparable to 2N at 32k), but they
    come with the KV reads, so the KV bytes cap the step's intensity at ≈ 2N / (context · KV bytes per
    token) however large the batch — the memory bound stays the binding one there.
    """
    if batch < 1 or context < 0:
        raise ValueError(f"batch must be >= 1 and context >= 0, got {batch}, {context}")
    bytes_moved = _positive("n_params", n_params) * _positive("bytes_per_param", bytes_per_param) + batch * context * kv_bytes_token
    flops = 2 * n_params * batch
    memory_s, compute_s = bytes_moved / chip.hbm_bandwidth, flops / chip.bf16_flops
    # a decode step reads what is resident once, so the bytes it moves are also the bytes it must hold
    return dict(memory_s=memory_s, compute_s=compute_s, step_s=max(memory_s, compute_s), intensity=flops / bytes_moved,
                regime="compute-bound" if compute_s > memory_s else "memory-bound", tokens_per_s=batch / max(memory_s, compute_s),
                resident_bytes=bytes_moved, fits=bytes_moved <= chip.hbm_bytes)


def max_decode_batch(chip: Chip, n_params: float, context: int, kv_bytes_token: float, bytes_per_param: float = 2.0) -> int:
    """Largest batch whose weights plus KV cache fit in one chip's HBM (0 when the weights alone do not fit).

    >>> max_decode_batch(H100_SXM, 8e9, 4096, kv_bytes_per_token(32, 8, 128, 2))   # 16 GB + 0.54 GB per sequence
    119
    """
    free = chip.hbm_bytes - _positive("n_params", n_params) * _positive("bytes_per_param", bytes_per_param)
    if free < 0:
        return 0
    per_seq = context * kv_bytes_token
    return 10**9 if per_seq <= 0 else int(free // per_seq)


def compute_bound_batch(chip: Chip, n_params: float, context: int, kv_bytes_token: float, bytes_per_param: float = 2.0) -> float:
    """Smallest decode batch at which compute time reaches memory time (``decode_step_time``'s two bounds);
    inf when the KV reads grow as fast as the FLOPs, so no batch is compute-bound.

    Solves 2·N·B / peak = (N·bytes + B·context·kv) / bandwidth for B."""
    per_seq = 2 * _positive("n_params", n_params) / chip.bf16_flops - context * kv_bytes_token / chip.hbm_bandwidth
    return math.inf if per_seq <= 0 else n_params * _positive("bytes_per_param", bytes_per_param) / chip.hbm_bandwidth / per_seq


# ----------------------------------------------------------------------------- this machine


def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cache_sizes() -> dict:
    """{'L1d': bytes, 'L2': ..., 'L3': ...} from /sys (Linux) or sysctl (macOS); {} when unknown."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            read = lambda f: open(os.path.join(base, entry, f)).read().strip()  # noqa: E731
            level, kind, size = read("level"), read("type"), read("size")
            if kind == "Instruction":
                continue
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1], 1)
            out[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * mult
    except (OSError, ValueError):
        pass
    if not out:
        import subprocess

        for key, name in (("hw.l1dcachesize", "L1d"), ("hw.l2cachesize", "L2"), ("hw.l3cachesize", "L3")):
            try:
                v = int(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip())
                if v > 0:
                    out[name] = v
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
    return out


def last_level_cache_bytes(default: int = 32 * 1024**2) -> int:
    """The largest cache found (the last level); ``default`` (32 MiB, a generous desktop L3) when unknown."""
    sizes = cache_sizes()
    return max(sizes.values()) if sizes else default


def available_memory_bytes() -> int:
    """RAM available to new allocations now (psutil, else /proc/meminfo, else 2 GiB)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * 1024**3


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_description() -> dict:
    """What the measurements ran on: CPU, usable cores, torch threads, caches, RAM, native bf16 support."""
    import torch

    flags = cpu_flags()
    native_bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"}) or (["arm64 (bf16 varies)"] if os.uname().machine == "arm64" else [])
    return dict(cpu=cpu_model(), usable_cores=usable_cores(), torch_threads=torch.get_num_threads(),
                caches={k: f"{v / 1024:.0f} KiB" if v < 1024**2 else f"{v / 1024**2:.0f} MiB" for k, v in cache_sizes().items()},
                ram_available=f"{available_memory_bytes() / 1024**3:.1f} GiB",
                native_bf16=", ".join(native_bf16) or "no (no avx512_bf16/amx: bf16 matmuls are converted or emulated)",
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")


@dataclass
class Measurement:
    """One measured quantity: the best value, its unit, every sample behind it, and how it was measured."""

    value: float
    unit: str
    samples: list = field(default_factory=list)
    method: str = ""

    def __str__(self):
        scale, prefix = next((s, p) for s, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")) if abs(self.value) >= s or s == 1)
        return f"{self.value / scale:.3g} {prefix}{self.unit}"


def best_time(fn, *, repeats: int = 5, warmup: int = 1, max_seconds: float = 2.0, sync=None) -> list:
    """Wall times (s) of ``fn()`` after ``warmup`` calls: ``repeats`` samples, fewer if ``max_seconds`` runs out."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return times


def best_threads(max_seconds: float = 1.5) -> int:
    """1 or all usable cores, whichever runs a 512² fp32 matmul and a 4M-element add faster right now.

    On a busy machine (other programs on the same cores) one thread often beats several that wait
    for each other; on an idle one, all cores win."""
    import torch

    cores = usable_cores()
    if cores == 1:
        return 1
    a, x = torch.randn(512, 512), torch.rand(1 << 22)
    out = torch.empty_like(x)
    work = lambda: (a @ a, torch.add(x, x, out=out))  # noqa: E731
    timings = {}
    for n in (1, cores, 1, cores):  # interleaved, so a burst of load hits both
        with torch_threads(n):
            t = min(best_time(work, repeats=5, max_seconds=max_seconds / 4))
        timings[n] = min(t, timings.get(n, math.inf))
    return min(timings, key=timings.get)


def measure_peak_flops(dtype=None, *, device: str = "cpu", max_n: int = 4096, target_s: float = 0.25,
                       max_seconds: float = 5.0, repeats: int = 5, threads: int | None = None) -> Measurement:
    """Peak matmul FLOP/s: grow a square matmul until one call takes ≈ ``target_s`` (or ``max_n``), then best of
    ``repeats`` after a warm-up. Sizes adapt to the machine, so a slow dtype (emulated bf16) stays quick."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    _positive("max_seconds", max_seconds)
    if device != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but torch sees no CUDA GPU")
    with torch_threads(threads):
        return _peak(torch, dtype, device, max_n, target_s, max_seconds, repeats)


def _peak(torch, dtype, device, max_n, target_s, max_seconds, repeats):
    sync = torch.cuda.synchronize if device != "cpu" else None
    n, start = min(64, int(max_n)), time.perf_counter()
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t = min(best_time(lambda: a @ b, repeats=2, warmup=1, max_seconds=target_s, sync=sync))
        elapsed = time.perf_counter() - start
        # stop growing at the size cap, at the target time, or when 8× (the next size) would blow the budget
        if 2 * n > max_n or t >= target_s or elapsed + 8 * t * (repeats + 2) > max_seconds:
            break
        n *= 2
    left = max(max_seconds - (time.perf_counter() - start), t)
    times = best_time(lambda: a @ b, repeats=repeats, warmup=0, max_seconds=left, sync=sync)
    samples = [2 * n**3 / s for s in times]
    return Measurement(max(samples), "FLOP/s", samples,
                       f"torch ({n}×{n}) @ ({n}×{n}) {str(dtype).replace('torch.', '')} on {device}, "
                       f"{torch.get_num_threads() if device == 'cpu' else 'all'} thread(s), best of {len(samples)} after warm-up")


def bandwidth_array_bytes(n_arrays: int = 3, *, cache_multiple: float = 4.0, ram_fraction: float = 0.1,
                          cap: int = 1024**3) -> int:
    """Bytes per array for a STREAM-style run: ≥ ``cache_multiple`` × last-level cache (so it cannot hide in
    cache), but all arrays together ≤ ``ram_fraction`` of available RAM and each ≤ ``cap``."""
    want = cache_multiple * last_level_cache_bytes()
    allowed = min(ram_fraction * available_memory_bytes() / n_arrays, cap)
    return int(max(min(want, allowed), 1024**2))


def measure_bandwidth(kind: str = "triad", *, array_bytes: int | None = None, repeats: int = 5,
                      max_seconds: float = 3.0, device: str = "cpu", threads: int | None = None) -> Measurement:
    """Memory bandwidth (bytes/s) of a STREAM-style kernel on float64 arrays, best of ``repeats``.

    copy: a[:] = b (16 B per element: one read, one write); triad: a = b + s·c in one fused pass
    (24 B per element; torch.add with alpha= does it in one pass, numpy's b + s*c would take two).
    """
    import torch

    if kind not in ("copy", "triad"):
        raise ValueError(f"kind must be 'copy' or 'triad', got {kind!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but torch sees no CUDA GPU")
    nbytes = bandwidth_array_bytes() if array_bytes is None else int(_positive("array_bytes", array_bytes))
    n = max(nbytes // 8, 1)
    b, c = torch.rand(n, dtype=torch.float64, device=device), torch.rand(n, dtype=torch.float64, device=device)
    a = torch.empty_like(b)
    fn = (lambda: a.copy_(b)) if kind == "copy" else (lambda: torch.add(b, c, alpha=3.0, out=a))
    per_element = 16 if kind == "copy" else 24
    with torch_threads(threads):
        times = best_time(fn, repeats=repeats, warmup=1, max_seconds=max_seconds,
                          sync=torch.cuda.synchronize if device != "cpu" else None)
    samples = [per_element * n / t for t in times]
    llc = last_level_cache_bytes()
    note = "" if 8 * n >= 4 * llc else f" — smaller than 4× the {llc / 1024**2:.0f} MiB cache (RAM limit): may read partly from cache"
    return Measurement(max(samples), "B/s", samples,
                       f"STREAM {kind}, 3 float64 arrays of {8 * n / 1024**2:.0f} MiB, {per_element} B/element, "
                       f"torch on {device}, {threads or torch.get_num_threads()} thread(s), best of {len(samples)}{note}")


# ----------------------------------------------------------------------------- the memory hierarchy


def measure_read_bandwidth(working_set_bytes: int, *, min_bytes_per_call: int = 1 << 20, repeats: int = 5,
                           max_seconds: float = 0.5, threads: int | None = None) -> Measurement:
    """Read bandwidth (B/s) from a working set of ``working_set_bytes``: a float32 vector summed again and again.
    One timed call sweeps it as often as it takes to read ≥ ``min_bytes_per_call`` — one torch.sum along the rows
    of a stride-0 expanded view, one sum per sweep — so the per-call overhead (µs) is paid once per call, not
    once per sweep.

    >>> measure_read_bandwidth(64 * 1024, repeats=2, threads=1).value > 1e9   # a working set that fits in any L2
    True
    """
    import torch

    n = max(int(_positive("working_set_bytes", working_set_bytes)) // 4, 16)  # float32 elements of x
    sweeps = max(1, math.ceil(_positive("min_bytes_per_call", min_bytes_per_call) / (4 * n)))
    x, sums = torch.rand(n), torch.empty(sweeps)
    view = x.expand(sweeps, n)  # (sweeps, n), stride 0 along the sweeps: the same n floats each time
    with torch_threads(threads):
        times = best_time(lambda: torch.sum(view, 1, out=sums), repeats=repeats, warmup=1, max_seconds=max_seconds)
    samples = [4 * n * sweeps / t for t in times]
    return Measurement(max(samples), "B/s", samples, f"torch.sum over {sweeps} sweeps of {4 * n / 1024:,.0f} KiB, "
                       f"{threads or torch.get_num_threads()} thread(s), best of {len(samples)}")


def bandwidth_staircase(sizes=None, **kwargs) -> list:
    """[(working-set bytes, Measurement)] from 4 KiB to 4× the last-level cache (powers of 4, RAM permitting):
    the steps are L1, L2, L3 and DRAM."""
    if sizes is None:
        top = min(4 * last_level_cache_bytes(), available_memory_bytes() // 8)
        sizes = [4096 * 4**i for i in range(20) if 4096 * 4**i < top] + [top]
    return [(int(s), measure_read_bandwidth(s, **kwargs)) for s in sizes]


def cache_level(working_set_bytes: float) -> str:
    """The smallest OS-reported cache that holds ``working_set_bytes``, or 'DRAM'."""
    for name, size in sorted(cache_sizes().items(), key=lambda kv: kv[1]):
        if working_set_bytes <= size:
            return name
    return "DRAM"


def roof_at(working_set_bytes: float, staircase: list, *, upper_bound: bool = False) -> float:
    """The bandwidth measured at the smallest swept working set ≥ ``working_set_bytes`` (the largest one past the end).

    upper_bound=True: at the largest swept working set ≤ ``working_set_bytes`` instead (the first one below the
    start). Bandwidth only falls as the working set grows, so that one bounds the op from above: a roof.

    >>> stairs = [(1024, Measurement(100e9, "B/s")), (4096, Measurement(40e9, "B/s"))]
    >>> roof_at(2048, stairs) / 1e9, roof_at(2048, stairs, upper_bound=True) / 1e9
    (40.0, 100.0)
    """
    if upper_bound:
        below = [m.value for s, m in staircase if s <= working_set_bytes]
        return below[-1] if below else staircase[0][1].value
    fits = [m.value for s, m in staircase if s >= working_set_bytes]
    return fits[0] if fits else staircase[-1][1].value
