"""The trained teacher of lab 02: a small TinyGPT whose weights ship as package data.

``python -m labutils.distill.teacher`` trains it (cache bypassed) and writes
``labutils/data/distill_teacher.pt``; ``load_teacher()`` returns it ready for inference, and
a test re-trains it and compares. It is deliberately small (d_model 48, 2 layers,
~0.6M tokens) so that re-training fits a test budget, and deliberately better than the lab's
students (d_model 32, 1 layer, fewer tokens), so distilling from it has something to teach: on the
default language it ends ≈ 0.37 nats above the floor, where the lab's hard-label student at 4× its
usual tokens is still ≈ 0.43 above it and its distilled students at the usual tokens ≈ 0.50 (the stored
runs of ``python -m labutils.distill.grid``). (800k tokens at lr 5e-3 reached 0.35 but made the re-train
test slower than its budget.)

The student × teacher grid (teachers of three sizes, trained the same way) is
``python -m labutils.distill.grid --only grid``; this module ships only the middle one.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from labutils import atomic_write
from labutils.data import DEFAULT_CONTEXT, default_language
from labutils.model import GPTConfig, TinyGPT
from labutils.train import train_lm

TEACHER_CONFIG = GPTConfig(vocab_size=64, context_length=DEFAULT_CONTEXT, d_model=48, n_layers=2, n_heads=2)
TEACHER_RUN = dict(tokens=600_000, batch_size=32, lr=3e-3, seed=7)  # lr 3e-3 trains d≤64 TinyGPTs stably here
DATA_PATH = Path(__file__).resolve().parent.parent / "data" / "distill_teacher.pt"


def train_teacher(*, cache: bool = True, progress: bool = True):
    """Train the teacher on the default language; returns the RunResult (with state_dict)."""
    return train_lm(TEACHER_CONFIG, default_language(), **TEACHER_RUN, return_state=True, cache=cache,
                    progress=progress, desc="teacher d48 L2")


def load_teacher(path: Path | str = DATA_PATH) -> TinyGPT:
    """The shipped teacher, in eval mode with gradients off."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m labutils.distill.teacher` to train it")
    blob = torch.load(path, weights_only=True)
    if blob["config"] != TEACHER_CONFIG.to_dict():
        raise ValueError(f"{path.name} was trained with {blob['config']}, not {TEACHER_CONFIG.to_dict()}; re-run the command")
    if blob.get("language") != default_language().fingerprint():
        raise ValueError(f"{path.name} was trained on another language (fingerprint {blob.get('language')}, the default "
                         f"is now {default_language().fingerprint()}); run `python -m labutils.distill.teacher` to re-train it")
    model = TinyGPT(TEACHER_CONFIG)
    model.load_state_dict(blob["state_dict"])
    model.eval().requires_grad_(False)
    return model


def shipped_eval_loss(path: Path | str = DATA_PATH) -> float:
    """The eval loss the shipped teacher reached when it was trained (nats/token)."""
    return float(torch.load(path, weights_only=True)["eval_loss"])


def main(argv=None) -> None:
    import argparse

    argparse.ArgumentParser(prog="python -m labutils.distill.teacher",
                            description=f"Re-train lab 02's teacher (cache bypassed) and write it to {DATA_PATH}.").parse_args(argv)
    run = train_teacher(cache=False)
    state = {k: v.to(torch.float32) for k, v in run.state_dict.items()}
    buf = io.BytesIO()
    torch.save(dict(config=TEACHER_CONFIG.to_dict(), run=TEACHER_RUN, language=default_language().fingerprint(),
                    state_dict=state, eval_loss=run.eval_loss, floor=run.floor), buf)
    atomic_write(DATA_PATH, buf.getvalue(), mode=0o644)  # package data: readable by everyone
    print(f"teacher: eval loss {run.eval_loss:.4f} nats (floor {run.floor:.4f}), {run.n_params:,} params, "
          f"{run.tokens:,} tokens in {run.wall_time_s:.1f} s -> {DATA_PATH} ({DATA_PATH.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
