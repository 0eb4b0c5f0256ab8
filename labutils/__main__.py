"""``python -m labutils doctor`` checks this machine; ``python -m labutils progress`` shows passed exercises;
``python -m labutils warmup`` fills the training cache by running the solution notebooks once."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import labutils


def _register_all_exercises() -> None:
    """Import every topic module so that its exercises are known (a broken one is skipped)."""
    for mod in pkgutil.iter_modules(labutils.__path__):
        if not mod.name.startswith("_") and mod.name not in ("authoring", "doctor"):
            try:
                importlib.import_module(f"labutils.{mod.name}")
            except Exception:  # progress must print even if one module cannot import here
                pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labutils")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("doctor", help="check that this machine can run the course")
    p = sub.add_parser("progress", help="print the exercises you have passed")
    p.add_argument("notebook", nargs="?", help="one notebook, e.g. 00_start_here")
    w = sub.add_parser("warmup", help="run the solution notebooks once so that every training run is cached")
    w.add_argument("notebooks", nargs="*", help="e.g. 00_start_here or 01 (default: every solution notebook)")
    args = parser.parse_args(argv)
    if args.cmd == "warmup":
        from labutils.warmup import warmup

        try:
            warmup(args.notebooks)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "doctor":
        from labutils.doctor import report

        return 0 if report() else 1
    from labutils.checks import progress_file, progress_table

    _register_all_exercises()
    print(progress_table(args.notebook))
    print(f"(record: {progress_file()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
