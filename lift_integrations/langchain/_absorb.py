"""Absorbing documents from LangChain: argument checks, the absorption's settings, and its events.

Progress is reported as LangChain custom events inside a ``lift_absorb`` run, so handlers passed in
``callbacks``/``config`` (or inherited from an enclosing runnable) receive them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import Callbacks, adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables import RunnableConfig, RunnableLambda

from lift_integrations.langchain._documents import to_core_documents, to_langchain_documents
from lift_integrations.microbatch import run_off_loop
from lift_integrations.validation import check_bool

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.config import LIFTConfig
    from lift_integrations.model import LIFTModel

Work = Callable[[Callable[["AbsorbProgress"], None]], dict[str, Any]]
"""An absorption to run: called with the progress callback, returns what the end event reports."""

EVENT_START = "lift_absorb_start"
EVENT_PROGRESS = "lift_absorb_progress"
EVENT_END = "lift_absorb_end"
EVENT_TIMEOUT_S = 60.0
"""How long a training thread waits for the event loop to take a progress event (a stopped loop must not
hang training)."""


def check_absorb_args(
    lift_config: Any, overrides: Mapping[str, Any], config: Any, extend: Any, show_progress: Any
) -> None:
    """Refuse bad :meth:`LIFTChatModel.absorb` arguments before any event, loading or training. ``config`` is
    LangChain's ``RunnableConfig``, an easy slot to put a ``LIFTConfig`` in by mistake."""
    from lift_integrations.config import LIFTConfig

    if isinstance(config, LIFTConfig):
        raise TypeError(
            "config= is LangChain's RunnableConfig (callbacks, tags, ...); pass the LIFTConfig as "
            "lift_config="
        )
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a RunnableConfig (a dict) or None, got {type(config).__name__}")
    if lift_config is not None and not isinstance(lift_config, LIFTConfig):
        raise TypeError(f"lift_config must be a LIFTConfig or None, got {type(lift_config).__name__}")
    check_bool(extend, "extend")
    check_bool(show_progress, "show_progress", optional=True)
    unknown = sorted(set(overrides) - set(LIFTConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(
            f"unknown LIFTConfig fields: {unknown} (absorb() passes its other keyword arguments to "
            "LIFTConfig)"
        )
    if lift_config is not None:
        (dataclasses.replace(lift_config, **overrides) if overrides else lift_config).validate()
    else:  # every device's preset is fast() with other QA counts, which no cross-field check involves
        LIFTConfig.fast(**overrides)


def absorb_config(
    lift: LIFTModel, lift_config: LIFTConfig | None, overrides: Mapping[str, Any]
) -> LIFTConfig:
    """``lift_config`` (default: the device's preset) with ``overrides`` applied."""
    from lift_integrations.config import LIFTConfig

    if lift_config is None:
        return LIFTConfig.for_device(lift.device.type, **overrides)
    if not isinstance(lift_config, LIFTConfig):
        raise TypeError(f"lift_config must be a LIFTConfig, got {type(lift_config).__name__}")
    return dataclasses.replace(lift_config, **overrides) if overrides else lift_config


def run_config(config: RunnableConfig | None, callbacks: Callbacks) -> RunnableConfig:
    """The ``lift_absorb`` run's config: the caller's, with ``callbacks`` added."""
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    if callbacks is not None:
        merged["callbacks"] = callbacks
    return merged


def absorb_inputs(documents: Any, model_name: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The documents as core ``(title, text)`` pairs, and the summary the start event reports."""
    pairs = to_core_documents(to_langchain_documents(documents))
    summary = {"num_documents": len(pairs), "titles": [title for title, _ in pairs], "model_name": model_name}
    return pairs, summary


def run_absorb(
    summary: dict[str, Any], work: Work, config: RunnableConfig | None, callbacks: Callbacks
) -> dict[str, Any]:
    """``work`` inside a ``lift_absorb`` run: the start event, a progress event per optimizer step, the
    end event with what ``work`` returns."""

    def run(_: Any, config: RunnableConfig) -> dict[str, Any]:
        dispatch_custom_event(EVENT_START, summary, config=config)

        def on_progress(report: AbsorbProgress) -> None:
            dispatch_custom_event(EVENT_PROGRESS, report.to_dict(), config=config)

        info = work(on_progress)
        dispatch_custom_event(EVENT_END, info, config=config)
        return info

    return RunnableLambda(run, name="lift_absorb").invoke(summary, run_config(config, callbacks))


async def arun_absorb(
    summary: dict[str, Any], work: Work, config: RunnableConfig | None, callbacks: Callbacks
) -> dict[str, Any]:
    """:func:`run_absorb` without blocking the event loop: ``work`` runs in a worker thread."""

    async def run(_: Any, config: RunnableConfig) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await adispatch_custom_event(EVENT_START, summary, config=config)

        def on_progress(report: AbsorbProgress) -> None:
            # Called in the training thread: hand the event to the loop and wait, so events keep order.
            # The timeout only guards against a loop that stopped running: training must not hang.
            future = asyncio.run_coroutine_threadsafe(
                adispatch_custom_event(EVENT_PROGRESS, report.to_dict(), config=config), loop
            )
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(timeout=EVENT_TIMEOUT_S)

        info = await run_off_loop(work, on_progress)
        await adispatch_custom_event(EVENT_END, info, config=config)
        return info

    return await RunnableLambda(run, name="lift_absorb").ainvoke(summary, run_config(config, callbacks))
