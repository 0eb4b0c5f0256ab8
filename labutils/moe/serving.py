"""Lab 04: run an MoE decode step across real processes, as expert parallel or as a layer pipeline.

``Cluster(world_size)`` starts one gloo process group (P spawned processes, one thread each) and
keeps it for every layout and batch size — start-up costs seconds, a step milliseconds.
``Cluster.run`` (or the one-shot ``run_layout``) sends the hidden states to the ranks and returns
the output with the measurements: latency per step, bytes and messages sent per rank per step.
(The example is skipped under pytest: starting two processes that import torch takes seconds.)

    >>> cfg, x = StackConfig(d_model=64, d_ff=128, n_experts=4, k=2, n_layers=2), torch.randn(8, 64)
    >>> with Cluster(2) as c:   # doctest: +SKIP
    ...     r = c.run("ep", cfg, x)
    >>> torch.allclose(r.output, reference_output("ep", cfg, x, world_size=2), atol=1e-5)   # doctest: +SKIP
    True

Every run has a deadline; a rank that raises, dies or hangs ends the run with a RuntimeError or
TimeoutError naming it, and all processes are torn down. The same worker code runs with nccl on
GPUs and under torchrun; only the process start-up here is CPU-specific.
Left out on purpose: overlapping communication with compute (DeepSeek's two-micro-batch trick),
fp8 dispatch, and fault recovery (a failed cluster is closed, not repaired).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import weakref
from dataclasses import dataclass, field

import torch

from labutils.moe.layer import route_top_k
from labutils.moe.workers import LAYOUTS, StackConfig, build_stack, worker


@dataclass
class LayoutResult:
    layout: str
    world_size: int
    batch: int
    n_micro: int
    output: torch.Tensor  # (B, d_model)
    step_s: list  # latency of each timed step: the slowest rank's time, s
    bytes_sent: list  # per rank, per step
    messages: list  # per rank, per step
    cpu_s: list = field(default_factory=list)  # per rank: CPU seconds per step (median), every thread of the process

    @property
    def latency_s(self) -> float:
        """Median step latency (s): the steps are identical, the median ignores scheduler hiccups."""
        return float(torch.tensor(self.step_s).median())

    @property
    def best_s(self) -> float:
        """Fastest step (s): on a shared machine the least disturbed one."""
        return min(self.step_s)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_sent)

    @property
    def total_messages(self) -> int:
        return sum(self.messages)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # the OS picks a free port
        return s.getsockname()[1]


def _shutdown(procs, cmd_qs):
    for q in cmd_qs:
        try:
            q.put(None)
        except Exception:
            pass
    procs = [p for p in procs if p.pid is not None]  # a start-up that failed part-way started only some
    deadline = time.monotonic() + 3.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(2.0)


class Cluster:
    """P worker processes in one gloo process group, reused for every run. A context manager."""

    def __init__(self, world_size: int, *, timeout_s: float = 20.0):
        if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 2:
            raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.world_size, self.timeout_s = world_size, float(timeout_s)
        ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
        self._res = ctx.Queue()
        self._cmd = [ctx.Queue() for _ in range(world_size)]
        port = _free_port()
        self.procs = [ctx.Process(target=worker, args=(r, world_size, port, self._cmd[r], self._res, timeout_s),
                                  daemon=True, name=f"moe-rank{r}") for r in range(world_size)]
        self._finalizer = weakref.finalize(self, _shutdown, self.procs, self._cmd)
        t0 = time.perf_counter()
        for p in self.procs:
            p.start()
        self._collect("ready", timeout_s=max(60.0, timeout_s))  # spawning P interpreters that import torch
        self.startup_s = time.perf_counter() - t0

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop every worker (politely, then by force). Safe to call twice."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _collect(self, kind: str, timeout_s: float) -> dict:
        got, deadline = {}, time.monotonic() + timeout_s
        while len(got) < self.world_size:
            try:
                status, rank, payload = self._res.get(timeout=0.1)
            except queue.Empty:
                dead = [p.name for p in self.procs if not p.is_alive()]
                if dead:
                    time.sleep(0.2)  # let a dying rank's error message arrive first
                    if self._res.empty():
                        self.close()
                        raise RuntimeError(f"{', '.join(dead)} exited without a result; the cluster is closed")
                    continue
                if time.monotonic() > deadline:
                    self.close()
                    raise TimeoutError(f"no {kind} from rank(s) {sorted(set(range(self.world_size)) - set(got))} "
                                       f"within {timeout_s:.0f} s; the cluster is closed")
                continue
            if status == "error":
                self.close()
                raise RuntimeError(f"rank {rank} failed: {payload.strip().splitlines()[0]}; the cluster is closed.\n"
                                   f"Its traceback:\n{payload}")
            got[rank] = payload
        return got

    def run(self, layout: str, cfg: StackConfig, x: torch.Tensor, *, seed: int = 0, n_micro: int | None = None,
            steps: int = 5, warmup: int = 2, timeout_s: float | None = None, fail_rank: int | None = None,
            rounds: int = 8) -> LayoutResult:
        """One decode step of ``layout`` on hidden states x (B, d_model), repeated warmup + steps times.

        n_micro: pipeline micro-batches, or groups in flight for "pps" (default min(B, world_size));
        rounds: tokens per request in one "pps" decode loop, whose time, bytes and messages are reported
        per round; fail_rank makes that rank raise (tests).
        """
        P = self.world_size
        if self.closed:
            raise RuntimeError("this cluster is closed (a run failed or close() was called); start a new Cluster")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not isinstance(cfg, StackConfig):
            raise ValueError(f"cfg must be a StackConfig, got {type(cfg).__name__}")
        if layout == "ep" and cfg.n_experts % P:
            raise ValueError(f"expert parallel needs world_size ({P}) to divide n_experts ({cfg.n_experts})")
        if layout in ("pp", "pps") and cfg.n_layers % P:
            raise ValueError(f"the layer pipeline needs world_size ({P}) to divide n_layers ({cfg.n_layers})")
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != cfg.d_model or x.dtype != torch.float32:
            raise ValueError(f"x must be float32 of shape (B, {cfg.d_model}), got "
                             f"{tuple(x.shape) + (x.dtype,) if isinstance(x, torch.Tensor) else type(x).__name__}")
        B = x.shape[0]
        if B < 1:
            raise ValueError("x needs at least one token")
        n_micro = min(B, P) if n_micro is None else n_micro
        if not isinstance(n_micro, int) or not 1 <= n_micro <= B:
            raise ValueError(f"n_micro must be an int in [1, batch={B}], got {n_micro!r}")
        if not (isinstance(steps, int) and steps >= 1 and isinstance(warmup, int) and warmup >= 0):
            raise ValueError("steps must be an int >= 1 and warmup an int >= 0")
        if not (isinstance(rounds, int) and rounds >= 1):
            raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
        cmd = dict(layout=layout, cfg=cfg, x=x.contiguous(), seed=seed, n_micro=n_micro, steps=steps, warmup=warmup,
                   fail_rank=fail_rank, rounds=rounds)
        for q in self._cmd:
            q.put(cmd)
        got = self._collect("result", timeout_s or self.timeout_s)
        if layout == "ep":
            out = torch.cat([got[r]["output"] for r in range(P)])
        else:
            out = got[P - 1]["output"]
        step_s = [max(got[r]["times"][i] for r in range(P)) for i in range(steps)]
        cpu_s = [float(torch.tensor(got[r]["cpu"]).median()) for r in range(P)]
        return LayoutResult(layout, P, B, n_micro, out, step_s,
                            [got[r]["bytes_sent"] for r in range(P)], [got[r]["messages"] for r in range(P)], cpu_s)


def run_layout(layout: str, cfg: StackConfig, x: torch.Tensor, *, world_size: int, cluster: Cluster | None = None,
               **kwargs) -> LayoutResult:
    """Run ``layout`` across ``world_size`` processes: on ``cluster`` if given, else on a fresh one closed after."""
    if cluster is not None:
        if cluster.world_size != world_size:
            raise ValueError(f"cluster has world_size {cluster.world_size}, asked for {world_size}")
        return cluster.run(layout, cfg, x, **kwargs)
    with Cluster(world_size) as c:
        return c.run(layout, cfg, x, **kwargs)


def reference_output(layout: str, cfg: StackConfig, x: torch.Tensor, *, world_size: int, seed: int = 0,
                     n_micro: int | None = None) -> torch.Tensor:
    """The single-process model on the same weights and tokens, run group by group: the groups are
    the ranks' token shards (ep) or the micro-batches (pp, pps), because capacity applies per group."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    B = x.shape[0]
    groups = world_size if layout == "ep" else (min(B, world_size) if n_micro is None else n_micro)
    model = build_stack(cfg, seed)
    with torch.inference_mode():
        return torch.cat([model(g) for g in x.tensor_split(groups)])


