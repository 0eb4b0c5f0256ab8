"""The training loop every lab shares, with an on-disk cache of finished runs.

``train_lm`` trains a TinyGPT (or a model you pass) on fresh samples of a data source (an
HMMLanguage, or any object with ``.vocab_size``, ``.sample`` and ``.fingerprint``) for a token budget, with AdamW, linear warm-up and a cosine schedule whose length matches that budget
(Chinchilla's correction of Kaplan: a schedule longer than the run biases the loss up). It
reports the eval loss next to the language's exact entropy floor.

Finished runs are cached in ``$LABUTILS_CACHE_DIR`` (default ``~/.cache/labutils``), keyed by a
hash of everything that changes the result plus the package version. Entries are written
atomically and carry a checksum; a damaged entry is recomputed. ``cache=False`` bypasses it.

Left out on purpose: data loaders, mixed precision, gradient accumulation, checkpoints mid-run.

    >>> from labutils.data import default_language
    >>> cfg = GPTConfig(vocab_size=64, context_length=64, d_model=32, n_layers=2, n_heads=2)
    >>> r = train_lm(cfg, default_language(), tokens=20_000, batch_size=16, lr=3e-3, seed=0,
    ...              cache=False, progress=False)
    >>> 0 < r.eval_loss - r.floor < 1      # nats above the best possible model
    True
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from labutils import atomic_write, positive_int, torch_threads
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
        elif callable(getattr(x, "fingerprint", None)):  # any other data source names itself
            h.update(type(x).__qualname__.encode() + x.fingerprint().encode())
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
    atomic_write(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload)


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


_EVAL_SETS: dict = {}  # (source fingerprint, T, n) -> (tokens, floor): the exact floor costs ≈0.5 s at S = 256


def eval_set(language, context_length: int, n_sequences: int) -> tuple[torch.Tensor, float]:
    """Held-out tokens and their exact floor (positions 1…T-1, the ones a model predicts).

    The floor is NaN for a data source without an exact ``.nll``. Remembered per process (keyed by
    the source's fingerprint), so only the first run pays for the floor.
    """
    key = (language.fingerprint(), context_length, n_sequences)
    if key not in _EVAL_SETS:
        x = language.sample(n_sequences, context_length, seed=EVAL_SEED)
        floor = language.nll(x, from_position=1) if hasattr(language, "nll") else float("nan")
        _EVAL_SETS[key] = (x, floor)
    x, floor = _EVAL_SETS[key]
    return x.clone(), floor  # a copy: nothing a caller does to the tokens can change the next run's eval set


def _validate(config, source, tokens, batch_size, lr, warmup_fraction, eval_sequences, n_evals, loss_hook, hook_key):
    """Fail early, naming the argument, before any work is done."""
    if not isinstance(config, GPTConfig):
        raise ValueError(f"config must be a GPTConfig, got {type(config).__name__}")
    for attr in ("vocab_size", "sample", "fingerprint"):
        if not hasattr(source, attr):
            raise ValueError(f"the data source must have .vocab_size, .sample(n, length, *, seed) and .fingerprint(); "
                             f"a {type(source).__name__} has no .{attr}")
    if source.vocab_size != config.vocab_size:
        raise ValueError(f"config.vocab_size ({config.vocab_size}) must equal the data source's vocab_size "
                         f"({source.vocab_size})")
    for name, v in (("tokens", tokens), ("batch_size", batch_size), ("eval_sequences", eval_sequences),
                    ("n_evals", n_evals)):
        positive_int(name, v)
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ValueError(f"lr must be a number in (0, 1), got {lr!r}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction!r}")
    if loss_hook is not None and not hook_key:
        raise ValueError("a loss_hook changes the result, so pass hook_key= naming it "
                         "(and its teacher, e.g. fingerprint(teacher))")
    steps = tokens // (batch_size * config.context_length)
    if steps < 1:
        raise ValueError(f"tokens={tokens} is less than one batch "
                         f"({batch_size}·{config.context_length} = {batch_size * config.context_length} tokens)")
    return steps


def _make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (biases, norms and gains are not decayed), β = (0.9, 0.95)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)],
                             lr=lr, betas=(0.9, 0.95))


def _train_loop(model, opt, source, *, steps, batch_size, T, seed, lr, warmup_steps, final_lr_fraction,
                eval_tokens, n_evals, loss_hook, floor, desc, progress, threads):
    """The optimisation itself; returns (curve, eval_curve, extra, wall seconds)."""
    from tqdm.auto import tqdm

    eval_at = {max(0, round(steps * (i + 1) / n_evals) - 1) for i in range(n_evals)}
    log_every = max(1, steps // 100)
    curve, eval_curve, extra = [], [], {}
    running, running_n = 0.0, 0
    with torch_threads(threads):
        bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, unit="step")
        start = time.perf_counter()
        model.train()
        for step in bar:
            x = source.sample(batch_size, T, seed=[seed, step])  # fresh text every step: no epochs, no overfitting
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
    return curve, eval_curve, extra, wall


def train_lm(
    config: GPTConfig,
    language,
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
    """Train on fresh samples of a data source for ``tokens`` tokens; return a RunResult.

    language:   the data source: an HMMLanguage, or any object with ``.vocab_size``,
                ``.sample(n, length, *, seed) -> LongTensor (n, length)`` (seed is an int or a list of
                ints) and ``.fingerprint() -> str`` (it names the data in the cache key). A source with an
                exact ``.nll(tokens, from_position=1)`` gets its entropy floor reported; others get NaN.
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

    steps = _validate(config, language, tokens, batch_size, lr, warmup_fraction, eval_sequences, n_evals,
                      loss_hook, hook_key)
    T = config.context_length
    torch.manual_seed(seed)
    if model is None:
        model, arch = TinyGPT(config), "TinyGPT"
    elif not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    else:
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
    opt = _make_optimizer(model, lr, weight_decay)
    curve, eval_curve, extra, wall = _train_loop(
        model, opt, language, steps=steps, batch_size=batch_size, T=T, seed=seed, lr=lr, warmup_steps=warmup_steps,
        final_lr_fraction=final_lr_fraction, eval_tokens=eval_tokens, n_evals=n_evals, loss_hook=loss_hook,
        floor=floor, desc=desc or f"d{config.d_model} L{config.n_layers}", progress=progress, threads=threads)

    n_all, seen = count_params(model, embeddings=True), steps * batch_size * T
    result = RunResult(
        config=key, eval_loss=eval_curve[-1][1], floor=floor, curve=curve, eval_curve=eval_curve,
        n_params=n_all, n_params_nonembedding=count_params(model, embeddings=False),
        tokens=seen, flops=train_flops(n_all, seen), flops_with_attention=flops_per_token(config) * seen,
        wall_time_s=wall,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()} if return_state else None,
        extra={k: float(v) if isinstance(v, torch.Tensor) else v for k, v in extra.items()},
    )
    if cache:
        _cache_write(path, result)
    return result
