"""The lab's stored readers: ``python -m labutils.factuality train`` trains them and writes
``labutils/data/factuality_readers.pt``; ``load_readers()`` returns them ready for inference.

A reader needs 10⁶ tokens of training (a minute or more per reader on one CPU thread), too long for the
notebook's budget, so three of them (seeds 0, 1, 2) ship as package data (float16 weights, ≈ 0.3 MB each).
The file records the command, the recipe, the package versions and, for the reproduction test, a short
run of the same recipe (``sample``): ``tests/test_factuality.py`` re-trains it and checks that it reproduces.
"""

from __future__ import annotations

import io
import platform
import time
from pathlib import Path

import numpy as np
import torch

from labutils import atomic_write
from labutils.factuality.reader import ReaderTask, reader_loss
from labutils.factuality.world import World
from labutils.model import GPTConfig, TinyGPT
from labutils.train import train_lm

DATA_PATH = Path(__file__).resolve().parent.parent / "data" / "factuality_readers.pt"
COMMAND = "python -m labutils.factuality train"
# The lab's world shape: the readers are trained on other worlds of exactly this shape (same tokens).
N_ENTITIES = 300
ATTRIBUTES = {"birth_year": 20, "city": 20, "employer": 20, "field": 10}
# Rank-ordered contexts (see labutils.factuality.reader on what the reader learns): 1M tokens at batch 8 reached
# 99.7% accuracy on the mentioned facts of a test world; shuffled contexts at 2M tokens reached 69–87% overall
# and 42–74% on facts seen once (4 runs), because the reader never learnt to match the entity.
READER = dict(d_model=64, n_layers=2, n_heads=4, tokens=1_000_000, batch_size=8, lr=3e-3, n_worlds=16, n_questions=4,
              shuffle=False)
SEEDS = (0, 1, 2)
SAMPLE_TOKENS = 40_000  # the reproduction test's short run (same recipe, fewer tokens)


def reader_task(seed: int) -> ReaderTask:
    shape = World.generate(N_ENTITIES, ATTRIBUTES, seed=0)  # only its shape matters: the task draws other worlds
    return ReaderTask(shape, n_worlds=READER["n_worlds"], n_questions=READER["n_questions"], shuffle=READER["shuffle"],
                      seed=seed)


def reader_config(task: ReaderTask) -> GPTConfig:
    return GPTConfig(task.vocab_size, task.length, READER["d_model"], READER["n_layers"], READER["n_heads"])


def train_reader(seed: int, *, tokens: int | None = None, cache: bool = True, progress: bool = True):
    """Train one reader (seed ``seed``); returns the RunResult with its weights."""
    task = reader_task(seed)
    return train_lm(reader_config(task), task, tokens=tokens or READER["tokens"], batch_size=READER["batch_size"],
                    lr=READER["lr"], seed=seed, threads=1, loss_hook=reader_loss, hook_key="factuality-reader-v1",
                    eval_sequences=64, n_evals=1, return_state=True, cache=cache, progress=progress,
                    desc=f"reader, seed {seed}")


def _half(state: dict) -> dict:
    return {k: v.detach().to(torch.float16) for k, v in state.items()}


def train_all(path: Path = DATA_PATH, *, progress: bool = True) -> dict:
    """Train every stored reader and the reproduction sample, then write the file atomically."""
    readers = []
    for seed in SEEDS:
        run = train_reader(seed, cache=False, progress=progress)
        readers.append(dict(seed=seed, state_dict=_half(run.state_dict), wall_time_s=run.wall_time_s,
                            train_loss=run.curve[-1][1], tokens=run.tokens))
        print(f"reader seed {seed}: final answer loss {run.curve[-1][1]:.4f} nats in {run.wall_time_s:.0f} s")
    sample = train_reader(0, tokens=SAMPLE_TOKENS, cache=False, progress=progress)
    blob = dict(command=COMMAND, recipe=dict(READER), n_entities=N_ENTITIES, attributes=dict(ATTRIBUTES),
                config=reader_config(reader_task(0)).to_dict(), readers=readers,
                sample=dict(seed=0, tokens=SAMPLE_TOKENS, curve=sample.curve),
                versions=dict(torch=torch.__version__, numpy=np.__version__, python=platform.python_version()),
                cpu=platform.processor() or platform.machine(), date=time.strftime("%Y-%m-%d"))
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, buf.getvalue(), mode=0o644)
    return blob


def load_readers(path: Path | str = DATA_PATH) -> tuple[list, dict]:
    """The stored readers (TinyGPTs in eval mode, float32) and the file's metadata."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{COMMAND}` to train the readers")
    blob = torch.load(path, weights_only=False)
    if blob["attributes"] != ATTRIBUTES or blob["n_entities"] != N_ENTITIES or blob["recipe"] != READER:
        raise ValueError(f"{path.name} was made for another world shape or recipe; run `{COMMAND}` again")
    cfg = GPTConfig(**blob["config"])
    models = []
    for r in blob["readers"]:
        m = TinyGPT(cfg)
        m.load_state_dict({k: v.float() for k, v in r["state_dict"].items()})
        models.append(m.eval().requires_grad_(False))
    meta = {k: v for k, v in blob.items() if k != "readers"}
    meta["readers"] = [{k: v for k, v in r.items() if k != "state_dict"} for r in blob["readers"]]
    return models, meta
