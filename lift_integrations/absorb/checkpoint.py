"""Resumable checkpoints of an absorption: what is saved, how it is verified, and what it is keyed by.

A checkpoint resumes only the very training it was made for (:func:`checkpoint_key` names it by the
library version, samples, settings, base model, adapter and starting memory), and only when every file
still matches the hash recorded when it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lift_integrations.absorb.plan import SamplePlan
from lift_integrations.absorb.samples import TrainingSample
from lift_integrations.config import LIFTConfig
from lift_integrations.distributed import DistributedContext, barrier, check_same_absorption

CHECKPOINT_FORMAT = "lift-absorb-checkpoint"
CHECKPOINT_VERSION = 2
_PARAMS_FILE = "params.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"
_STEP_PREFIX = "step-"


class CheckpointError(ValueError):
    """A checkpoint is damaged or belongs to another absorption (it is then skipped, never half-used)."""


def samples_digest(stages: Sequence[Sequence[TrainingSample]], epochs: Sequence[int]) -> str:
    """SHA-256 of every training sample and the epoch plan: a checkpoint resumes only the same training."""
    digest = hashlib.sha256(json.dumps([CHECKPOINT_VERSION, list(epochs)]).encode())
    for samples in stages:
        digest.update(b"stage")
        for sample in samples:
            digest.update(sample.kind.encode())
            digest.update(array("i", sample.input_ids).tobytes())
            digest.update(b"|")
            digest.update(array("i", sample.labels).tobytes())
    return digest.hexdigest()


def checkpoint_key(
    config: LIFTConfig, digest: str, base: tuple[str, str, dict[str, Any]], into_id: str | None
) -> str:
    """Names an absorption's checkpoints: the same library version, samples (``digest``, from
    :func:`samples_digest`), settings, base model and adapter (``base``: the model's fingerprint, the
    adapter kind and its settings) and starting memory give the same key, so a checkpoint only resumes
    its own training."""
    from lift_integrations import __version__

    settings = config.to_dict()
    for name in ("checkpoint_dir", "checkpoint_every"):
        settings.pop(name, None)
    fingerprint, adapter_kind, adapter_settings = base
    description = [
        __version__,  # another version may plan steps differently: never resume across versions
        fingerprint,
        adapter_kind,
        adapter_settings,
        settings,
        into_id,
        digest,
    ]
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:32]


def open_checkpoints(
    plan: SamplePlan,
    config: LIFTConfig,
    base: tuple[str, str, dict[str, Any]],
    into_id: str | None,
    *,
    distributed: DistributedContext | None,
    resume: bool,
) -> CheckpointStore | None:
    """The checkpoints of the absorption of ``plan`` (``None`` without ``config.checkpoint_dir``), keyed
    by :func:`checkpoint_key`; ``resume=False`` deletes the ones found first. Under ``distributed``,
    every rank must first be found to plan the same training (same samples and key)."""
    if distributed is None and config.checkpoint_dir is None:
        return None
    digest = samples_digest(plan.stages, plan.epochs)
    key = checkpoint_key(config, digest, base, into_id)
    if distributed is not None:
        check_same_absorption(digest, key)
    if config.checkpoint_dir is None:
        return None
    store = CheckpointStore(config.checkpoint_dir, key, config.checkpoint_every)
    if not resume and (distributed is None or distributed.is_main):
        store.clear()
    if not resume and distributed is not None:
        barrier(distributed)  # no rank may find a checkpoint that rank 0 is deleting
    return store


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint restores besides the tensors: counters, losses so far and the shuffle state."""

    step: int
    tokens: int
    tokens_computed: int
    sum_sq: int
    losses: list[float]
    elapsed_s: float
    rng_state: dict[str, Any]
    params_sha256: str = ""
    """SHA-256 of the checkpoint's parameters file: ranks resume only from the very same checkpoint."""

    def check_rng(self, rng: np.random.Generator) -> None:
        """The replayed shuffles must reach the saved state; anything else means a different plan."""
        if _jsonable(rng.bit_generator.state) != self.rng_state:
            raise CheckpointError("the replayed shuffle does not match the checkpoint's; not resuming")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


