"""Where the framework bindings get their weights: one loaded :class:`LIFTModel` per process and key.

LangChain and LlamaIndex build model objects freely (every ``with_config``, every pipeline, every test
fixture may construct one), so construction stays cheap and the base weights are shared: the first call
that needs a model loads it, and every later ``LIFTChatModel`` or ``LIFTLLM`` with the same
``(model, device, dtype)`` gets the same object. A name given to :func:`register_model` resolves to the
model registered under it, for both frameworks. Each binding object keeps its own memory and passes it
on every call, so sharing the weights never shares what one of them has absorbed.

Framework-free, and cheap to import: torch loads with the first model.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lift_integrations.model import LIFTModel

_Key = tuple[str | None, str | None, str | None]

_CACHE: dict[_Key, LIFTModel] = {}
_REGISTERED: dict[str, LIFTModel] = {}
_KEY_LOCKS: dict[_Key, threading.Lock] = {}
_GUARD = threading.Lock()


def is_lift_model(value: Any) -> bool:
    """Whether ``value`` is a :class:`LIFTModel`, without importing torch: an instance implies that the
    model module is loaded."""
    module = sys.modules.get("lift_integrations.model")
    return module is not None and isinstance(value, module.LIFTModel)


def _normalize(model: str | os.PathLike[str] | None) -> str | None:
    return None if model is None else os.fspath(model)


def register_model(name: str, lift_model: LIFTModel) -> None:
    """Make ``name`` resolve to an already built :class:`LIFTModel` (``LIFTChatModel(model=name)``,
    ``LIFTLLM(name)``).

    For models built in memory (tests, custom loading code), and for sharing one model between binding
    objects configured only by name (for example from a config file).
    """
    if not isinstance(name, str):
        raise TypeError(f"register_model() expects a str name, got {type(name).__name__}")
    if not is_lift_model(lift_model):
        raise TypeError(f"register_model() expects a LIFTModel, got {type(lift_model).__name__}")
    with _GUARD:
        _REGISTERED[name] = lift_model


def unregister_model(name: str) -> None:
    """Forget a name given to :func:`register_model`. A ``LIFTLLM`` keeps the model it has used; a
    ``LIFTChatModel`` looks its name up on every call."""
    with _GUARD:
        _REGISTERED.pop(name, None)


def is_loaded(
    model: str | os.PathLike[str] | None, device: str | None = None, dtype: str | None = None
) -> bool:
    """Whether :func:`shared_model` would return without loading anything."""
    name = _normalize(model)
    with _GUARD:
        return (name is not None and name in _REGISTERED) or (name, device, dtype) in _CACHE


def shared_model(
    model: str | os.PathLike[str] | None, device: str | None = None, dtype: str | None = None
) -> LIFTModel:
    """The :class:`LIFTModel` for ``model`` (a registered name, a hub id, a local path; ``None``: the
    embedded SmolLM2), loaded at most once per ``(model, device, dtype)``."""
    name = _normalize(model)
    key: _Key = (name, device, dtype)
    with _GUARD:
        if name is not None and name in _REGISTERED:
            return _REGISTERED[name]
        if key in _CACHE:
            return _CACHE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    # Loaded outside the guard, so that loading one model does not hold up users of another; the
    # per-key lock makes concurrent first calls load it once.
    with lock:
        with _GUARD:
            if key in _CACHE:
                return _CACHE[key]
        from lift_integrations.model import LIFTModel

        loaded = LIFTModel.from_pretrained(name, device=device, dtype=dtype)
        with _GUARD:
            _CACHE[key] = loaded
        return loaded


def clear_model_cache() -> None:
    """Drop the loaded models (not the registered ones), so their memory can be freed once no binding
    object holds them."""
    with _GUARD:
        _CACHE.clear()
        _KEY_LOCKS.clear()
