"""``python -m labutils.scaling sweep [--preset cpu] [--device cpu] [--jobs 2]``: run or resume lab 01's sweep;
``python -m labutils.scaling targets``: freeze and train the targets beyond it (``labutils.scaling.targets``);
``python -m labutils.scaling bench``: step time and tokens/s per ladder shape, one thread.

This file is what ``python -m labutils.scaling`` runs; the sweep itself is ``labutils.scaling.sweep``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labutils.scaling.sweep import DATA_PATH, PRESETS, _tokens, design, run_sweep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labutils.scaling", description="Lab 01's IsoFLOP sweep: run or resume it, or print its frozen design.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="run or resume the IsoFLOP sweep and the one-shot run")
    sw.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    sw.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    sw.add_argument("--out", type=Path, default=None, help=f"output JSON (default: {DATA_PATH} for the cpu preset)")
    sw.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)")
    sw.add_argument("--jobs", type=int, default=1, help="CPU processes training in parallel (e.g. 2 on 2 cores)")
    sw.add_argument("--dry-run", action="store_true", help="print the frozen design and exit")
    tg = sub.add_parser("targets",
                        help="freeze the targets' design (hashed), then train the live, far and off-frontier runs")
    tg.add_argument("--only", nargs="*", choices=["live", "far", "off_frontier"], default=None)
    tg.add_argument("--threads", type=int, default=1)
    bn = sub.add_parser("bench",
                        help="print step time and tokens/s per ladder shape (one thread; a benchmark, not a test)")
    bn.add_argument("--steps", type=int, default=50)
    bn.add_argument("--sizes", type=int, nargs="*", default=None, help="ladder indices (default: the swept ones)")
    args = ap.parse_args(argv)
    if args.cmd == "targets":
        from labutils.scaling.targets import TARGETS_PATH, run_targets

        res = run_targets(threads=args.threads, only=args.only)
        print(f"wrote {TARGETS_PATH}: design {res['design_hash']}, " +
              ", ".join(f"{k} {len(v)} seeds" for k, v in res["runs"].items()))
        return 0
    if args.cmd == "bench":
        from labutils.scaling.bench import bench

        bench(steps=args.steps, sizes=args.sizes)
        return 0
    out = args.out or (DATA_PATH if args.preset == "cpu" else Path(f"scaling_sweep_{args.preset}.json"))
    if args.dry_run:
        d = design(args.preset)
        from labutils.model import GPTConfig, count_params

        for g in d["grid"]:
            cfg = GPTConfig(**d["ladder"][g["size"]])
            print(f"C={g['budget']:.3g}  size {g['size']:2d}  N={count_params(cfg, embeddings=True):>8,}  "
                  f"D={_tokens(g['budget'], cfg):>10,}  steps={_tokens(g['budget'], cfg) // (d['batch_size'] * cfg.context_length)}")
        return 0
    res = run_sweep(args.preset, device=args.device, out=out, threads=args.threads, jobs=args.jobs)
    print(f"wrote {out}: {len(res['runs'])} sweep runs, {len(res['big']['runs'])} big runs, "
          f"{res['meta']['cpu_s_total']:.0f} CPU-s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
