"""Lab 04: what runs inside each rank — the decode-step model, counted communication, both layouts.

A worker process builds the same ``MoEStack`` from a seed as the caller does, joins a gloo
process group and waits for commands. Two layouts of one decode step (one token per sequence):

* expert parallel ("ep"): rank r holds the tokens of sequences r·B/P… (data parallel for the dense
  parts, whose weights every rank replicates) and the experts r·E/P…(r+1)·E/P of every layer. Per
  MoE layer: an all-to-all of send counts, an all-to-all dispatching token rows (uneven splits;
  the expert id rides along as one extra column) and an all-to-all returning expert outputs.
* layer pipeline ("pp"): rank r holds every weight of layers r·L/P…(r+1)·L/P. The batch is cut
  into micro-batches that flow rank to rank with isend/recv, several in flight; the last stage
  sends the next token ids (B int64) back to stage 0, which ends the step.
* steady-state pipeline ("pps"): the same stages, but a decode loop of several tokens with n_micro
  groups of requests in flight across steps: stage 0 starts a group's next token as soon as that
  group's ids are back, while the other groups are in later stages — no bubble once n_micro ≥ P.

``Comm`` wraps every call and counts the bytes and messages of the tensors actually passed.
Workers run with one thread each. Left out on purpose: attention and the KV cache (a per-token
linear ``mix`` stands in for the attention projections: decode attention reads only its own
sequence's cache, so it adds no communication to either layout), the embedding and LM head, and
loading only a rank's own shard (workers build the full model from the seed, then use their shard).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from labutils import positive_int
from labutils.moe.layer import MoELayer, route_top_k

LAYOUTS = ("ep", "pp", "pps")  # expert parallel, layer pipeline one step at a time, pipeline in steady state


@dataclass(frozen=True)
class StackConfig:
    d_model: int = 256
    d_ff: int = 512  # per expert
    n_experts: int = 8
    k: int = 2
    n_layers: int = 4
    capacity_factor: float | None = None

    def __post_init__(self):
        for name in ("d_model", "d_ff", "n_experts", "k", "n_layers"):
            positive_int(f"StackConfig.{name}", getattr(self, name))
        if self.k > self.n_experts:
            raise ValueError(f"StackConfig: k={self.k} exceeds n_experts={self.n_experts}")
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ValueError(f"StackConfig: capacity_factor must be positive or None, got {self.capacity_factor!r}")


class StackBlock(nn.Module):
    """x + mix(ln1(x)), then + moe(ln2(·)): a pre-norm block whose attention is a per-token linear."""

    def __init__(self, cfg: StackConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model)
        self.moe = MoELayer(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.k, capacity_factor=cfg.capacity_factor)

    def dense(self, x):
        h = x + self.mix(self.ln1(x))  # (t, C)
        return h, self.ln2(h)  # residual stream, MoE input

    def forward(self, x):
        h, u = self.dense(x)
        return h + self.moe(u)


class MoEStack(nn.Module):
    """n_layers StackBlocks: hidden states (B, C) of one new token per sequence -> (B, C)."""

    def __init__(self, cfg: StackConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(StackBlock(cfg) for _ in range(cfg.n_layers))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def build_stack(cfg: StackConfig, seed: int) -> MoEStack:
    """The same weights in every process: built under a private RNG seeded with ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MoEStack(cfg)
        with torch.no_grad():  # router logits of a useful size, so routing is decided by the input
            for b in model.blocks:
                b.moe.router.weight.normal_(0, 1.0 / cfg.d_model ** 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- counted communication

class Comm:
    """Wrappers around torch.distributed that count what this rank sends (bytes, messages)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.bytes_sent = self.messages = 0

    def all_to_all_single(self, out, inp, out_splits=None, in_splits=None):
        P = self.world_size
        rows = in_splits if in_splits is not None else [inp.shape[0] // P] * P
        row_bytes = inp[0].numel() * inp.element_size() if inp.shape[0] else 0
        self.bytes_sent += (sum(rows) - rows[self.rank]) * row_bytes  # the own share never leaves the rank
        self.messages += P - 1  # one to every peer, even an empty one
        dist.all_to_all_single(out, inp, out_splits, in_splits)

    def isend(self, t, dst):
        self.bytes_sent += t.numel() * t.element_size()
        self.messages += 1
        return dist.isend(t, dst)

    def recv(self, t, src):
        dist.recv(t, src)


def ep_step(model: MoEStack, x, comm: Comm):
    """Expert parallel: x (b, C) are this rank's tokens; returns their outputs (b, C)."""
    cfg, P, rank = model.cfg, comm.world_size, comm.rank
    E_local = cfg.n_experts // P
    for blk in model.blocks:
        h, u = blk.dense(x)
        r = route_top_k(blk.moe.router(u), cfg.k, capacity_factor=cfg.capacity_factor)  # capacity per rank's group
        tok, slot = torch.nonzero(~r.dropped, as_tuple=True)  # live assignments
        e = r.expert_index[tok, slot]
        order = torch.argsort(e, stable=True)  # experts of rank 0 first, then rank 1, …
        tok, slot, e = tok[order], slot[order], e[order]
        send_counts = torch.bincount(e // E_local, minlength=P)  # (P,) uneven splits
        recv_counts = torch.empty_like(send_counts)
        comm.all_to_all_single(recv_counts, send_counts)
        sends, recvs = send_counts.tolist(), recv_counts.tolist()
        payload = torch.cat([u[tok], e.unsqueeze(1).to(u.dtype)], 1)  # (n, C+1): the row and its expert id
        got = payload.new_empty(sum(recvs), cfg.d_model + 1)
        comm.all_to_all_single(got, payload, recvs, sends)
        ids = got[:, -1].long()
        y = got.new_empty(got.shape[0], cfg.d_model)
        for ex in range(rank * E_local, (rank + 1) * E_local):
            m = ids == ex
            if m.any():
                y[m] = blk.moe.expert(ex, got[m, :-1])
        back = y.new_empty(payload.shape[0], cfg.d_model)
        comm.all_to_all_single(back, y, sends, recvs)
        x = h + torch.zeros_like(h).index_add_(0, tok, back * r.weights[tok, slot, None])
    return x


def micro_sizes(batch: int, n_micro: int) -> list[int]:
    return [len(c) for c in torch.arange(batch).tensor_split(n_micro)]


def _device(model: MoEStack) -> torch.device:
    return next(model.parameters()).device


def pp_step(model: MoEStack, x, comm: Comm, batch: int, n_micro: int):
    """Layer pipeline: rank 0 feeds x (B, C); the last rank returns the output (B, C), others None."""
    cfg, P, rank, dev = model.cfg, comm.world_size, comm.rank, _device(model)
    per = cfg.n_layers // P
    mine = model.blocks[rank * per:(rank + 1) * per]
    pending, outs, start = [], [], 0
    for n in micro_sizes(batch, n_micro):
        if rank == 0:
            xb = x[start:start + n]
            start += n
        else:
            xb = torch.empty(n, cfg.d_model, device=dev)
            comm.recv(xb, rank - 1)
        for blk in mine:
            xb = blk(xb)  # capacity applies per micro-batch
        if rank < P - 1:
            pending.append(comm.isend(xb.contiguous(), rank + 1))
        else:
            outs.append(xb)
    if rank == P - 1:
        out = torch.cat(outs)
        comm.isend(out.argmax(-1), 0).wait()  # stand-in for the sampled next tokens: B int64
    if rank == 0:
        comm.recv(torch.empty(batch, dtype=torch.long, device=dev), P - 1)  # the step ends when the tokens are back
    for w in pending:
        w.wait()
    return out if rank == P - 1 else None


def pp_stream(model: MoEStack, x, comm: Comm, batch: int, n_micro: int, rounds: int):
    """Steady-state pipelined decode: n_micro groups, ``rounds`` tokens each; a group's next token starts
    at stage 0 when its previous ids are back from the last stage. Returns the last round's output there."""
    cfg, P, rank, dev = model.cfg, comm.world_size, comm.rank, _device(model)
    per = cfg.n_layers // P
    mine = model.blocks[rank * per:(rank + 1) * per]
    sizes = micro_sizes(batch, n_micro)
    starts = [sum(sizes[:j]) for j in range(n_micro)]
    pending, outs = [], [None] * n_micro  # pending: (work, tensor) kept alive until sent
    for s in range(rounds):
        for j, n in enumerate(sizes):
            if rank == 0:
                if s > 0:
                    comm.recv(torch.empty(n, dtype=torch.long, device=dev), P - 1)  # group j's previous token is back
                xb = x[starts[j]:starts[j] + n]  # stand-in for embedding the new token: the same hidden states
            else:
                xb = torch.empty(n, cfg.d_model, device=dev)
                comm.recv(xb, rank - 1)
            for blk in mine:
                xb = blk(xb)
            out = xb.contiguous() if rank < P - 1 else xb.argmax(-1)
            pending.append((comm.isend(out, rank + 1 if rank < P - 1 else 0), out))
            if rank == P - 1:
                outs[j] = xb
    if rank == 0:
        for n in sizes:
            comm.recv(torch.empty(n, dtype=torch.long, device=dev), P - 1)  # the last round's tokens
    for w, _ in pending:
        w.wait()
    return torch.cat(outs) if rank == P - 1 else None


# ----------------------------------------------------------------------------- the worker process

def _run(cmd, rank, P, models, device=torch.device("cpu")):
    if cmd.get("fail_rank") == rank:
        raise RuntimeError(f"injected failure on rank {rank}")
    cfg, layout = cmd["cfg"], cmd["layout"]
    key = (cfg, cmd["seed"])
    if key not in models:
        models[key] = build_stack(cfg, cmd["seed"]).to(device)
    model, x, B = models[key], cmd["x"].to(device), cmd["x"].shape[0]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    comm = Comm(rank, P)
    if layout == "ep":
        lo = [len(c) for c in torch.arange(B).tensor_split(P)]
        mine = x[sum(lo[:rank]):][:lo[rank]]
        step = lambda: ep_step(model, mine, comm)  # noqa: E731
    elif layout == "pp":
        step = lambda: pp_step(model, x if rank == 0 else None, comm, B, cmd["n_micro"])  # noqa: E731
    else:
        step = lambda: pp_stream(model, x, comm, B, cmd["n_micro"], cmd["rounds"])  # noqa: E731
    per = cmd.get("rounds", 1) if layout == "pps" else 1  # pps: report per decode round (one token per request)
    times, cpu, first = [], [], None
    with torch.inference_mode():
        for i in range(cmd["warmup"] + cmd["steps"]):
            dist.barrier()  # every step starts together (not counted: it is not part of the layout)
            t0, c0 = time.perf_counter(), time.process_time()
            out = step()
            sync()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0  # wall; CPU of every thread of this rank
            if i == 0:
                first = (out, comm.bytes_sent // per, comm.messages // per)
            if i >= cmd["warmup"]:
                times.append(dt / per)
                cpu.append(dc / per)
    out = first[0].cpu() if first[0] is not None else None
    return dict(output=out, bytes_sent=first[1], messages=first[2], times=times, cpu=cpu)


def worker(rank: int, world_size: int, port: int, cmd_q, res_q, timeout_s: float):
    """Entry point of one rank: join the group, then serve commands until told to stop (None)."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
        res_q.put(("ready", rank, None))
        models = {}
        while (cmd := cmd_q.get()) is not None:
            res_q.put(("ok", rank, _run(cmd, rank, world_size, models)))
    except BaseException as err:  # report, then exit: the caller tears the group down
        res_q.put(("error", rank, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
