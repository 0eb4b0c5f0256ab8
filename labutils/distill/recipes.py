"""Lab 02's training recipes, shared by the notebook and ``python -m labutils.distill.grid``.

A recipe is a ``train_lm`` loss hook plus the names that go into its cache key. Teachers give
targets aligned with the student's logits: ``targets(tokens) -> (B, T-1, V)`` log-probabilities or
logits for positions 0…T-2 (position t predicts token t+1).

    >>> from labutils.data import HMMLanguage
    >>> lang = HMMLanguage.random(4, 8, seed=0)
    >>> x = lang.sample(2, 5, seed=1)
    >>> hook = kd_hook(oracle_targets(lang), temperature=2.0, alpha=0.5)
    >>> loss = hook(torch.zeros(2, 5, 8, requires_grad=True), x, None)
    >>> loss.shape, loss.requires_grad
    (torch.Size([]), True)
    >>> [round(v, 4) for v in floor_targets(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 2).tolist()]
    [0.5, 0.3, 0.1, 0.1]

Left out on purpose: a KV cache for the teacher's sampled text (T = 64 keeps re-reading cheap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labutils.data import DEFAULT_CONTEXT
from labutils.distill.losses import kd_loss, sampled_targets, sparse_kd_loss, topk_targets
from labutils.distill.onpolicy import sample_student
from labutils.model import GPTConfig
from labutils.train import fingerprint

BATCH = 32  # sequences per step
TOKENS = 64 * BATCH * DEFAULT_CONTEXT  # 64 steps = 131,072 tokens: §2's budget
LR = 3e-3
STUDENT = (32, 1, 2)  # (d_model, n_layers, n_heads) of §2's student


def config(shape, vocab_size: int = 64) -> GPTConfig:
    """A TinyGPT config from (d_model, n_layers, n_heads) at the course's context length."""
    d, n_layers, n_heads = shape
    return GPTConfig(vocab_size=vocab_size, context_length=DEFAULT_CONTEXT, d_model=d, n_layers=n_layers,
                     n_heads=n_heads)


def oracle_targets(language):
    """The language's exact next-token log-probabilities, aligned with logits 0…T-2: (B, T-1, V) float32."""
    return lambda tokens: language.next_token_probs(tokens)[:, 1:].log().float()


def teacher_targets(teacher):
    """A trained teacher's logits at positions 0…T-2 (they also predict token t+1), without gradient."""
    def targets(tokens):
        with torch.no_grad():
            return teacher(tokens)[:, :-1].float()
    return targets


def _ce(logits, tokens):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


def kd_hook(targets, *, temperature: float = 1.0, alpha: float = 1.0, loss=None):
    """loss_hook: α · loss(student, teacher, τ) + (1 − α) · cross-entropy on the real next token (Hinton 2015).

    ``loss(student_logits, teacher_logits, temperature)`` defaults to ``kd_loss`` (τ² · forward KL);
    pass the learner's ``kd_forward`` to train with it.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the KD weight) must lie in [0, 1], got {alpha!r}")
    loss = loss or (lambda s, t, tau: kd_loss(s, t, temperature=tau))

    def hook(logits, tokens, model):
        s = logits[:, :-1]  # (B, T-1, V)
        total = alpha * loss(s, targets(tokens), temperature) if alpha > 0 else 0.0
        return total + (1 - alpha) * _ce(s, tokens) if alpha < 1 else total
    return hook


def floor_targets(log_p: torch.Tensor, k: int) -> torch.Tensor:
    """Dense probabilities (..., V): the k likeliest entries keep their own probability, the missing mass
    is spread evenly over the other V − k. Stored as k (index, value) pairs plus one floor value."""
    p = log_p.float().exp()
    top, idx = p.topk(k, -1)
    rest = (1 - top.sum(-1, keepdim=True)).clamp_min(0) / max(1, p.shape[-1] - k)
    return rest.expand_as(p).clone().scatter_(-1, idx, top)


def sparse_bytes(kind: str, k: int, value_bytes: int = 2) -> int:
    """Bytes per token of a sparse target: k (int32 index, value) pairs, plus one value for a floor."""
    return k * (4 + value_bytes) + (value_bytes if kind == "floor" else 0)


def sparse_hook(targets, kind: str, k: int):
    """loss_hook on sparse targets as a store returns them (values rounded to bf16): "top", "floor" or
    "sampled" (k i.i.d. draws, a fresh reproducible draw each batch)."""
    if kind not in ("top", "floor", "sampled"):
        raise ValueError(f"kind must be 'top', 'floor' or 'sampled', got {kind!r}")

    def hook(logits, tokens, model):
        log_p = targets(tokens)  # (B, T-1, V)
        s = logits[:, :-1]
        if kind == "floor":
            q = floor_targets(log_p, k).to(torch.bfloat16).float()
            return -(q * F.log_softmax(s.float(), -1)).sum(-1).mean()
        seed = int(tokens[0, :8].sum())
        idx, p = topk_targets(log_p, k) if kind == "top" else sampled_targets(log_p, k, seed=seed)
        return sparse_kd_loss(s, idx, p.to(torch.bfloat16).float())
    return hook


class TeacherText:
    """A data source whose text is sampled from a teacher (sequence-level KD, Kim & Rush 2016): x_0 from the
    language, then x_t ∼ teacher(x_<t). Has ``vocab_size``, ``sample`` and ``fingerprint`` as train_lm needs.

        >>> from labutils.data import HMMLanguage
        >>> from labutils.model import TinyGPT
        >>> teacher = TinyGPT(GPTConfig(vocab_size=6, context_length=8, d_model=8, n_layers=1, n_heads=1))
        >>> TeacherText(teacher, HMMLanguage.random(3, 6, seed=0)).sample(2, 8, seed=[0, 1]).shape
        torch.Size([2, 8])
    """

    def __init__(self, teacher, language, *, temperature: float = 1.0):
        self.teacher, self.language, self.temperature = teacher, language, float(temperature)
        self.vocab_size = language.vocab_size

    def sample(self, n: int, length: int, *, seed) -> torch.Tensor:
        seeds = seed if isinstance(seed, (list, tuple)) else [seed]
        s = 0
        for v in seeds:
            s = (s * 1_000_003 + int(v)) % (2**62)
        return sample_student(self.teacher, self.language, n, seed=s, temperature=self.temperature, length=length)

    def fingerprint(self) -> str:
        return f"teacher-text-{fingerprint(self.teacher)}-{self.language.fingerprint()}-tau{self.temperature:g}"
