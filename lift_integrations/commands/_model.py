"""The base-model arguments ``lift ask`` and ``lift serve`` share, checked before anything loads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lift_integrations.cli import ADAPTERS

if TYPE_CHECKING:
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="hub id, local folder or .gguf file of the base model (default: the embedded SmolLM2)",
    )
    parser.add_argument("--adapter", choices=ADAPTERS, default="gated_memory", help="the memories' adapter")
    parser.add_argument(
        "--device", default=None, help="where the model runs (default: CUDA if any, else CPU)"
    )
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: bf16 on GPU)")


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with status 2 on a ``--device`` or ``--dtype`` torch does not know, before loading."""
    import torch

    try:
        device = torch.device(args.device) if args.device is not None else torch.device("cpu")
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if args.dtype is not None:
        from lift_integrations.loading import resolve_dtype

        try:
            resolve_dtype(args.dtype, device)
        except ValueError as error:
            parser.error(f"--dtype: {error}")


def load_memory(parser: argparse.ArgumentParser, name_or_path: str, what: str) -> Memory:
    """A memory folder or hub id, read and verified; a clear argument error if it cannot be."""
    from lift_integrations.memory import Memory

    try:
        return Memory.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:  # missing, not a memory, tampered with
        parser.error(f"{what}: {error}")


def load_model(args: argparse.Namespace) -> LIFTModel:
    from lift_integrations.model import LIFTModel

    return LIFTModel.from_pretrained(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter)
