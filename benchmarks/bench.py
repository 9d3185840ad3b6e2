"""Benchmark script: the same as `sam3lite bench` (see BENCHMARKS.md for the commands used)."""

import sys

from sam3lite.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
