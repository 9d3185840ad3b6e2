"""The ``sam3lite`` command: one module per subcommand, each with ``add_parser`` and ``run``.

A subcommand module defines::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers its arguments
    def run(args: argparse.Namespace) -> int                 # the exit code

Errors a user can fix (bad paths, bad prompts, unknown models) are raised as ``UsageError`` (or
ValueError / FileNotFoundError / CheckpointError) and printed as one line with exit code 2, never
as a traceback. Warnings print as one line too (``sam3lite CMD: warning: ...``), and a closed
output pipe (``sam3lite info M --json | head -1``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import sys
import warnings
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
    "track": "sam3lite.cli.track",
}

USAGE_EXIT = 2
BROKEN_PIPE_EXIT = 128 + 13  # what a process killed by SIGPIPE reports, as `head` users expect

# An option value that starts with a minus and holds a comma (``--box -50,-20,200,220``): argparse
# would take it for an option; such values are glued to their option (``--box=-50,...``) first.
_DASH_VALUE = re.compile(r"^-[\d.]+,")


class UsageError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown argument is reported with this subcommand's usage (argparse
    leaves extras to the top-level parser, whose usage does not show the subcommand's options)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if not hasattr(parsed, "_parser"):  # the innermost subcommand's parser comes back first
            parsed._parser = self
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sam3lite", description="SAM3-LiteText: segment every instance of a noun phrase."
    )
    parser.add_argument("--version", action="version", version=f"sam3lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    for module in COMMANDS.values():
        command = importlib.import_module(module).add_parser(sub)
        command.set_defaults(_module=module)
    return parser


def glue_dash_values(argv: Sequence[str]) -> list[str]:
    """``["--box", "-50,-20,200,220"]`` -> ``["--box=-50,-20,200,220"]``; everything else as is."""
    out: list[str] = []
    for arg in argv:
        previous = out[-1] if out else ""
        if _DASH_VALUE.match(arg) and previous.startswith("--") and "=" not in previous:
            out[-1] = f"{previous}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam3lite`` console script (and ``python -m sam3lite``)."""
    parser = build_parser()
    args = parser.parse_args(glue_dash_values(sys.argv[1:] if argv is None else argv))
    module = importlib.import_module(args._module)
    prefix = f"sam3lite {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, prefix)
            code = int(module.run(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe surfaces inside the try
        return code
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        print("sam3lite: interrupted", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return USAGE_EXIT
    except (ValueError, FileNotFoundError, PermissionError) as err:
        # CheckpointError is a ValueError: unknown model names and offline downloads land here.
        print(f"{prefix}: error: {_for_cli(err, args)}", file=sys.stderr)
        return USAGE_EXIT


def _for_cli(err: Exception, args: argparse.Namespace) -> str:
    """The error's text; a download error names the option that took the model (flags, not Python calls)."""
    for_cli = getattr(err, "for_cli", None)
    if for_cli is None:
        return str(err)
    asked = getattr(err, "asked", None)
    for action in getattr(args, "_parser", argparse.ArgumentParser())._actions:
        if asked is not None and str(getattr(args, action.dest, None)) == asked:
            return for_cli(max(action.option_strings, key=len, default=None))
    return for_cli(None)


def _show_warning(prefix: str, message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning, without the source file and line that Python's format adds."""
    text = " ".join(str(message).split()) or category.__name__
    try:
        print(f"{prefix}: warning: {text}", file=file or sys.stderr)
    except OSError:  # stderr gone: nowhere to warn
        pass


def _discard_stdout() -> None:
    """After the reader of stdout went away: point stdout at devnull, so that the interpreter's final
    flush does not fail a second time (with a traceback) on the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured in tests)
        pass
