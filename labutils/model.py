"""TinyGPT: a decoder-only transformer written out plainly, plus parameter and FLOP counting.

Pre-norm blocks, causal self-attention through ``F.scaled_dot_product_attention``, learned
positional embeddings, an untied output head. Left out on purpose: dropout, weight tying,
KV caching, rotary embeddings — none changes what the labs teach.

    >>> cfg = GPTConfig(vocab_size=64, context_length=64, d_model=32, n_layers=2, n_heads=2)
    >>> count_params(cfg)                  # Kaplan's N: non-embedding parameters
    25472
    >>> train_flops(count_params(cfg, embeddings=True), 1_000_000)   # 6·N·D
    189696000000.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from labutils import positive_int


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int | None = None  # defaults to 4·d_model

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            positive_int(f"GPTConfig.{name}", getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        else:
            positive_int("GPTConfig.d_ff", self.d_ff, allow_none=True)

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x)). ``mlp`` can be swapped (the MoE lab does)."""

    def __init__(self, cfg: GPTConfig, mlp: nn.Module | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = mlp if mlp is not None else MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Decoder-only transformer: tokens (B, T) -> logits (B, T, V); logits[:, t] predict token t+1."""

    def __init__(self, config: GPTConfig, *, mlp_factory=None):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"TinyGPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        make_mlp = mlp_factory or (lambda cfg: None)
        self.blocks = nn.ModuleList(Block(config, make_mlp(config)) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"TinyGPT expects int64 tokens of shape (B, T), got {got}")
        B, T = tokens.shape
        if T > self.config.context_length:
            raise ValueError(f"sequence length {T} exceeds context_length {self.config.context_length}")
        pos = torch.arange(T, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


_EMBEDDING_NAMES = ("tok_emb.", "pos_emb.", "head.")


def count_params(model_or_config, *, embeddings: bool = False) -> int:
    """Parameters of a TinyGPT (or of the model a GPTConfig would build).

    embeddings=False: Kaplan's N — everything except the token embedding, positional embedding
    and output head. embeddings=True: all parameters (Chinchilla's N).
    """
    if isinstance(model_or_config, GPTConfig):
        with torch.device("meta"):  # build without allocating memory
            model = TinyGPT(model_or_config)
    elif isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        raise ValueError(f"count_params needs a GPTConfig or an nn.Module, got {type(model_or_config).__name__}")
    return sum(p.numel() for n, p in model.named_parameters() if embeddings or not n.startswith(_EMBEDDING_NAMES))


def train_flops(n_params, n_tokens) -> float:
    """Training compute C ≈ 6·N·D (2 FLOPs per parameter per token forward, 4 backward; Kaplan et al. 2020)."""
    for name, v in (("n_params", n_params), ("n_tokens", n_tokens)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    return 6.0 * n_params * n_tokens


def flops_per_token(config: GPTConfig, *, context_length: int | None = None, embeddings: bool = True) -> float:
    """Training FLOPs per token including attention: 6·N + 6·n_layers·T·d_model.

    The attention term (scores QKᵀ and the weighted sum of V, forward and backward, counted over
    the full T×T matrix as in Kaplan et al. 2020, Table 1) adds T/(12·d_model) to each layer's
    12·d_model² cost: negligible for large models (d_model 4096, T 2048: 4%), but for tiny models
    with long contexts it is a large share (d_model 32, T 64: 17%) and 6·N·D undercounts.
    ``embeddings=True`` includes the output head's matmul in N (Porian et al. 2024 show that leaving
    it out is one cause of the Kaplan/Chinchilla disagreement); the embedding lookups cost ≈0 FLOPs.
    """
    if not isinstance(config, GPTConfig):
        raise ValueError(f"flops_per_token needs a GPTConfig, got {type(config).__name__}")
    T = config.context_length if context_length is None else context_length
    n = count_params(config, embeddings=False)
    if embeddings:
        n += config.d_model * config.vocab_size  # the head is a matmul; embedding tables are lookups
    return 6.0 * n + 6.0 * config.n_layers * T * config.d_model


def honest_train_flops(config: GPTConfig, n_tokens) -> float:
    """Training FLOPs of ``n_tokens`` tokens counted from the model's matmuls: 6·(N_blocks + head)·D plus attention.

    Unlike ``train_flops(N_all, D)`` = 6·N_all·D, it charges nothing for the token and position
    embedding lookups (a table read, no multiply) and adds the attention scores and weighted sum
    (6·n_layers·T·d_model per token, full T×T as in Kaplan et al. 2020, Table 1). For the tiny 1-layer
    shapes of lab 01, 6·N_all·D overstates it; for deep, wide models the two agree to a few percent.

        >>> cfg = GPTConfig(vocab_size=64, context_length=64, d_model=12, n_layers=1, n_heads=2)
        >>> round(honest_train_flops(cfg, 1000) / train_flops(count_params(cfg, embeddings=True), 1000), 3)
        0.818
    """
    if not (isinstance(n_tokens, (int, float)) and math.isfinite(n_tokens) and n_tokens >= 0):
        raise ValueError(f"n_tokens must be a non-negative number, got {n_tokens!r}")
    return flops_per_token(config, embeddings=True) * float(n_tokens)
