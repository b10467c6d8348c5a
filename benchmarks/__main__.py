"""Run the benchmarks: ``python -m benchmarks [NAME ...]`` (default: all)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module in this package with a main() that prints a Markdown table
BENCHMARKS = {
    "contain": "benchmarks.contain",
    "guards": "benchmarks.guards",
    "identities": "benchmarks.identities",
    "inputs": "benchmarks.inputs",
    "ledger": "benchmarks.ledger",
    "msgraph_sdk": "benchmarks.msgraph_sdk",
    "pacing": "benchmarks.pacing",
    "remediate": "benchmarks.remediate",
    "sources": "benchmarks.sources",
    "staged": "benchmarks.staged",
    "window": "benchmarks.window",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"which to run: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {list(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        print(f"== {name}", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
