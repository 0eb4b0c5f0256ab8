"""The training loop every lab shares, with an on-disk cache of finished runs.

``train_lm`` trains a TinyGPT (or a model you pass) on fresh samples of an HMMLanguage for a
token budget, with AdamW, linear warm-up and a cosine schedule whose length matches that budget
(Chinchilla's correction of Kaplan: a schedule longer than the run biases the loss up). It
reports the eval loss next to the language's exact entropy floor.

Finished runs are cached in ``$LABUTILS_CACHE_DIR`` (default ``~/.cache/labutils``), keyed by a
hash of everything that changes the result plus the package version. Entries are written
atomically and carry a checksum; a damaged entry is recomputed. ``cache=False`` bypasses it.

Left out on purpose: data loaders, mixed precision, gradient accumulation, checkpoints mid-run.

    >>> from labutils.data import default_language
    >>> cfg = GPTConfig(vocab_size=64, context_length=64, d_model=32, n_layers=2, n_heads=2)
    >>> r = train_lm(cfg, default_language(), tokens=200_000, batch_size=16, lr=3e-3, seed=0)
    >>> r.eval_loss - r.floor      # nats above the best possible model
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from labutils.data import HMMLanguage
from labutils.model import GPTConfig, TinyGPT, count_params, flops_per_token, train_flops

EVAL_SEED = 987_654_321  # held-out text: a seed no training run uses
_MAGIC = b"LABUTILS-RUN-v1\n"


@dataclass
class RunResult:
    """What a training run leaves behind. Losses are in nats per predicted token."""

    config: dict  # everything that defined the run (the cache key is its hash)
    eval_loss: float  # mean cross-entropy on held-out text
    floor: float  # the exact entropy floor of the same held-out tokens
    curve: list  # [(tokens_seen, train_loss)] — smoothed over logging intervals
    eval_curve: list  # [(tokens_seen, eval_loss)]
    n_params: int  # all parameters (Chinchilla's N)
    n_params_nonembedding: int  # Kaplan's N
    tokens: int  # tokens actually processed (steps · batch · context)
    flops: float  # 6·N·D with N = all parameters
    flops_with_attention: float  # per-token count including attention (model.flops_per_token)
    wall_time_s: float
    state_dict: dict | None = None  # the trained weights, when asked for
    from_cache: bool = False
    extra: dict = field(default_factory=dict)  # what a loss hook chose to report

    @property
    def excess_loss(self) -> float:
        """Nats above the floor: the part of the loss a better model could still remove."""
        return self.eval_loss - self.floor

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time_s if self.wall_time_s > 0 else float("nan")


# ----------------------------------------------------------------------------- cache

def cache_dir() -> Path:
    """Where finished runs live: $LABUTILS_CACHE_DIR, else $XDG_CACHE_HOME/labutils, else ~/.cache/labutils."""
    env = os.environ.get("LABUTILS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labutils"


def fingerprint(obj) -> str:
    """A stable short hash of tensors, modules, arrays, dicts, lists and plain values.

    Use it to name a teacher or any other input in a cache key: ``fingerprint(teacher)``.
    """
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.nn.Module):
            h.update(type(x).__qualname__.encode())
            feed(x.state_dict())
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, HMMLanguage):
            h.update(b"HMM" + x.fingerprint().encode())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(f"K{k}".encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                feed(v)
        elif hasattr(x, "__array__"):
            feed(torch.as_tensor(x))
        elif isinstance(x, (str, int, float, bool, type(None))):
            h.update(repr(x).encode())
        else:
            raise ValueError(f"cannot fingerprint a {type(x).__name__}; pass a string that names it instead")

    feed(obj)
    return h.hexdigest()[:16]


def _cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / f"run-{digest}.pt"


def _cache_read(path: Path) -> RunResult | None:
    """Return the cached result, or None when absent; a damaged entry is reported and ignored."""
    if not path.exists():
        return None
    try:
        blob = path.read_bytes()
        if not blob.startswith(_MAGIC):
            raise ValueError("bad header")
        digest, payload = blob[len(_MAGIC) : len(_MAGIC) + 64], blob[len(_MAGIC) + 64 :]
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch")
        data = torch.load(io.BytesIO(payload), weights_only=False)
        return RunResult(**data)
    except Exception as err:  # any damage at all means: recompute
        warnings.warn(f"cache entry {path.name} is damaged ({err}); retraining", stacklevel=3)
        return None


def _cache_write(path: Path, result: RunResult) -> None:
    """Write atomically: a temporary file in the same folder, then rename over the target."""
    buf = io.BytesIO()
    torch.save({k: v for k, v in result.__dict__.items() if k != "from_cache"}, buf)
    payload = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- training

def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to final_fraction·lr exactly at the last step
    (Chinchilla decays the learning rate 10×)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits[:, t] predict tokens[:, t+1]. Mean over predicted tokens (nats)."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy of a model on fixed tokens (n, T), in nats."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, tokens.shape[0], batch_size):
        x = tokens[i : i + batch_size]
        total += float(lm_loss(model(x), x)) * x.shape[0]
        count += x.shape[0]
    model.train(was_training)
    return total / count


_EVAL_SETS: dict = {}  # (language fingerprint, T, n) -> (tokens, floor): the exact floor costs ≈0.5 s at S = 256


def eval_set(language: HMMLanguage, context_length: int, n_sequences: int) -> tuple[torch.Tensor, float]:
    """Held-out tokens and their exact floor (positions 1…T-1, the ones a model predicts).

    Remembered per process (keyed by the language's fingerprint), so only the first run pays for the floor.
    """
    key = (language.fingerprint(), context_length, n_sequences)
    if key not in _EVAL_SETS:
        x = language.sample(n_sequences, context_length, seed=EVAL_SEED)
        _EVAL_SETS[key] = (x, language.nll(x, from_position=1))
    x, floor = _EVAL_SETS[key]
    return x.clone(), floor  # a copy: nothing a caller does to the tokens can change the next run's eval set


def train_lm(
    config: GPTConfig,
    language: HMMLanguage,
    *,
    tokens: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup_fraction: float = 0.05,
    weight_decay: float = 0.1,
    final_lr_fraction: float = 0.1,
    eval_sequences: int = 512,
    n_evals: int = 8,
    model: torch.nn.Module | None = None,
    model_key: str | None = None,
    loss_hook=None,
    hook_key: str | None = None,
    return_state: bool = False,
    cache: bool = True,
    progress: bool = True,
    desc: str | None = None,
    threads: int | None = None,
) -> RunResult:
    """Train on fresh samples of ``language`` for ``tokens`` tokens; return a RunResult.

    model:      an untrained nn.Module to train instead of ``TinyGPT(config)`` (e.g. an MoE variant);
                it must map (B, T) tokens to (B, T, V) logits. Its architecture and initial weights
                enter the cache key automatically; add ``model_key`` to name anything else about it.
    loss_hook:  ``loss_hook(logits, tokens, model) -> loss`` replaces the next-token cross-entropy
                (e.g. distillation against a teacher). A hook changes the result, so ``hook_key``
                must name it — including the teacher's identity, e.g. ``fingerprint(teacher)``.
                A hook may return ``(loss, extras_dict)``; the last extras are kept in ``result.extra``.
    cache:      read and write the on-disk cache; ``False`` always trains (tests use this).
    threads:    torch threads while training (None: leave as is). These models are overhead-bound: on
                a busy 2-core machine 1 thread was 10–30× faster than 2 (measured). Not in the cache key.
    """
    from labutils import __version__

    if not isinstance(config, GPTConfig):
        raise ValueError(f"config must be a GPTConfig, got {type(config).__name__}")
    if not isinstance(language, HMMLanguage):
        raise ValueError(f"language must be an HMMLanguage, got {type(language).__name__}")
    if language.vocab_size != config.vocab_size:
        raise ValueError(f"config.vocab_size ({config.vocab_size}) must equal the language's vocab_size ({language.vocab_size})")
    for name, v in (("tokens", tokens), ("batch_size", batch_size), ("eval_sequences", eval_sequences), ("n_evals", n_evals)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ValueError(f"lr must be a number in (0, 1), got {lr!r}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction!r}")
    if loss_hook is not None and not hook_key:
        raise ValueError("a loss_hook changes the result, so pass hook_key= naming it (and its teacher, e.g. fingerprint(teacher))")
    T = config.context_length
    steps = tokens // (batch_size * T)
    if steps < 1:
        raise ValueError(f"tokens={tokens} is less than one batch ({batch_size}·{T} = {batch_size * T} tokens)")

    torch.manual_seed(seed)
    if model is None:
        model = TinyGPT(config)
        arch = "TinyGPT"
    else:
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        arch = f"{type(model).__module__}.{type(model).__qualname__}:{fingerprint(model)}"
    key = dict(
        version=__version__, arch=arch, model_key=model_key, config=config.to_dict(), language=language.fingerprint(),
        tokens=tokens, batch_size=batch_size, lr=lr, seed=seed, warmup_fraction=warmup_fraction,
        weight_decay=weight_decay, final_lr_fraction=final_lr_fraction, eval_sequences=eval_sequences,
        n_evals=n_evals, hook=hook_key,
    )
    path = _cache_path(key)
    if cache:
        hit = _cache_read(path)
        if hit is not None and (hit.state_dict is not None or not return_state):
            hit.from_cache = True
            return hit

    eval_tokens, floor = eval_set(language, T, eval_sequences)
    warmup_steps = max(1, int(warmup_fraction * steps)) if warmup_fraction > 0 else 0
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)],
        lr=lr, betas=(0.9, 0.95),
    )
    eval_at = {max(0, round(steps * (i + 1) / n_evals) - 1) for i in range(n_evals)}
    log_every = max(1, steps // 100)
    curve, eval_curve, extra = [], [], {}
    running, running_n = 0.0, 0

    from tqdm.auto import tqdm

    from labutils import torch_threads

    with torch_threads(threads):
        bar = tqdm(range(steps), desc=desc or f"d{config.d_model} L{config.n_layers}", disable=not progress, leave=False, unit="step")
        start = time.perf_counter()
        model.train()
        for step in bar:
            x = language.sample(batch_size, T, seed=[seed, step])  # fresh text every step: no epochs, no overfitting
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr, warmup_steps, final_lr_fraction)
            logits = model(x)
            if loss_hook is None:
                loss = lm_loss(logits, x)
            else:
                out = loss_hook(logits, x, model)
                loss, extra = (out if isinstance(out, tuple) else (out, extra))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}; try a smaller lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running, running_n = running + loss.item(), running_n + 1
            seen = (step + 1) * batch_size * T
            if (step + 1) % log_every == 0 or step == steps - 1:
                curve.append((seen, running / running_n))
                bar.set_postfix(loss=f"{running / running_n:.3f}", floor=f"{floor:.3f}")
                running, running_n = 0.0, 0
            if step in eval_at:
                eval_curve.append((seen, evaluate(model, eval_tokens)))
    wall = time.perf_counter() - start
    bar.close()

    n_all = count_params(model, embeddings=True)
    result = RunResult(
        config=key, eval_loss=eval_curve[-1][1], floor=floor, curve=curve, eval_curve=eval_curve,
        n_params=n_all, n_params_nonembedding=count_params(model, embeddings=False),
        tokens=steps * batch_size * T, flops=train_flops(n_all, steps * batch_size * T),
        flops_with_attention=flops_per_token(config) * steps * batch_size * T, wall_time_s=wall,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()} if return_state else None,
        extra={k: float(v) if isinstance(v, torch.Tensor) else v for k, v in extra.items()},
    )
    if cache:
        _cache_write(path, result)
    return result
