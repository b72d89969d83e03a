"""``lift serve``: memories as models of an OpenAI-compatible HTTP server (:mod:`lift_integrations.server`).

::

    lift serve --model Qwen/Qwen2.5-0.5B-Instruct --memory report=memories/report --port 8000
    lift serve --bank memories/kb          # every memory of a saved MemoryBank, by its name

Every memory and the bank are read and verified, and each ``--memory`` is run once on the model, before
the server starts listening: a memory that does not fit the model stops the command, not a request.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lift_integrations.commands._model import (
    add_model_arguments,
    check_model_arguments,
    load_memory,
    load_model,
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve memories over an OpenAI-compatible HTTP API",
        description=(
            "Serve the base model and each memory as a model of an OpenAI-compatible API "
            "(/v1/models, /v1/chat/completions). Needs the server extra: "
            "pip install 'lift-integrations[server]'."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--memory",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve the memory at PATH (a folder or hub id) as model NAME; repeat for several",
    )
    parser.add_argument(
        "--bank", default=None, help="serve every memory of a saved MemoryBank (a folder or a hub id)"
    )
    parser.add_argument(
        "--bank-max-bytes",
        type=int,
        default=None,
        help="keep at most this many bytes of the bank's memories loaded (default: all)",
    )
    parser.add_argument(
        "--base-id", default=None, help="the base model's model id (default: the model's name)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="answer length when a request sets none (default: 512)"
    )
    parser.add_argument(
        "--no-micro-batch",
        action="store_true",
        help="answer requests one at a time instead of gathering concurrent ones into shared batches",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.set_defaults(handler=lambda args: run(parser, args))
    return parser


def _named_memories(parser: argparse.ArgumentParser, entries: list[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for entry in entries:
        name, separator, path = entry.partition("=")
        if not separator or not name or not path:
            parser.error(f"--memory takes NAME=PATH, got {entry!r}")
        if name in named:
            parser.error(f"--memory names {name!r} twice")
        named[name] = path
    return named


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check, load the memories, then the model, then serve until interrupted."""
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if args.max_tokens < 1:
        parser.error(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.bank_max_bytes is not None and args.bank_max_bytes < 0:
        parser.error(f"--bank-max-bytes must be >= 0, got {args.bank_max_bytes}")
    try:
        from lift_integrations.server.app import create_app
        from lift_integrations.server.app import run as serve_app
    except ImportError as error:
        parser.error(str(error))
    check_model_arguments(parser, args)
    named = _named_memories(parser, args.memory)
    memories = {name: load_memory(parser, path, f"--memory {name}") for name, path in named.items()}
    bank = None
    if args.bank is not None:
        from lift_integrations.bank import MemoryBank

        try:
            bank = MemoryBank.from_pretrained(args.bank, max_loaded_bytes=args.bank_max_bytes)
        except (OSError, ValueError) as error:
            parser.error(f"--bank: {error}")

    from lift_integrations.server.catalog import ServedModels
    from lift_integrations.server.engine import ChatEngine

    lift = load_model(args)
    try:
        models = ServedModels(args.base_id or lift.name, memories, bank)
    except ValueError as error:
        parser.error(str(error))
    for name, memory in memories.items():
        try:  # one token: the memory's adapter is built now, and one that does not fit stops here
            lift.generate("Hello", memory=memory, max_new_tokens=1)
        except ValueError as error:
            parser.error(f"--memory {name}: {error}")
    engine = ChatEngine(lift, models, default_max_tokens=args.max_tokens, micro_batch=not args.no_micro_batch)
    sys.stderr.write(f"lift serve: models {models.ids()} at http://{args.host}:{args.port}/v1\n")
    sys.stderr.flush()
    serve_app(create_app(engine), host=args.host, port=args.port, log_level=args.log_level)
    return 0
