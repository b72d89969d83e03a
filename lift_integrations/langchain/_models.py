"""Where :class:`LIFTChatModel` instances get their weights: one loaded model per (model, device, dtype).

LangChain builds chat models freely (every ``with_config``, every test fixture, every agent step may
construct one), so construction must stay cheap and the base weights must be shared. The first call
that needs the model loads it; later instances with the same key get the same :class:`LIFTModel`.
Each chat model keeps its own memory and passes it explicitly on every call, so sharing the weights
never shares what an instance has absorbed.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lift_integrations.model import LIFTModel

_Key = tuple[str | None, str | None, str | None]

_CACHE: dict[_Key, LIFTModel] = {}
_REGISTERED: dict[str, LIFTModel] = {}
_KEY_LOCKS: dict[_Key, threading.Lock] = {}
_GUARD = threading.Lock()


def _normalize(model: str | os.PathLike[str] | None) -> str | None:
    return None if model is None else os.fspath(model)


def register_model(name: str, lift_model: LIFTModel) -> None:
    """Make ``LIFTChatModel(model=name)`` use an already built :class:`LIFTModel`.

    Useful for models built in memory (tests, custom loading code) and for sharing one model between
    chat models that are configured only by name (for example from a config file).
    """
    from lift_integrations.model import LIFTModel

    if not isinstance(lift_model, LIFTModel):
        raise TypeError(f"register_model() expects a LIFTModel, got {type(lift_model).__name__}")
    with _GUARD:
        _REGISTERED[name] = lift_model


def unregister_model(name: str) -> None:
    """Forget a name given to :func:`register_model` (chat models already built keep their model)."""
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
    """The :class:`LIFTModel` for ``model`` (``None``: the embedded SmolLM2), loaded at most once."""
    name = _normalize(model)
    key: _Key = (name, device, dtype)
    with _GUARD:
        if name is not None and name in _REGISTERED:
            return _REGISTERED[name]
        if key in _CACHE:
            return _CACHE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    # Load outside the global guard so that loading one model does not block users of another; the
    # per-key lock makes concurrent first calls (batch, abatch) load it once.
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
    """Drop the loaded models (not the registered ones), so their memory can be freed."""
    with _GUARD:
        _CACHE.clear()
        _KEY_LOCKS.clear()
