"""``lift-absorb``: absorb text files into memories from the command line, on one process or several.

Run it plainly for one process, or under ``torchrun`` to use several (one per GPU, NCCL; or several CPU
processes, gloo)::

    lift-absorb --output memories/report report.txt
    torchrun --nproc_per_node 2 -m lift_integrations.cli --model Qwen/Qwen2.5-0.5B-Instruct \\
        --output memories/report --mode shard report.txt
    torchrun --nproc_per_node 8 -m lift_integrations.cli --output memories --mode each docs/*.txt

``--mode shard`` (default) absorbs all files into one memory saved at ``--output``, splitting each
optimizer step's samples between the processes. ``--mode each`` absorbs every file into its own memory,
saved at ``--output/<file stem>``, the files dealt out to the processes by length (so that they finish
together), each process training its files side by side (:meth:`LIFTModel.absorb_many`). Each file is
a document titled with its file stem.
The memory of either mode equals a single-process absorption of the same files.

``lift-absorb --warmup`` absorbs a short built-in text and saves nothing: the first absorption in a
process captures its CUDA graphs, and with ``compile`` set fills the on-disk compile cache
(:func:`~lift_integrations.absorb.compilation.compile_cache_dir`) that later processes reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.config import LIFTConfig
    from lift_integrations.distributed import DistributedContext
    from lift_integrations.model import LIFTModel

WARMUP_TEXT = (
    "The Harbour Library of Vellmouth opened in 1921. Its first librarian, Ada Corran, catalogued "
    "twelve thousand books on tides, ships and weather, and the reading room faces the old lighthouse."
)
PRESETS = ("fast", "dense_qa", "paper")
MODES = ("shard", "each")
ADAPTERS = ("gated_memory", "lora")  # lift_integrations.model.ADAPTERS, without importing torch


def build_parser(prog: str = "lift-absorb") -> argparse.ArgumentParser:
    """The arguments of ``lift-absorb`` (also ``lift absorb``, whose parser takes them as a parent)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Absorb text files into LIFT memories. Under torchrun the work is split over the processes: "
            "--mode shard trains one memory on all files, --mode each one memory per file."
        ),
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="UTF-8 text files to absorb")
    parser.add_argument(
        "--model",
        default=None,
        help="hub id, local folder or .gguf file of the base model (default: the embedded SmolLM2)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="folder of the memory (--mode shard) or folder holding one memory per file (--mode each)",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="shard", help="one memory for all files (shard), or one each"
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="LIFTConfig preset (default: fast on CPU, dense_qa on GPU, as LIFTModel.absorb)",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        metavar="JSON",
        help="LIFTConfig fields overriding the preset, as a JSON object, e.g. '{\"stage2_epochs\": 2}'",
    )
    parser.add_argument("--adapter", choices=ADAPTERS, default="gated_memory")
    parser.add_argument(
        "--device",
        default=None,
        help="where the model runs (default: CUDA when available, else CPU); under torchrun only 'cpu' "
        "(gloo) or 'cuda' (NCCL, the GPU of LOCAL_RANK) are accepted",
    )
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: bf16 on GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary lines")
    parser.add_argument(
        "--force", action="store_true", help="replace a memory already saved at the output folder(s)"
    )
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="absorb a short built-in text and save nothing (fills the compile cache; takes no FILE)",
    )
    return parser


def _read_documents(parser: argparse.ArgumentParser, files: Sequence[Path]) -> list[tuple[str, str]]:
    documents = []
    for path in files:
        if not path.exists():
            parser.error(f"file not found: {path}")
        if not path.is_file():
            parser.error(f"not a file: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            parser.error(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})")
        except OSError as error:
            parser.error(f"cannot read {path}: {error.strerror or error}")
        if not text.strip():
            parser.error(f"{path} is empty")
        documents.append((path.stem, text))
    return documents


