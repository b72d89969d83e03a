"""``lift``: the command line, one sub-command each for absorbing, asking and serving.

::

    lift absorb --output memories/report report.txt     # the same as lift-absorb
    lift ask memories/report "Who opened the observatory?"
    lift serve --memory report=memories/report --port 8000

``lift absorb`` takes ``lift-absorb``'s arguments (:mod:`lift_integrations.cli`); ``lift ask`` and
``lift serve`` live in :mod:`.ask` and :mod:`.serve`. Every argument is checked before a model loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lift_integrations import cli
from lift_integrations.commands import ask, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lift", description="Absorb documents into LIFT memories, ask them, serve them over HTTP."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    absorb = commands.add_parser(
        "absorb",
        parents=[cli.build_parser(prog="lift absorb")],
        add_help=False,
        help="absorb text files into memories (as lift-absorb)",
        description=cli.build_parser().description,
    )
    absorb.set_defaults(handler=lambda args: cli.run(absorb, args))
    ask.add_parser(commands)
    serve.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run its sub-command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
