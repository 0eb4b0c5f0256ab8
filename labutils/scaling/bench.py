"""``python -m labutils.scaling bench``: training step time and tokens/s per ladder shape, one torch thread.

A benchmark, not a test: it measures this machine now (a busy machine gives slower numbers). Each
shape trains ``steps`` steps of the lab's recipe (batch 32 × 64 tokens, AdamW, fresh samples from
the default language) after an untimed run, with the training cache off; the time of a ``warmup``-step run is
subtracted from a ``warmup + steps`` one, which cancels set-up and evaluation.

    >>> rows = bench(steps=2, sizes=[0], warmup=1, quiet=True)
    >>> sorted(rows[0])
    ['d_model', 'ms_per_step', 'n_layers', 'n_params', 'tokens_per_s']
"""

from __future__ import annotations

import time

from labutils import positive_int


def bench(*, steps: int = 50, sizes=None, warmup: int = 5, batch_size: int = 32, quiet: bool = False) -> list[dict]:
    """Time ``steps`` training steps per ladder shape (``sizes``: ladder indices; default the swept ones)."""
    import torch

    from labutils.data import default_language
    from labutils.model import GPTConfig, count_params
    from labutils.scaling.sweep import load_sweep
    from labutils.train import train_lm

    positive_int("steps", steps)
    positive_int("warmup", warmup)
    sweep = load_sweep()
    ladder = [GPTConfig(**c) for c in sweep["meta"]["design"]["ladder"]]
    sizes = sorted({r["size"] for r in sweep["runs"]}) if sizes is None else list(sizes)
    lang = default_language()
    rows = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for j in sizes:
            if not 0 <= j < len(ladder):
                raise ValueError(f"ladder index {j} out of range 0–{len(ladder) - 1}")
            cfg = ladder[j]
            per = batch_size * cfg.context_length
            kw = dict(batch_size=batch_size, lr=1e-3, seed=0, cache=False, progress=False, n_evals=1, eval_sequences=32)
            train_lm(cfg, lang, tokens=warmup * per, **kw)  # untimed: builds the eval set, warms the allocator
            t0 = time.perf_counter()
            train_lm(cfg, lang, tokens=warmup * per, **kw)
            t1 = time.perf_counter()
            train_lm(cfg, lang, tokens=(warmup + steps) * per, **kw)
            ms = ((time.perf_counter() - t1) - (t1 - t0)) / steps * 1e3  # the difference cancels set-up and eval
            rows.append(dict(d_model=cfg.d_model, n_layers=cfg.n_layers, n_params=count_params(cfg, embeddings=True),
                             ms_per_step=ms, tokens_per_s=per / ms * 1e3))
            if not quiet:
                r = rows[-1]
                print(f"d{r['d_model']:<3} L{r['n_layers']}  N={r['n_params']:>7,}  {r['ms_per_step']:6.2f} ms/step  "
                      f"{r['tokens_per_s']:>9,.0f} tokens/s")
    finally:
        torch.set_num_threads(old)
    return rows