def _overrides(parser: argparse.ArgumentParser, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        overrides = json.loads(text)
    except ValueError as error:
        parser.error(f"--config-json is not valid JSON: {error}")
    if not isinstance(overrides, dict):
        parser.error(f"--config-json must be a JSON object, got {type(overrides).__name__}")
    from lift_integrations.config import LIFTConfig

    unknown = sorted(set(overrides) - set(LIFTConfig.__dataclass_fields__))
    if unknown:
        parser.error(f"--config-json has unknown LIFTConfig fields: {unknown}")
    return overrides


def _check_target(parser: argparse.ArgumentParser, folder: Path, force: bool) -> None:
    """Refuse now, not after training, a target that :meth:`Memory.save` would refuse, and one that
    holds a memory already unless ``--force`` says to replace it."""
    from lift_integrations.memory import check_save_target
    from lift_integrations.memory_validation import is_memory_folder

    try:
        check_save_target(folder)
    except FileExistsError as error:
        parser.error(str(error))
    if not force and folder.is_dir() and is_memory_folder(folder) is None:
        parser.error(f"{folder} holds a memory already; pass --force to replace it")


def _torchrun_world_size() -> int:
    import os

    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), absorb, save; returns the exit status. Argument errors
    (files, ``--output``, ``--device``, ``--dtype``, every ``--config-json`` setting, checked by
    :class:`LIFTConfig`) exit with status 2 before any model is loaded or file written."""
    parser = build_parser()
    return run(parser, parser.parse_args(argv))


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """What :func:`main` does once ``args`` are parsed; ``parser`` reports argument errors (``lift absorb``
    passes its sub-command's parser)."""
    if args.warmup:
        if args.files or args.output is not None:
            parser.error("--warmup takes no FILE and no --output: it saves nothing")
        documents = [("warmup", WARMUP_TEXT)]
    else:
        if not args.files:
            parser.error("give at least one FILE (or --warmup)")
        if args.output is None:
            parser.error("--output is required")
        documents = _read_documents(parser, args.files)
    if args.mode == "each":
        # Compared case-insensitively: on macOS and Windows file systems "Doc" and "doc" are one folder.
        stems = [title.casefold() for title, _ in documents]
        duplicates = sorted({title for title, _ in documents if stems.count(title.casefold()) > 1})
        if duplicates:
            parser.error(
                f"--mode each names each memory after its file's stem; stems that repeat (ignoring case): "
                f"{duplicates}"
            )
    overrides = _overrides(parser, args.config_json)
    output = cast(Path, args.output)  # None only with --warmup, which writes nothing
    if args.warmup:
        pass
    elif args.mode == "shard":
        _check_target(parser, output, args.force)
    else:
        if output.exists() and not output.is_dir():
            parser.error(f"{output} exists and is not a folder")
        for title, _ in documents:
            _check_target(parser, output / title, args.force)
    distributed_run = _torchrun_world_size() > 1
    if distributed_run and args.device not in (None, "cpu", "cuda"):
        parser.error(
            "under torchrun --device must be 'cpu' or 'cuda' (each process uses the GPU of its LOCAL_RANK)"
        )

    import torch

    from lift_integrations.config import LIFTConfig

    try:
        requested = torch.device(args.device) if args.device is not None else None
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if args.dtype is not None:
        from lift_integrations.loading import resolve_dtype

        try:
            resolve_dtype(args.dtype, torch.device("cpu"))
        except ValueError as error:
            parser.error(f"--dtype: {error}")
    use_cuda = torch.cuda.is_available() if requested is None else requested.type == "cuda"
    try:
        if args.preset is None:
            config = LIFTConfig.for_device("cuda" if use_cuda else "cpu", **overrides)
        else:
            config = getattr(LIFTConfig, args.preset)(**overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--config-json: {error}")

    from lift_integrations import distributed
    from lift_integrations.memory import save_or_rescue
    from lift_integrations.model import LIFTModel

    created_group = distributed_run and not torch.distributed.is_initialized()
    context = distributed.init_from_env(backend=("nccl" if use_cuda else "gloo")) if distributed_run else None
    try:
        device = context.device if context is not None else args.device
        # Local rank 0 loads first (it may download or write the GGUF cache); the others then read it.
        if context is not None and context.local_rank != 0:
            distributed.barrier(context)
        lift = LIFTModel.from_pretrained(args.model, device=device, dtype=args.dtype, adapter=args.adapter)
        if context is not None and context.local_rank == 0:
            distributed.barrier(context)

        main_process = context is None or context.is_main
        status = 0
        if args.warmup:
            memory = lift.absorb(documents, config=config, show_progress=not args.quiet, distributed=False)
            if not args.quiet:
                _print_line(
                    {"warmup_seconds": memory.stats.get("seconds"), "steps": memory.stats.get("steps")}
                )
        elif args.mode == "shard":
            memory = lift.absorb(
                documents, config=config, show_progress=not args.quiet, distributed=context is not None
            )
            if main_process:
                try:
                    _report(args.quiet, save_or_rescue(memory, output), memory)
                except OSError as error:
                    sys.stderr.write(f"{parser.prog}: {error}\n")
                    status = 1
            if context is not None:  # the other processes wait for rank 0's save, failed or not
                distributed.barrier(context)
        else:
            written = absorb_each(
                lift,
                {title: (title, text) for title, text in documents},
                output,
                config=config,
                show_progress=not args.quiet,
                context=context,
            )
            if not args.quiet:
                rank = context.rank if context is not None else 0
                for path in written.values():
                    _print_line({"memory": str(path), "rank": rank})
    finally:
        if created_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return status


def absorb_each(
    lift: LIFTModel,
    documents: Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    config: LIFTConfig | None = None,
    generator: Any = None,
    show_progress: bool | None = None,
    callback: Callable[[str, AbsorbProgress], None] | None = None,
    context: DistributedContext | None = None,
) -> dict[str, Path]:
    """Absorb each entry of ``documents`` into its own fresh memory, saved at ``output_dir / name``
    (``--mode each``).

    ``documents`` maps a memory name (a folder name) to what :meth:`LIFTModel.absorb` accepts (a text, a
    ``(title, text)`` pair or a list of documents). With a process group (``context``, default: the one
    initialised in this process), the names are dealt by length
    (:func:`~lift_integrations.distributed.deal_by_length` of each entry's characters, titles included):
    a rank's time grows with the text it trains on, so dealing in order would leave the ranks of short
    documents idle while one rank trains a long one. Every rank computes the same deal, so every rank
    must pass the same mapping; each rank trains its memories side by side on its own
    (:meth:`LIFTModel.absorb_many`), each equal to a single-process absorption with the same seed.
    ``callback(name, report)`` receives the progress reports; ``show_progress`` draws a bar on rank 0
    only (``None``: unless ``$LIFT_PROGRESS`` is ``0``). Returns the folders this process wrote; all
    ranks wait for each other before returning, so every memory is saved when it returns.
    """
    from lift_integrations.distributed import barrier, current, deal_by_length
    from lift_integrations.memory import check_save_target, save_or_rescue
    from lift_integrations.validation import show_progress_setting

    names = [_check_name(name) for name in documents]
    if len(set(names)) != len(names):
        raise ValueError("memory names must be unique")
    if context is None:
        context = current()
    rank, world_size = (context.rank, context.world_size) if context is not None else (0, 1)
    root = Path(output_dir)
    # Checked here too: a bad entry fails on every rank before any training, not on one rank mid-run.
    sizes = [entry_characters(documents[name]) for name in names]
    mine = [names[index] for index in deal_by_length(sizes, world_size)[rank]]
    for name in mine:  # refuse now, not after hours of training, a folder the save would refuse
        check_save_target(root / name)
    written: dict[str, Path] = {}

    def report(progress: AbsorbProgress) -> None:
        if callback is not None:
            callback(mine[progress.memory], progress)

    memories = (
        lift.absorb_many(
            [documents[name] for name in mine],
            config=config,
            generator=generator,
            show_progress=show_progress_setting(show_progress) and rank == 0,
            callback=report,
        )
        if mine
        else []
    )
    try:
        for name, memory in zip(mine, memories, strict=True):
            written[name] = save_or_rescue(memory, root / name)
    finally:
        for memory in memories:
            lift.release(memory)
    if context is not None:
        barrier(context)
    return written


def entry_characters(entry: Any) -> int:
    """What :func:`absorb_each` deals an entry by: the characters of its documents, titles included."""
    from lift_integrations.documents import normalize_documents

    return sum(len(document.title) + len(document.text) for document in normalize_documents(entry))


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"memory names must be non-empty folder names without slashes, got {name!r}")
    return name


def _report(quiet: bool, path: Path, memory: Any) -> None:
    if quiet:
        return
    stats = memory.stats
    summary = {
        "memory": str(path),
        "documents": len(memory.documents),
        "steps": stats.get("steps"),
        "final_loss": stats.get("final_loss"),
        "seconds": stats.get("seconds"),
        "processes": stats.get("processes", 1),
    }
    _print_line(summary)


def _print_line(record: dict[str, Any]) -> None:
    """One JSON line in a single write: under torchrun every process shares the same stdout, and
    ``print`` writes the text and the newline separately, so lines of two processes could merge."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
