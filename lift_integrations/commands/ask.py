"""``lift ask [MEMORY] QUESTION``: one answer from a memory (or the base model), streamed to stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lift_integrations.commands._model import (
    add_model_arguments,
    check_model_arguments,
    load_memory,
    load_model,
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "ask",
        usage="%(prog)s [options] [MEMORY] QUESTION",
        help="answer a question from a memory, or from the base model",
        description=(
            "Answer QUESTION from MEMORY (a memory folder or hub id), or from the base model alone when "
            "MEMORY is left out. The answer is written to stdout as it is generated."
        ),
    )
    parser.add_argument(
        "words", nargs="+", metavar="[MEMORY] QUESTION", help="the memory (optional), then the question"
    )
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling, with --temperature > 0")
    parser.add_argument("--system", default=None, help="a system message before the question")
    context = parser.add_mutually_exclusive_group()
    context.add_argument(
        "--context-file",
        type=Path,
        action="append",
        default=None,
        metavar="FILE",
        help="hybrid mode: a text file put in context next to the memory (repeat for several chunks)",
    )
    context.add_argument(
        "--truncated",
        action="store_true",
        help="put the head and tail of the memory's documents in context as well",
    )
    parser.set_defaults(handler=lambda args: run(parser, args))
    return parser


def _context(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    if args.truncated:
        return "truncated"
    if not args.context_file:
        return None
    chunks = []
    for path in args.context_file:
        try:
            chunks.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--context-file {path}: {error}")
    return chunks


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check everything, load the memory and then the model, stream the answer; exit status 0."""
    from lift_integrations.validation import check_generation_args

    if len(args.words) > 2:
        parser.error("give the question as one argument (quote it), after the optional MEMORY")
    memory_name, question = (None, args.words[0]) if len(args.words) == 1 else args.words
    if not question.strip():
        parser.error("the question is empty")
    if args.truncated and memory_name is None:
        parser.error("--truncated needs a MEMORY")
    try:
        check_generation_args(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            stop=None,
            context_window=None,
        )
    except (TypeError, ValueError) as error:
        parser.error(str(error).replace("max_new_tokens", "--max-new-tokens").replace("top_p", "--top-p"))
    check_model_arguments(parser, args)
    context = _context(parser, args)
    memory = load_memory(parser, memory_name, "MEMORY") if memory_name is not None else None
    lift = load_model(args)
    messages = [{"role": "user", "content": question}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    try:
        stream = lift.stream(
            messages,
            memory=memory,
            context=context,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
        )
    except (TypeError, ValueError) as error:  # a prompt too long for the window, a memory of another model
        sys.stderr.write(f"{parser.prog}: {error}\n")
        return 1
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        stream.close()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0
