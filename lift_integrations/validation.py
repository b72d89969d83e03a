"""Argument checks shared by every entry point, so that a bad value fails at once, named.

The core :class:`~lift_integrations.model.LIFTModel` runs these before any work (tokenizing, taking the
model lock, running the model), so the LangChain and LlamaIndex bindings inherit the same checks and
messages; a binding calls them itself only to fail before its own work (events, routing, loading) or to
name its own argument (``max_tokens``). Wrong types raise ``TypeError``, values out of range
``ValueError``; each message names the argument and what it accepts. Bools are refused where a number is
expected (``True`` is an ``int`` to Python, never a meant temperature), and so are NaN and infinities.

Only the standard library is imported here: the bindings call these at construction, before torch loads.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FLOAT16_MAX",
    "GenerationArgs",
    "check_bool",
    "check_context",
    "check_float",
    "check_generation_args",
    "check_int",
    "check_max_new_tokens",
    "check_prompt",
    "check_stop",
    "check_temperature",
    "check_text",
    "check_top_p",
]


FLOAT16_MAX = 65504.0
"""The largest float16 value. Adapter settings and weights are applied in the model's dtype, so a value
beyond it overflows in a model run in float16; such values come from damage, never from training."""


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``numbers.Real`` covers numpy's floats and ints, not its bools)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and _is_number(value)


def check_text(value: Any, name: str) -> str:
    """``value`` if it is a str that can be encoded (no unpaired surrogate, which tokenizers reject with
    an unrelated ``TypeError``); bytes are refused rather than decoded with a guessed encoding."""
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} is bytes; decode it to str first (for example data.decode('utf-8'))")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name} is not valid Unicode (unpaired surrogate at position {error.start})"
        ) from None
    return value


def check_bool(value: Any, name: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is ``True`` or ``False`` (or ``None`` when ``optional``): a string such as
    ``"no"`` would otherwise count as true."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        accepted = "True, False or None" if optional else "True or False"
        raise TypeError(f"{name} must be {accepted}, got {value!r}")
    return value


PROGRESS_ENV = "LIFT_PROGRESS"
"""Set to ``0`` to turn off the progress bars every absorption draws by default."""


def show_progress_setting(value: Any, name: str = "show_progress") -> bool:
    """``value`` checked; ``None`` (the default of every entry point) draws the bar unless ``$LIFT_PROGRESS``
    is ``0``: an absorption takes minutes on a CPU, and minutes of silence look like a hang."""
    if check_bool(value, name, optional=True) is None:
        return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}
    return bool(value)


def check_int(value: Any, name: str, *, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool, not a float) of at least ``minimum``."""
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> float:
    """``value`` as a finite ``float`` inside the given bounds (bools, NaN and infinities refused)."""
    bounds = " and ".join(
        f"{op} {bound:g}"
        for op, bound in ((">", above), (">=", at_least), ("<", below), ("<=", at_most))
        if bound is not None
    )
    accepted = f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}"
    if not _is_number(value):
        raise TypeError(accepted)
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(accepted) from None
    if (
        not math.isfinite(number)
        or (above is not None and not number > above)
        or (at_least is not None and not number >= at_least)
        or (below is not None and not number < below)
        or (at_most is not None and not number <= at_most)
    ):
        raise ValueError(accepted)
    return number


def check_max_new_tokens(
    value: Any, name: str = "max_new_tokens", *, context_window: int | None = None
) -> int:
    """At least one token, and fewer than ``context_window`` (the prompt needs room too)."""
    tokens = check_int(value, name, minimum=1)
    if context_window is not None and tokens >= context_window:
        raise ValueError(
            f"{name} must be less than the model's context window ({context_window} tokens), "
            f"which also holds the prompt; got {tokens}"
        )
    return tokens


def check_temperature(value: Any, name: str = "temperature") -> float:
    """A number in [0, 65504]; 0 decodes greedily. The logits are divided by it in the model's dtype, where
    a larger one can overflow (3.4e38 is infinite in float32), and sampling is uniform long before it."""
    return check_float(value, name, at_least=0.0, at_most=FLOAT16_MAX)


def check_top_p(value: Any, name: str = "top_p") -> float | None:
    """``None`` (no nucleus sampling) or a number in (0, 1]; used only when sampling (temperature > 0)."""
    if value is None:
        return None
    accepted = f"{name} must be a number in (0, 1] or None, got {value!r}"
    if not _is_number(value):
        raise TypeError(accepted)
    top_p = float(value)
    if not 0 < top_p <= 1:  # NaN fails this too
        raise ValueError(accepted)
    return top_p


def check_stop(value: Any, name: str = "stop") -> list[str]:
    """Stop strings as a list: ``None`` is none, and one string is one stop string (as in LangChain and
    Hugging Face), never a list of its characters."""
    if value is None:
        return []
    if isinstance(value, str):
        return [check_text(value, name)]
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    return [check_text(item, f"{name}[{index}]") for index, item in enumerate(value)]


@dataclass(frozen=True)
class GenerationArgs:
    """Checked generation settings, in the types the generator uses."""

    max_new_tokens: int
    temperature: float
    top_p: float | None
    stop: list[str]


def check_generation_args(
    *,
    max_new_tokens: Any,
    temperature: Any,
    top_p: Any,
    stop: Any,
    context_window: int | None = None,
) -> GenerationArgs:
    """Every generation setting checked (see the ``check_*`` functions), in one call."""
    return GenerationArgs(
        max_new_tokens=check_max_new_tokens(max_new_tokens, context_window=context_window),
        temperature=check_temperature(temperature),
        top_p=check_top_p(top_p),
        stop=check_stop(stop),
    )


_PROMPT_TYPES = "a str or a list of chat messages (dicts with 'role' and 'content', or (role, content) pairs)"


def check_prompt(prompt: Any, name: str = "prompt") -> None:
    """A prompt string or chat messages whose text can be tokenized; message structure and roles are
    checked where the messages are converted (:func:`lift_integrations.generation.to_messages`)."""
    if isinstance(prompt, str):
        check_text(prompt, name)
        if not prompt.strip():
            raise ValueError(f"the {name} is empty")
        return
    if isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"{name} must be text (str), not bytes; decode it first")
    if not isinstance(prompt, Sequence):
        raise TypeError(f"{name} must be {_PROMPT_TYPES}, got {type(prompt).__name__}")
    for index, message in enumerate(prompt):
        if isinstance(message, tuple) and len(message) == 2:
            content = message[1]
        elif isinstance(message, Mapping):
            content = message.get("content")
        else:
            raise TypeError(
                f"{name} message {index} must be a dict or a (role, content) pair, "
                f"got {type(message).__name__}"
            )
        if not isinstance(content, str):
            raise TypeError(f"{name} message {index}'s content must be a str, got {type(content).__name__}")
        check_text(content, f"{name} message {index}")


def check_context(context: Any, name: str = "context") -> str | list[str] | None:
    """``None``, ``"truncated"`` or a list of text chunks (hybrid mode), returned with an iterable of
    chunks turned into a list (so it can be read twice)."""
    if context is None or (isinstance(context, str) and context == "truncated"):
        return context
    accepted = f"{name} must be None, 'truncated' or a list of text chunks"
    if isinstance(context, str):
        raise ValueError(f"{accepted}, got {context!r}")
    if isinstance(context, (bytes, bytearray, Mapping)) or not isinstance(context, Iterable):
        raise TypeError(f"{accepted}, got {type(context).__name__}")
    return [check_text(chunk, f"{name}[{index}]") for index, chunk in enumerate(context)]
