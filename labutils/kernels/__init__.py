"""Lab 03, kernel intuition: online softmax, FlashAttention's tiled loop and fusion in numpy (``attention``),
a two-level memory simulator that counts words moved (``fastmem``) and the notebook's checkers (``checks``).
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
    memory_passes,
    merge_softmax_stats,
    online_softmax,
)
from labutils.kernels.checks import (
    BlockReader,
    check_best_tile_size,
    check_decode_attention_intensity,
    check_flash_attention,
    check_matmul_intensity,
    check_merge_softmax_stats,
    check_online_softmax,
    check_tiled_matmul,
    decode_attention_intensity_reference,
)
from labutils.kernels.fastmem import (
    FastMemory,
    FastMemoryFull,
    best_tile_size,
    flash_attention_sim,
    naive_matmul_sim,
    naive_matmul_traffic,
    standard_attention_sim,
    tiled_matmul_sim,
    tiled_matmul_traffic,
)

__all__ = [
    "attention_reference", "compile_demo", "flash_attention", "memory_passes", "merge_softmax_stats",
    "online_softmax", "BlockReader", "check_best_tile_size", "check_decode_attention_intensity",
    "check_flash_attention", "check_matmul_intensity", "check_merge_softmax_stats", "check_online_softmax",
    "check_tiled_matmul", "decode_attention_intensity_reference", "FastMemory", "FastMemoryFull", "best_tile_size",
    "flash_attention_sim", "naive_matmul_sim", "naive_matmul_traffic", "standard_attention_sim", "tiled_matmul_sim",
    "tiled_matmul_traffic"
]
