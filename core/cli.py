"""The one shape of both command lines (`python -m stack`, `python -m training`): subcommands
from a table, each a function of the parsed arguments, and one set of exit codes. A user error
is one line on stderr; Ctrl-C says what state things are left in."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import UserError

EXIT_OK = 0
EXIT_USER_ERROR = 2  # bad input, a refused command, a stack busy with another command
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports SIGINT


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    settings: bool = False  # takes `key=value ...` after the command
    job: bool = False  # takes an optional JOB id after the command


def main(
    prog: str,
    doc: str,
    commands: list[Command],
    argv: list[str] | None = None,
    interrupted: str = "interrupted",
    before: Callable[[], None] = lambda: None,
) -> int:
    """Parse `argv`, run the command it names and turn its outcome into an exit code.
    `before` runs after parsing (a bad command line never reaches it); `interrupted` is the
    line printed on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        p = sub.add_parser(command.name, help=command.help)
        p.set_defaults(run=command.run)
        if command.settings:
            p.add_argument("settings", nargs="*", metavar="key=value")
        if command.job:
            p.add_argument("job", nargs="?", default="", metavar="JOB")
    args = parser.parse_args(argv)
    try:
        before()
        code = args.run(args)
        return EXIT_OK if code is None else code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
