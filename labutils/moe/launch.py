"""Lab 04 under the launcher people use: ``torchrun --nproc_per_node=P -m labutils.moe.serving --layout ep``.

Each rank reads RANK and WORLD_SIZE (and MASTER_ADDR, MASTER_PORT, LOCAL_RANK) from the environment
torchrun sets, joins ``nccl`` on CUDA (one GPU per rank) or ``gloo`` on CPU, runs the same worker code as
the notebook's ``Cluster``, checks its output against the single-process model, and rank 0 prints the
latency, bytes and messages table:

    torchrun --nproc_per_node=2 -m labutils.moe.serving --layout pp --batch 16
    torchrun --nproc_per_node=8 -m labutils.moe.serving --layout ep --batch 256 --d-model 1024   # 8 GPUs

Left out on purpose: multi-node rendezvous options (pass torchrun's own --nnodes/--rdzv-* flags) and
loading real weights: every rank builds the same seeded model.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from labutils.moe.workers import LAYOUTS, StackConfig, _run, build_stack


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=P -m labutils.moe.serving",
                                description="Run one MoE decode layout across torchrun's ranks and check it.")
    p.add_argument("--layout", choices=LAYOUTS, required=True, help="ep, pp (one step at a time) or pps (steady state)")
    p.add_argument("--batch", type=int, default=16, help="sequences, one new token each (default 16)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--capacity-factor", type=float, default=None)
    p.add_argument("--n-micro", type=int, default=None, help="micro-batches / groups in flight (default min(B, P))")
    p.add_argument("--rounds", type=int, default=8, help="pps: tokens per request in one decode loop")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def _expected(layout, cfg, x, rank, P, seed, n_micro):
    """This rank's share of the single-process output (None where the rank returns nothing)."""
    model = build_stack(cfg, seed)
    with torch.inference_mode():
        if layout == "ep":
            return model(x.tensor_split(P)[rank])  # capacity applies per rank's group
        if rank != P - 1:
            return None
        return torch.cat([model(g) for g in x.tensor_split(n_micro)])


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        _parser().error("run me under torchrun, e.g. torchrun --nproc_per_node=2 -m labutils.moe.serving --layout ep")
    rank, P = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    cfg = StackConfig(d_model=args.d_model, d_ff=args.d_ff, n_experts=args.experts, k=args.k, n_layers=args.layers,
                      capacity_factor=args.capacity_factor)
    if args.layout == "ep" and cfg.n_experts % P or args.layout != "ep" and cfg.n_layers % P:
        _parser().error(f"{P} ranks must divide {'--experts' if args.layout == 'ep' else '--layers'}")
    n_micro = min(args.batch, P) if args.n_micro is None else args.n_micro
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=60))
    try:
        x = torch.randn(args.batch, cfg.d_model, generator=torch.Generator().manual_seed(args.seed + 1))
        cmd = dict(layout=args.layout, cfg=cfg, x=x, seed=args.seed, n_micro=n_micro, steps=args.steps,
                   warmup=args.warmup, rounds=args.rounds)
        res = _run(cmd, rank, P, {}, device)
        want = _expected(args.layout, cfg, x, rank, P, args.seed, n_micro)
        err = 0.0 if want is None else float((res["output"] - want).abs().max())
        rows = [None] * P
        dist.all_gather_object(rows, dict(err=err, times=res["times"], bytes=res["bytes_sent"], messages=res["messages"]))
        if rank == 0:
            _report(args, P, "nccl" if cuda else "gloo", rows)
    finally:
        dist.destroy_process_group()


def _report(args, P, backend, rows) -> None:
    steps = [max(r["times"][i] for r in rows) for i in range(len(rows[0]["times"]))]  # the slowest rank's time
    med = sorted(steps)[len(steps) // 2]
    err = max(r["err"] for r in rows)
    print(f"layout {args.layout}, {P} ranks ({backend}), batch {args.batch}, d_model {args.d_model}, "
          f"{args.experts} experts, top-{args.k}, {args.layers} layers")
    print(" rank   bytes sent   messages")
    for r, row in enumerate(rows):
        print(f"{r:>5} {row['bytes']:>12,} {row['messages']:>10}")
    print(f"total {sum(r['bytes'] for r in rows):>12,} {sum(r['messages'] for r in rows):>10}")
    print(f"latency per step: median {med * 1e3:.3f} ms, best {min(steps) * 1e3:.3f} ms "
          f"({'per decode round' if args.layout == 'pps' else 'per decode step'})")
    print(f"max |distributed − single process| = {err:.2e}: " + ("equal" if err <= 1e-4 else "DIFFERENT"))
