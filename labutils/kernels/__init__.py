"""Lab 03, kernel intuition: online softmax, FlashAttention's tiled loop and fusion in numpy (``attention``),
a two-level memory simulator that counts words moved (``fastmem``), the instruments that watch what a
learner's kernel reads and allocates (``reader``) and the notebook's checkers (``checks``).
The roofline arithmetic and this machine's measurements live in the core, ``labutils.hardware``.

    >>> import numpy as np
    >>> from labutils.kernels import online_softmax
    >>> online_softmax(np.array([[1.0, 2.0, 3.0]]), block_size=2).round(3)
    array([[0.09 , 0.245, 0.665]])
"""

from labutils.kernels.attention import (
    attention_reference,
    compile_demo,
    flash_attention,
    flash_attention_backward,
    flash_attention_lse,
    memory_passes,
    merge_softmax_stats,
    online_softmax,
)
from labutils.kernels.checks import (
    check_decode_attention_intensity,
    check_flash_attention,
    check_flash_attention_backward,
    check_matmul_intensity,
    check_merge_softmax_stats,
    check_min_traffic_matmul,
    check_online_softmax,
    check_tiled_matmul,
    decode_attention_intensity_reference,
)
from labutils.kernels.fastmem import (
    FastMemory,
    FastMemoryFull,
    best_tile_size,
    flash_attention2_sim,
    flash_attention_sim,
    naive_matmul_sim,
    naive_matmul_traffic,
    standard_attention_sim,
    streamed_matmul_sim,
    streamed_tile_size,
    tiled_matmul_sim,
    tiled_matmul_traffic,
)
from labutils.kernels.reader import BlockReader, peak_extra_bytes

__all__ = [
    "attention_reference", "compile_demo", "flash_attention", "flash_attention_backward", "flash_attention_lse",
    "memory_passes", "merge_softmax_stats",
    "online_softmax", "BlockReader", "peak_extra_bytes", "check_decode_attention_intensity", "check_flash_attention",
    "check_flash_attention_backward", "check_matmul_intensity", "check_merge_softmax_stats", "check_min_traffic_matmul", "check_online_softmax",
    "check_tiled_matmul", "decode_attention_intensity_reference", "FastMemory", "FastMemoryFull", "best_tile_size",
    "flash_attention2_sim", "flash_attention_sim", "naive_matmul_sim", "naive_matmul_traffic", "standard_attention_sim",
    "streamed_matmul_sim", "streamed_tile_size", "tiled_matmul_sim", "tiled_matmul_traffic",
]