def ep_off_rank(cfg: StackConfig, x: torch.Tensor, *, world_size: int, seed: int = 0) -> list:
    """Live assignments that leave their rank, per layer, summed over ranks, for expert parallel on x:
    the exact ``off_rank`` that makes ``comm_per_step`` equal the bytes the ranks really send."""
    model, E_local = build_stack(cfg, seed), cfg.n_experts // world_size
    counts = [0] * cfg.n_layers
    with torch.inference_mode():
        for rank, xs in enumerate(x.tensor_split(world_size)):
            for i, blk in enumerate(model.blocks):
                _, u = blk.dense(xs)
                r = route_top_k(blk.moe.router(u), cfg.k, capacity_factor=cfg.capacity_factor)
                counts[i] += int(((r.expert_index // E_local != rank) & ~r.dropped).sum())
                xs = blk(xs)
    return counts


def ep_expert_counts(cfg: StackConfig, x: torch.Tensor, *, world_size: int, seed: int = 0) -> list:
    """Distinct experts each rank runs, per layer, for expert parallel on x: [[rank 0, rank 1, …], …].
    A step waits for the busiest rank, so compare max(row) with the mean."""
    model, E_local = build_stack(cfg, seed), cfg.n_experts // world_size
    hit = [torch.zeros(cfg.n_experts, dtype=torch.bool) for _ in range(cfg.n_layers)]
    with torch.inference_mode():
        for xs in x.tensor_split(world_size):
            for i, blk in enumerate(model.blocks):
                _, u = blk.dense(xs)
                r = route_top_k(blk.moe.router(u), cfg.k, capacity_factor=cfg.capacity_factor)
                hit[i][r.expert_index[~r.dropped]] = True
                xs = blk(xs)
    return [h.view(world_size, E_local).sum(1).tolist() for h in hit]


if __name__ == "__main__":  # torchrun --nproc_per_node=P -m labutils.moe.serving --layout ep|pp|pps …
    from labutils.moe.launch import main

    main()
