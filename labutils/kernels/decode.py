"""One decode step, op by op: the weight matmuls, attention over the KV cache, and the elementwise ops,
each bounded by its own roofline and the bounds summed ("How to Scale Your Model", Austin et al. 2025,
inference chapter). Attention comes in three cache layouts: multi-head (every head caches its K and V),
grouped-query (g query heads share one KV head) and multi-head latent attention (MLA: all heads read
one compressed latent per token; DeepSeek-V2/V3, arXiv 2412.19437 §2.1).

Left out on purpose: MoE expert selection (lab 04), prefill, overlap of ops, and kernel launch overhead.

    >>> round(MLA_DEEPSEEK_V3.intensity(2), 1)      # FLOPs per byte of cache read, bf16: ≈ 2 × 128 heads
    241.8
    >>> MHA_LLAMA_8B.intensity(2), GQA_LLAMA_8B.intensity(2)
    (1.0, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from labutils.hardware import Chip


@dataclass(frozen=True)
class AttentionCache:
    """What one token leaves in the cache of one layer, and the FLOPs one query head spends on it."""

    name: str
    n_layers: int
    n_heads: int  # query heads
    cache_elems: int  # elements cached per token per layer
    flops_per_head: int  # FLOPs per cached token per query head: scores and the weighted sum

    def kv_bytes_per_token(self, bytes_per_element: float = 2) -> float:
        return self.n_layers * self.cache_elems * bytes_per_element

    def intensity(self, bytes_per_element: float = 2) -> float:
        """Decode attention's FLOPs per byte of cache read (queries and outputs are small beside the cache)."""
        return self.n_heads * self.flops_per_head / (self.cache_elems * bytes_per_element)


def mha(name, n_layers, n_heads, head_dim, n_kv_heads=None) -> AttentionCache:
    """Multi-head (n_kv_heads = n_heads) or grouped-query attention: K and V of head_dim per KV head."""
    n_kv = n_kv_heads or n_heads
    return AttentionCache(name, n_layers, n_heads, 2 * n_kv * head_dim, 4 * head_dim)


def mla(name, n_layers, n_heads, latent_dim, rope_dim) -> AttentionCache:
    """MLA with the up-projections absorbed into q and o: each head scores against [latent, rope key]
    (2·(latent + rope) FLOPs per token) and sums the latent (2·latent)."""
    return AttentionCache(name, n_layers, n_heads, latent_dim + rope_dim, 2 * (latent_dim + rope_dim) + 2 * latent_dim)


# Llama 3 8B: 32 layers, 32 query heads, 8 KV heads of dimension 128 (Llama Team 2024, arXiv 2407.21783, Table 3)
GQA_LLAMA_8B = mha("GQA (Llama 3 8B: 8 KV heads)", 32, 32, 128, n_kv_heads=8)
MHA_LLAMA_8B = mha("MHA (the same, 32 KV heads)", 32, 32, 128)
# DeepSeek-V3: 61 layers, 128 heads, KV latent d_c = 512, decoupled RoPE key 64 (arXiv 2412.19437, §4.2)
MLA_DEEPSEEK_V3 = mla("MLA (DeepSeek-V3)", 61, 128, 512, 64)


def op_bound(flops: float, bytes_moved: float, chip: Chip) -> dict:
    """One op's roofline: its time bound, intensity and which roof binds."""
    compute_s, memory_s = flops / chip.bf16_flops, bytes_moved / chip.hbm_bandwidth
    return dict(flops=flops, bytes=bytes_moved, intensity=flops / bytes_moved, time_s=max(compute_s, memory_s),
                regime="compute" if compute_s > memory_s else "memory")


def decode_ops(chip: Chip, n_params: float, d_model: int, attn: AttentionCache, batch: int, context: int,
               bytes_per_param: float = 2.0, passes_per_layer: int = 12) -> dict:
    """Per-op roofline bounds of one decode step of ``batch`` sequences with ``context`` cached tokens each.

    weights: 2·N·B FLOPs, N·bytes read once; attention: the cache read once per sequence; elementwise (norms,
    activations, residual adds): ≈ passes_per_layer reads or writes of (B, d_model) bf16 per layer at ≈1 FLOP
    per element — a rough count, small beside the rest. 'sum' adds the ops' bounds; 'aggregate' is one roofline
    over all FLOPs and bytes (the step cannot beat either).
    """
    if batch < 1 or context < 0:
        raise ValueError(f"batch must be >= 1 and context >= 0, got {batch}, {context}")
    elem = passes_per_layer * attn.n_layers * batch * d_model
    ops = {"weight matmuls": op_bound(2 * n_params * batch, n_params * bytes_per_param, chip),
           "attention (KV cache)": op_bound(max(batch * context * attn.n_layers * attn.n_heads * attn.flops_per_head,
                                                1), max(batch * context * attn.kv_bytes_per_token(), 1), chip),
           "elementwise": op_bound(elem, 2 * elem, chip)}
    flops, nbytes = sum(o["flops"] for o in ops.values()), sum(o["bytes"] for o in ops.values())
    ops["sum"] = dict(flops=flops, bytes=nbytes, time_s=sum(o["time_s"] for o in ops.values()))
    ops["aggregate"] = op_bound(flops, nbytes, chip)
    return ops
