"""``python -m labutils.factuality train``: train lab 05's readers and write ``labutils/data/factuality_readers.pt``
(3 × 1M tokens and a short sample run; minutes on one CPU thread). See ``labutils.factuality.stored``."""

from __future__ import annotations

import argparse
import sys

from labutils.factuality.stored import DATA_PATH, train_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labutils.factuality", description="Lab 05's stored data.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("train", help=f"train the three readers and write {DATA_PATH}")
    ap.parse_args(argv)
    blob = train_all()
    print(f"wrote {DATA_PATH} ({DATA_PATH.stat().st_size:,} bytes): {len(blob['readers'])} readers, "
          f"torch {blob['versions']['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
