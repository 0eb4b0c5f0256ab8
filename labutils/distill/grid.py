"""Lab 02's stored experiments: ``python -m labutils.distill.grid [--only NAME ...] [--seeds 3]``.

Every run is one ``train_lm`` call with the course's cosine schedule matched to its own length
(a separate run per token budget) and the course's evaluation set; each is repeated over seeds.
The experiments, in the order they run:

* ``efficiency`` — §2's student on hard labels at 1, 2 and 4× the KD budget, and KD from
  the shipped teacher and from the oracle at 1×: the token-efficiency gain;
* ``temperature`` — KD from the shipped teacher at τ ∈ {0.5, 1, 2, 4}, and α·KD + (1−α)·CE at τ = 1, α ∈ {0.25, 0.5};
* ``sparse`` — oracle targets kept top-k, top-k plus a floor on the tail, or sampled, k ∈ {4, 16};
* ``grid`` — students × teachers (three trained sizes and the oracle), plus hard labels at 1, 2 and 4×;
* ``onpolicy`` — warm start by off-policy KD, then λ ∈ {0, 0.5, 1} of GKD with the reverse KL, scored by
  the exact sequence reverse KL and the exposure-bias gap;
* ``seqkd`` — sequence-level KD (cross-entropy on the teacher's sampled text) vs token-level KD;
* ``horizon`` — KD from the shipped teacher and from the oracle at 2 and 4× the KD budget (1× is in
  ``efficiency``): does the trained teacher's lead over the oracle shrink with training?

Each finished run is written at once (atomically), so an interrupted command resumes. The stored file
(``labutils/data/distill_grid.json``) records the command, versions and date.

    >>> sorted({s["exp"] for s in specs(1)})
    ['efficiency', 'grid', 'horizon', 'onpolicy', 'seqkd', 'sparse', 'temperature']
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from labutils import atomic_write, positive_int
from labutils.data import DEFAULT_CONTEXT, default_language
from labutils.distill import recipes as R
from labutils.distill.onpolicy import exposure_bias, gkd_hook, sequence_reverse_kl
from labutils.model import TinyGPT
from labutils.train import eval_set, evaluate, fingerprint, train_lm

DATA_PATH = Path(__file__).resolve().parent.parent / "data" / "distill_grid.json"
HARD_FACTORS = (1, 2, 4)
HORIZON_FACTORS = (2, 4)  # KD budgets beyond §2's, for the teacher-vs-oracle gap
TAUS = (0.5, 1.0, 2.0, 4.0)
ALPHAS = (0.25, 0.5)  # α = 1 is the τ = 1 run of the sweep, α = 0 the 1× hard-label run
STUDENTS = ((16, 1, 2), (32, 1, 2), (48, 1, 2))
TEACHERS = {"d24 L1": (24, 1, 2), "d48 L2": (48, 2, 2), "d64 L2": (64, 2, 4)}  # d48 L2 is the shipped recipe
TEACHER_TOKENS, TEACHER_SEED = 600_000, 7
LAMS = (0.0, 0.5, 1.0)
ONPOLICY_TOKENS = R.TOKENS // 2  # the continuation after the warm start
N_SCORE = 384  # sequences scored by the exact sequence reverse KL and the exposure gap


def specs(seeds: int) -> list[dict]:
    """Every run, frozen before the first one trains."""
    out = []
    add = lambda exp, seed, **kw: out.append(dict(exp=exp, seed=seed, **kw))
    for s in range(seeds):
        for f in HARD_FACTORS:
            add("efficiency", s, method="hard", student=R.STUDENT, tokens=int(f * R.TOKENS))
        for t in ("d48 L2", "oracle"):
            add("efficiency", s, method="kd", teacher=t, student=R.STUDENT, tokens=R.TOKENS)
    for s in range(seeds):
        for tau in TAUS:
            add("temperature", s, method="kd", teacher="d48 L2", student=R.STUDENT, tokens=R.TOKENS, tau=tau)
        for a in ALPHAS:
            add("temperature", s, method="kd", teacher="d48 L2", student=R.STUDENT, tokens=R.TOKENS, alpha=a)
    for s in range(seeds):
        for kind in ("top", "floor", "sampled"):
            for k in (4, 16):
                add("sparse", s, method=kind, k=k, teacher="oracle", student=R.STUDENT, tokens=R.TOKENS)
    for s in range(seeds):
        for st in STUDENTS:
            for f in (1, 2, 4):
                add("grid", s, method="hard", student=st, tokens=f * R.TOKENS)
            for t in (*TEACHERS, "oracle"):
                add("grid", s, method="kd", teacher=t, student=st, tokens=R.TOKENS)
    for s in range(seeds):
        for lam in LAMS:
            add("onpolicy", s, method="gkd", lam=lam, student=R.STUDENT, tokens=ONPOLICY_TOKENS)
    for s in range(seeds):
        for m in ("seqkd", "kd"):
            add("seqkd", s, method=m, teacher="d48 L2", student=R.STUDENT, tokens=R.TOKENS)
    for s in range(seeds):
        for f in HORIZON_FACTORS:
            for t in ("d48 L2", "oracle"):
                add("horizon", s, method="kd", teacher=t, student=R.STUDENT, tokens=f * R.TOKENS)
    return out


def cost_ratio(student, teacher) -> float:
    """Online KD's compute per token over plain training's: 1 + teacher forward / student training step."""
    from labutils.model import flops_per_token

    return 1 + flops_per_token(R.config(teacher)) / 3 / flops_per_token(R.config(student))


def key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


_TEACHERS: dict = {}


def teacher(name: str):
    """A trained teacher by name (trained on the default language; the d48 L2 is the shipped one)."""
    if name == "d48 L2":
        from labutils.distill.teacher import load_teacher
        return load_teacher()
    if name not in _TEACHERS:
        run = train_lm(R.config(TEACHERS[name]), default_language(), tokens=TEACHER_TOKENS, batch_size=R.BATCH,
                       lr=R.LR, seed=TEACHER_SEED, return_state=True, progress=False, desc=f"teacher {name}")
        m = TinyGPT(R.config(TEACHERS[name]))
        m.load_state_dict(run.state_dict)
        _TEACHERS[name] = (m.eval().requires_grad_(False), run.eval_loss)
    return _TEACHERS[name][0]


def teacher_loss(name: str) -> float:
    """The held-out loss of a teacher (the course's evaluation set), nats/token; the oracle's is the floor."""
    language = default_language()
    x, floor = eval_set(language, DEFAULT_CONTEXT, 512)
    return floor if name == "oracle" else evaluate(teacher(name), x)


def run(spec: dict, *, progress: bool = False, cache: bool = True) -> dict:
    """Train one spec; return its record (held-out loss and, for on-policy runs, the generation metrics)."""
    language = default_language()
    cfg = R.config(spec["student"])
    common = dict(batch_size=R.BATCH, lr=R.LR, seed=spec["seed"], progress=progress, threads=1, n_evals=1, cache=cache)
    m = spec["method"]
    t = spec.get("teacher")
    targets = None if t is None else R.oracle_targets(language) if t == "oracle" else R.teacher_targets(teacher(t))
    tname = "oracle-" + language.fingerprint() if t == "oracle" else fingerprint(teacher(t)) if t else ""
    if m == "hard":
        r = train_lm(cfg, language, tokens=spec["tokens"], **common)
    elif m == "kd":
        tau, alpha = spec.get("tau", 1.0), spec.get("alpha", 1.0)
        r = train_lm(cfg, language, tokens=spec["tokens"], loss_hook=R.kd_hook(targets, temperature=tau, alpha=alpha),
                     hook_key=f"kd-forward-tau{tau:g}-alpha{alpha:g}-{tname}", **common)
    elif m in ("top", "floor", "sampled"):
        r = train_lm(cfg, language, tokens=spec["tokens"], loss_hook=R.sparse_hook(targets, m, spec["k"]),
                     hook_key=f"sparse-{m}-{spec['k']}-{tname}", **common)
    elif m == "seqkd":
        src = R.TeacherText(teacher(t), language)
        r = train_lm(cfg, src, tokens=spec["tokens"], return_state=True, eval_sequences=32, **common)
        return dict(eval_loss=_real_eval(cfg, r.state_dict), tokens=r.tokens, wall_s=r.wall_time_s)
    elif m == "gkd":
        return _onpolicy(spec, cfg, common)
    else:
        raise ValueError(f"unknown method {m!r}")
    return dict(eval_loss=r.eval_loss, floor=r.floor, tokens=r.tokens, wall_s=r.wall_time_s)


def _real_eval(cfg, state) -> float:
    model = TinyGPT(cfg)
    model.load_state_dict(state)
    return evaluate(model, eval_set(default_language(), DEFAULT_CONTEXT, 512)[0])


def _onpolicy(spec, cfg, common) -> dict:
    """Warm start: off-policy forward-KL KD from the oracle on §2's budget; then λ-GKD on the reverse KL."""
    language = default_language()
    warm = train_lm(cfg, language, tokens=R.TOKENS, loss_hook=R.kd_hook(R.oracle_targets(language)),
                    hook_key=f"kd-forward-tau1-alpha1-oracle-{language.fingerprint()}", return_state=True, **common)
    model = TinyGPT(cfg)
    model.load_state_dict(warm.state_dict)
    r = train_lm(cfg, language, tokens=spec["tokens"], model=model, model_key="warm-start-oracle-kd",
                 loss_hook=gkd_hook(language, spec["lam"], seed=spec["seed"]), return_state=True,
                 hook_key=f"gkd-reverse_kl-lam{spec['lam']}-oracle-{language.fingerprint()}", **common)
    model.load_state_dict(r.state_dict)
    seq = sequence_reverse_kl(model, language, N_SCORE, seed=1000 + spec["seed"])
    gap = exposure_bias(model, language, N_SCORE, seed=2000 + spec["seed"])
    return dict(eval_loss=r.eval_loss, floor=r.floor, tokens=r.tokens, wall_s=r.wall_time_s,
                warm_eval_loss=warm.eval_loss, **seq, **gap)


def select(data: dict, **where) -> list[dict]:
    """The stored runs whose spec has every key = value (a missing key matches None; tuples match lists).

    >>> select(dict(runs=[dict(spec=dict(exp="x", student=[32, 1, 2]), eval_loss=3.9)]), student=(32, 1, 2))
    [{'spec': {'exp': 'x', 'student': [32, 1, 2]}, 'eval_loss': 3.9}]
    """
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [r for r in data["runs"] if all(norm(r["spec"].get(k)) == norm(v) for k, v in where.items())]


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / √n; NaN for one value).

    >>> mean_se([1.0, 2.0, 3.0])
    (2.0, 0.5773502691896257)
    """
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_se needs at least one value")
    m = sum(v) / len(v)
    if len(v) == 1:
        return m, float("nan")
    return m, (sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) ** 0.5


def tokens_to_reach(points, loss: float) -> float:
    """Tokens a hard-label student needs to reach ``loss``, interpolated linearly in log(tokens) between runs
    [(tokens, eval_loss), ...] of separate lengths; inf beyond the longest, the shortest's tokens before it.

    >>> round(tokens_to_reach([(100, 4.0), (400, 3.0)], 3.5), 6)
    200.0
    """
    import math

    pts = sorted(points)
    if loss >= pts[0][1]:
        return float(pts[0][0])
    for (d0, l0), (d1, l1) in zip(pts, pts[1:]):
        if l1 <= loss < l0:
            return math.exp(math.log(d0) + (l0 - loss) / (l0 - l1) * (math.log(d1) - math.log(d0)))
    return math.inf


def load(path: Path | str = DATA_PATH) -> dict:
    """The stored file: {"meta": {...}, "runs": [{"spec": {...}, **record}, ...], "teachers": {...}}."""
    return json.loads(Path(path).read_text())


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m labutils.distill.grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="experiments to run (default: all)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(DATA_PATH))
    ap.add_argument("--reverse", action="store_true", help="run the specs last first (a second process can share "
                                                          "the work through the run cache)")
    a = ap.parse_args(argv)
    positive_int("--seeds", a.seeds)
    out = Path(a.out)
    data = load(out) if out.exists() else dict(runs=[], teachers={})
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    data["meta"] = dict(command=f"python -m labutils.distill.grid {args}".strip(),
                        torch=torch.__version__, python=platform.python_version(), date=_dt.date.today().isoformat(),
                        language=default_language().fingerprint(), batch=R.BATCH, lr=R.LR,
                        schedule="cosine to 0.1·lr over each run's own length, 5% warm-up", eval_sequences=512)
    done = {key(r["spec"]) for r in data["runs"]}
    todo = [s for s in specs(a.seeds) if (not a.only or s["exp"] in a.only) and key(s) not in done]
    todo = todo[::-1] if a.reverse else todo
    atomic_write(out, json.dumps(data, indent=1, sort_keys=True), mode=0o644)
    for i, s in enumerate(todo, 1):
        rec = run(s)
        data["runs"].append(dict(spec=s, **rec))
        for t in {s.get("teacher")} - {None} - set(data["teachers"]):
            data["teachers"][t] = teacher_loss(t)
        atomic_write(out, json.dumps(data, indent=1, sort_keys=True), mode=0o644)
        print(f"[{i}/{len(todo)}] {key(s)} -> {rec['eval_loss']:.4f} ({rec['wall_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
