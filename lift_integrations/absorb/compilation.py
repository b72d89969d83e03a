"""Fusing training's many small kernels with ``torch.compile``.

A training step of a small model on long sequences spends much of its GPU time in element-wise kernels
that each read and write whole activations (norms, rotary embeddings, residual adds, casts, the MLP's
activation, Gated Memory's gate and mix), and, on short passes, in Python launching them. Compiling each
decoder layer whole fuses them into a few kernels per direction. Every decoder layer shares one compiled
function (compiled for any sequence length): the adapters' hooks keep per-layer state on per-layer
objects, so nothing in the traced code names a layer index.

A pass through the key/value cache (the shared-prefix path of sliding-window models) does name one: the
cache's per-layer entries would specialise the compiled layer to each layer in turn. PEFT's LoRA layers
name their memory (the adapter's name), so a compiled layer would compile again for every memory, and a
layer under gradient checkpointing refuses hooks that record state. Such training compiles the norms,
MLPs and Gated Memory module by module instead, and runs the attention code as it is
(:func:`compiles_whole_layers` decides).

Compiled methods are installed on the module instances only for as long as :func:`compiled_modules` is
entered (one optimizer step of an absorption), so generation and every other caller of the model run the
original code.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from lift_integrations.absorb.batching import caches_shared_prefixes
from lift_integrations.config import LIFTConfig
from lift_integrations.loading import cache_root

if TYPE_CHECKING:
    from lift_integrations.adapters.base import AdapterBackend

FUSED_CLASS_SUFFIXES: tuple[str, ...] = ("RMSNorm", "MLP")
"""Module classes whose ``forward`` is compiled, by the end of their name (every supported architecture
names its norms and feed-forward blocks so: ``LlamaRMSNorm``, ``Gemma3MLP``, ...)."""

LAYER_CLASS_SUFFIX = "DecoderLayer"
"""Whole decoder layers (``LlamaDecoderLayer``, ``Qwen3DecoderLayer``, ...), compiled when the training
passes use no key/value cache (see :func:`compiled_modules`)."""

DEFAULT_BACKEND = "inductor"
RECOMPILE_LIMIT = 64

_compiled: dict[tuple[type, str, str], Callable[..., Any]] = {}
logger = logging.getLogger(__name__)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir() -> Path:
    """Where compiled kernels outlive the process: inductor's FX-graph and AOT-autograd caches under the
    library's cache folder (``TORCHINDUCTOR_CACHE_DIR`` when set), so a machine compiles once, not every
    process (``lift-absorb --warmup`` fills it)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen and not _is_torch_default(chosen):
        return Path(chosen)
    return cache_root() / "torch-compile"


def _is_torch_default(folder: str) -> bool:
    """Whether ``folder`` is inductor's own default, a folder under the system's temporary one that a
    reboot may empty. Importing ``torch._dynamo`` writes it into ``TORCHINDUCTOR_CACHE_DIR``, so
    finding it there does not mean a user chose it."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(folder) == os.path.abspath(default_cache_dir())


def _use_persistent_cache() -> None:
    import torch

    folder = compile_cache_dir()
    os.environ[CACHE_ENV] = str(folder)
    torch._inductor.config.fx_graph_cache = True
    functorch_config = getattr(torch._functorch, "config", None)
    if functorch_config is not None and hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True
    logger.warning(
        "compiling the training step: the first absorption on this machine waits for it; "
        "the compiled kernels are cached in %s for later processes",
        folder,
    )


def compiles_whole_layers(model: nn.Module, backend: AdapterBackend, config: LIFTConfig) -> bool:
    """Whether ``config.compile`` compiles whole decoder layers rather than module by module: only for
    an adapter whose code looks the same in every layer and memory, without HF's gradient
    checkpointing (the adapter's hooks record state, which a compiled checkpoint refuses) and
    without passes through the key/value cache (per-layer state)."""
    return (
        backend.compiles_whole_layers
        and not config.gradient_checkpointing
        and not caches_shared_prefixes(model, config)
    )


def compiled_method_names(module: nn.Module, *, whole_layers: bool = False) -> tuple[str, ...]:
    """The methods of ``module`` worth compiling: with ``whole_layers``, ``forward`` of decoder layers
    only; else those its class lists in ``compiled_methods``, ``forward`` for norms and MLPs, else none."""
    if whole_layers:
        return ("forward",) if type(module).__name__.endswith(LAYER_CLASS_SUFFIX) else ()
    listed = getattr(type(module), "compiled_methods", None)
    if listed is not None:
        return tuple(listed)
    return ("forward",) if type(module).__name__.endswith(FUSED_CLASS_SUFFIXES) else ()


def _compiled_function(cls: type, name: str, backend: str) -> tuple[Callable[..., Any], bool]:
    """The compiled ``cls.name`` (made once per class) and whether it is a static method."""
    import torch

    static = isinstance(inspect.getattr_static(cls, name), staticmethod)
    key = (cls, name, backend)
    if not _compiled:
        _use_persistent_cache()
    if key not in _compiled:
        # One function serves every layer, so it sees more variants than a whole-model compile would
        # (the first layer's input needs no gradient, a shared prefix runs one row, ...); past the
        # limit it would silently run uncompiled.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _compiled[key] = torch.compile(getattr(cls, name), backend=backend, dynamic=True)
    return _compiled[key], static


@contextlib.contextmanager
def compiled_modules(
    modules: Iterable[nn.Module], backend: str | None = None, *, whole_layers: bool = False
) -> Iterator[int]:
    """Run the fusable methods of ``modules`` compiled while the context is entered; yields how many
    methods were replaced. Leaving it restores every module's own methods.

    ``whole_layers`` compiles each decoder layer whole (attention, rotary embedding, residual adds and
    the adapter's hooks included), which fuses more but needs passes without a key/value cache: a cache
    holds per-layer state that would specialise the compiled layer to one layer index. A model without
    classes named like decoder layers is compiled module by module.
    """
    backend = backend or DEFAULT_BACKEND
    modules = list(modules)
    if whole_layers and not any(compiled_method_names(m, whole_layers=True) for m in modules):
        whole_layers = False
    import torch._dynamo.config as dynamo_config
    import torch.fx.experimental._config as shape_config

    replaced: list[tuple[nn.Module, str]] = []
    # Without duck sizing, a pass whose length happens to equal a fixed size of the model (64 tokens, and
    # heads of 64) is not tied to it, which would compile that length apart from the others.
    no_duck_shapes = (
        shape_config.patch(use_duck_shape=False)  # type: ignore[attr-defined]
        if hasattr(shape_config, "use_duck_shape")
        else contextlib.nullcontext()
    )
    # A compiled function dynamic in its shapes also takes Python floats (a norm's epsilon, the gate's
    # scale) as inputs, 0-d float64 tensors on the CPU: converting them makes a C++ kernel in a GPU
    # graph, so the first compile in a process builds and probes a C++ toolchain. They never change.
    static_floats = (
        dynamo_config.patch(specialize_float=True)
        if hasattr(dynamo_config, "specialize_float")
        else contextlib.nullcontext()
    )
    with no_duck_shapes, static_floats:
        try:
            for module in modules:
                for name in compiled_method_names(module, whole_layers=whole_layers):
                    if name in module.__dict__:  # already replaced (a module reached twice, or nested use)
                        continue
                    function, static = _compiled_function(type(module), name, backend)
                    module.__dict__[name] = function if static else types.MethodType(function, module)
                    replaced.append((module, name))
            yield len(replaced)
        finally:
            for module, name in replaced:
                module.__dict__.pop(name, None)
