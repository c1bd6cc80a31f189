"""What every subcommand module shares: the user-facing error and the reproduce-command line."""

from __future__ import annotations

import shlex
import sys

__all__ = ["CliError", "reproduce_command"]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def reproduce_command() -> str:
    """This invocation as a shell command line, for benchmark reports."""
    return "adjoint-sampling " + " ".join(shlex.quote(a) for a in sys.argv[1:])
