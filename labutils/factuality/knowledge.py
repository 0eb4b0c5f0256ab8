"""What a language model trained on the corpus knows: closed-book answers, confidence, exposure.

The model is a TinyGPT trained with the course's ``train_lm`` on the corpus (a data source). A question
is the start of a document, ``<doc> attribute entity``; the answer is the value it predicts next, and
its confidence is the probability of that value among the attribute's values (the softmax restricted
to them: a trained model puts almost all of its mass there anyway).

Left out on purpose: sampling (answers are the most likely value), paraphrased questions, fine-tuning.

    >>> EXPOSURE_BINS
    ((0, 0, '0'), (1, 1, '1'), (2, 3, '2–3'), (4, 7, '4–7'), (8, None, '8+'))
"""

from __future__ import annotations

import numpy as np
import torch

from labutils.factuality.world import DOC, World
from labutils.model import GPTConfig, TinyGPT
from labutils.train import train_lm

# d64 × 2 layers on 32-token windows. 150k tokens is ≈10 passes over the lab's 15k-token corpus: facts seen
# once are learnt about half the time, facts seen 8+ times always. Chosen by a small sweep on world 0:
# 100k tokens learnt barely half of the facts seen 2–7 times; 300k memorised 97% of the singletons (an
# overfit corpus, unlike a pre-training run, which sees most documents once or a few times).
RECIPE = dict(d_model=64, n_layers=2, n_heads=4, context_length=32, tokens=150_000, batch_size=32, lr=3e-3)
EXPOSURE_BINS = ((0, 0, "0"), (1, 1, "1"), (2, 3, "2–3"), (4, 7, "4–7"), (8, None, "8+"))


def knowledge_config(world: World) -> GPTConfig:
    r = RECIPE
    return GPTConfig(world.vocab_size, r["context_length"], r["d_model"], r["n_layers"], r["n_heads"])


def train_knowledge_model(corpus, *, seed: int, progress: bool = True, cache: bool = True):
    """Train (or fetch from the cache) the lab's closed-book model on ``corpus``; returns (model, RunResult)."""
    cfg = knowledge_config(corpus.world)
    r = RECIPE
    run = train_lm(cfg, corpus, tokens=r["tokens"], batch_size=r["batch_size"], lr=r["lr"], seed=seed, threads=1,
                   eval_sequences=256, n_evals=4, return_state=True, cache=cache, progress=progress,
                   desc=f"closed-book model, seed {seed}")
    model = TinyGPT(cfg)
    model.load_state_dict(run.state_dict)
    return model.eval(), run


@torch.no_grad()
def closed_book(model, world: World, facts) -> tuple[np.ndarray, np.ndarray]:
    """The model's answer (value index) and its confidence for each fact (entity, attribute), shape (n,)."""
    facts = np.asarray(facts, dtype=np.int64).reshape(-1, 2)
    prompt = np.stack([np.full(len(facts), DOC), world.attribute_token(facts[:, 1]),
                       world.entity_token(facts[:, 0])], axis=1)  # (n, 3): <doc> attribute entity
    was_training = model.training
    model.eval()
    logits = model(torch.from_numpy(prompt))[:, -1].double()  # (n, V): what follows "<doc> a e"
    model.train(was_training)
    values, conf = np.zeros(len(facts), dtype=np.int64), np.zeros(len(facts))
    for a in np.unique(facts[:, 1]):
        sel = np.flatnonzero(facts[:, 1] == a)
        p = torch.softmax(logits[sel][:, torch.as_tensor(world.value_tokens(a))], dim=-1).numpy()
        values[sel], conf[sel] = p.argmax(1), p.max(1)
    return values, conf


def exposure_bin(counts) -> np.ndarray:
    """Index into EXPOSURE_BINS of each count."""
    counts = np.asarray(counts)
    out = np.zeros(counts.shape, dtype=np.int64)
    for i, (lo, _, _) in enumerate(EXPOSURE_BINS):
        out[counts >= lo] = i
    return out


def accuracy_by_exposure(correct, counts) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and number of facts per exposure bin (NaN accuracy for an empty bin)."""
    correct, b = np.asarray(correct, dtype=np.float64), exposure_bin(counts)
    n = np.bincount(b, minlength=len(EXPOSURE_BINS))
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(b, weights=correct, minlength=len(EXPOSURE_BINS)) / n
    return acc, n
