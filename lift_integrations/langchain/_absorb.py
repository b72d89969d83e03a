"""Absorbing documents from LangChain: argument checks, the absorption's settings, and its events.

Progress is reported as LangChain custom events inside a ``lift_absorb`` run, so handlers passed in
``callbacks``/``config`` (or inherited from an enclosing runnable) receive them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import Callbacks
from langchain_core.runnables import RunnableConfig

from lift_integrations.validation import check_bool

if TYPE_CHECKING:
    from lift_integrations.config import LIFTConfig
    from lift_integrations.model import LIFTModel

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
