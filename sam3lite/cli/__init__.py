"""The ``sam3lite`` command: one module per subcommand, each with ``add_parser`` and ``run``.

A subcommand module defines::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers its arguments
    def run(args: argparse.Namespace) -> int                 # the exit code

Errors a user can fix (bad paths, bad prompts, unknown models) are raised as ``UsageError`` (or
ValueError / FileNotFoundError / CheckpointError) and printed as one line with exit code 2, never
as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module; imported only when the command runs, so `sam3lite --help` stays fast.
COMMANDS: dict[str, str] = {
    "segment": "sam3lite.cli.segment",
    "info": "sam3lite.cli.info",
    "eval": "sam3lite.cli.evaluate",
    "distill": "sam3lite.cli.distill",
    "anatomy": "sam3lite.cli.anatomy",
    "serve": "sam3lite.cli.serve",
    "bench": "sam3lite.cli.bench",
    "export": "sam3lite.cli.export",
}

USAGE_EXIT = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam3lite", description="SAM3-LiteText: segment every instance of a noun phrase."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        command = importlib.import_module(module).add_parser(sub)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam3lite`` console script (and ``python -m sam3lite``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("sam3lite: interrupted", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"sam3lite {args.command}: error: {err}", file=sys.stderr)
        return USAGE_EXIT
    except (ValueError, FileNotFoundError, PermissionError) as err:
        # CheckpointError is a ValueError: unknown model names and offline downloads land here.
        print(f"sam3lite {args.command}: error: {err}", file=sys.stderr)
        return USAGE_EXIT