class CheckpointStore:
    """Resumable training state of one absorption, in its own folder.

    Each checkpoint is a folder ``step-NNNNNNNN`` holding the parameters and the optimizer's tensors as
    safetensors, and counters, losses, optimizer scalars and the shuffle state as JSON (nothing is ever
    pickled). It is written in a temporary sibling and renamed into place, so a kill at any moment
    leaves the previous checkpoint whole; older ones are deleted only after the new one is in place.
    A checkpoint is used only if every file matches the SHA-256 its ``state.json`` records and it was
    made for the same ``key`` (documents, samples, settings, model and adapter).
    """

    def __init__(self, folder: str | os.PathLike[str], key: str, every: int) -> None:
        if not isinstance(key, str) or not key.isalnum():
            raise ValueError(f"a checkpoint key must be alphanumeric, got {key!r}")
        self.root = Path(folder).expanduser().resolve()
        self.folder = self.root / key
        self.key = key
        self.every = every

    def _checkpoints(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [
            p
            for p in self.folder.iterdir()
            if p.name.startswith(_STEP_PREFIX)
            and p.is_dir()
            and not p.is_symlink()
            and p.name[len(_STEP_PREFIX) :].isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX) :]), reverse=True)

    @property
    def latest_step(self) -> int | None:
        """Step of the newest checkpoint folder (not yet verified), ``None`` when there is none."""
        found = self._checkpoints()
        return int(found[0].name[len(_STEP_PREFIX) :]) if found else None

    def save(
        self,
        *,
        step: int,
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        progress: dict[str, Any],
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and delete the older ones."""
        from safetensors.torch import save_file

        from lift_integrations._fs import fsync_dir, sha256_file

        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        final = self.folder / f"{_STEP_PREFIX}{step:08d}"
        try:
            params = {f"param.{i}": p.detach().to("cpu").contiguous() for i, p in enumerate(parameters)}
            state = optimizer.state_dict()
            tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
            if params and next(iter(params.values())).device.type == "cuda":  # pragma: no cover - GPU only
                tensors["rng.cuda"] = torch.cuda.get_rng_state(parameters[0].device)
            scalars: dict[str, dict[str, Any]] = {}
            for index, entry in state["state"].items():
                for name, value in entry.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
                    else:
                        scalars.setdefault(str(index), {})[name] = value
            groups = [
                {k: v for k, v in group.items() if k != "params" and _is_scalar(v)}
                for group in state["param_groups"]
            ]
            save_file(params, str(staging / _PARAMS_FILE))
            save_file(tensors, str(staging / _OPTIMIZER_FILE))
            record = {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_VERSION,
                "key": self.key,
                "step": step,
                "tokens": progress["tokens"],
                "tokens_computed": progress["tokens_computed"],
                "sum_sq": progress["sum_sq"],
                "losses": list(progress["losses"]),
                "elapsed_s": progress["elapsed_s"],
                "rng": _jsonable(rng.bit_generator.state),
                "optimizer_scalars": scalars,
                "param_groups": groups,
                "files": {name: sha256_file(staging / name) for name in (_PARAMS_FILE, _OPTIMIZER_FILE)},
            }
            (staging / _STATE_FILE).write_text(json.dumps(record), encoding="utf-8")
            for name in (_PARAMS_FILE, _OPTIMIZER_FILE, _STATE_FILE):
                with (staging / name).open("rb") as handle:
                    os.fsync(handle.fileno())
            fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            fsync_dir(self.folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        for other in self.folder.iterdir():
            if other != final and (other.name.startswith(_STEP_PREFIX) or other.name.startswith(".tmp-")):
                shutil.rmtree(other, ignore_errors=True)
        return final

    def restore(
        self, parameters: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer, total_steps: int
    ) -> ResumeState | None:
        """Load the newest valid checkpoint into ``parameters`` and ``optimizer``; ``None`` if none is.

        A damaged or foreign checkpoint is skipped with a warning (the next older one is tried): losing a
        checkpoint costs only the time to redo its steps, never a wrong memory.
        """
        for folder in self._checkpoints():
            try:
                loaded = self._read(folder, parameters, optimizer, total_steps)
            except (CheckpointError, OSError) as error:
                warnings.warn(f"ignoring checkpoint {folder}: {error}", RuntimeWarning, stacklevel=3)
                continue
            params, optimizer_state, resume, rng_tensors = loaded
            with torch.no_grad():
                for param, value in zip(parameters, params, strict=True):
                    param.copy_(value.to(param.device))
            optimizer.load_state_dict(optimizer_state)
            torch.set_rng_state(rng_tensors["rng.torch"])
            if "rng.cuda" in rng_tensors and parameters[0].device.type == "cuda":  # pragma: no cover
                torch.cuda.set_rng_state(rng_tensors["rng.cuda"], parameters[0].device)
            return resume
        return None

    def _read(
        self,
        folder: Path,
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        total_steps: int,
    ) -> tuple[list[torch.Tensor], dict[str, Any], ResumeState, dict[str, torch.Tensor]]:
        """Everything a checkpoint holds, verified; nothing is applied until all of it has passed."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from lift_integrations._fs import sha256_file

        def require(condition: bool, message: str) -> None:
            if not condition:
                raise CheckpointError(message)

        paths = {name: folder / name for name in (_PARAMS_FILE, _OPTIMIZER_FILE, _STATE_FILE)}
        for name, path in paths.items():
            require(path.is_file() and not path.is_symlink(), f"{name} is missing")
        try:
            record = json.loads(paths[_STATE_FILE].read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{_STATE_FILE} is not valid JSON ({error})") from None
        require(
            isinstance(record, dict)
            and record.get("format") == CHECKPOINT_FORMAT
            and record.get("format_version") == CHECKPOINT_VERSION,
            "unknown checkpoint format",
        )
        require(record.get("key") == self.key, "made for another absorption")
        step = record.get("step")
        require(_is_count(step) and 0 < step < total_steps, f"step {step!r} is out of range")
        require(folder.name == f"{_STEP_PREFIX}{step:08d}", "folder name and step disagree")
        files = record.get("files")
        for name in (_PARAMS_FILE, _OPTIMIZER_FILE):
            require(
                isinstance(files, dict) and files.get(name) == sha256_file(paths[name]),
                f"{name} does not match its hash",
            )
        try:
            params_file = load_file(str(paths[_PARAMS_FILE]), device="cpu")
            tensors = load_file(str(paths[_OPTIMIZER_FILE]), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"tensors cannot be read ({error})") from None
        require(set(params_file) == {f"param.{i}" for i in range(len(parameters))}, "parameter names differ")
        params = []
        for index, param in enumerate(parameters):
            value = params_file[f"param.{index}"]
            require(value.shape == param.shape and value.dtype == param.dtype, f"parameter {index} differs")
            params.append(value)
        require(isinstance(tensors.get("rng.torch"), torch.Tensor), "the random state is missing")
        template = optimizer.state_dict()
        scalars = record.get("optimizer_scalars")
        groups = record.get("param_groups")
        require(
            isinstance(scalars, dict)
            and isinstance(groups, list)
            and len(groups) == len(template["param_groups"]),
            "optimizer state is malformed",
        )
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if not name.startswith("state."):
                continue
            index_text, _, key = name[len("state.") :].partition(".")
            require(
                index_text.isdigit() and int(index_text) < len(parameters) and key != "",
                f"unexpected tensor {name!r}",
            )
            state.setdefault(int(index_text), {})[key] = value
        for index_text, entry in scalars.items():
            require(
                index_text.isdigit()
                and int(index_text) < len(parameters)
                and isinstance(entry, dict)
                and all(_is_scalar(v) for v in entry.values()),
                "optimizer scalars are malformed",
            )
            state.setdefault(int(index_text), {}).update(entry)
        merged_groups = []
        for saved, current in zip(groups, template["param_groups"], strict=True):
            require(
                isinstance(saved, dict) and all(_is_scalar(v) for v in saved.values()),
                "optimizer groups are malformed",
            )
            merged_groups.append({**current, **{k: v for k, v in saved.items() if k in current}})
        losses = record.get("losses")
        require(
            isinstance(losses, list)
            and len(losses) == step
            and all(isinstance(x, (int, float)) for x in losses),
            "losses are malformed",
        )
        require(
            _is_count(record.get("tokens"))
            and _is_count(record.get("tokens_computed"))
            and _is_count(record.get("sum_sq"))
            and isinstance(record.get("elapsed_s"), (int, float))
            and isinstance(record.get("rng"), dict),
            "counters are malformed",
        )
        resume = ResumeState(
            step=step,
            tokens=record["tokens"],
            tokens_computed=record["tokens_computed"],
            sum_sq=record["sum_sq"],
            losses=losses,
            elapsed_s=float(record["elapsed_s"]),
            rng_state=record["rng"],
            params_sha256=files[_PARAMS_FILE],
        )
        rng_tensors = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        return params, {"state": state, "param_groups": merged_groups}, resume, rng_tensors

    def clear(self) -> None:
        """Delete this absorption's checkpoints (done once it has finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float, bool, str)))
