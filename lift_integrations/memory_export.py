"""What a saved memory holds for other tools: PEFT's files for a LoRA memory, and a model card.

Both are derived from the memory's manifest and tensors at save time and never read back by this
library (:func:`~lift_integrations.memory_validation.read_memory` reads only the memory's own files).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lift_integrations.loading import DEFAULT_MODEL_NAME
from lift_integrations.memory_validation import PEFT_CONFIG_FILE, PEFT_TENSORS_FILE

if TYPE_CHECKING:
    import torch

PEFT_PREFIX = "base_model.model."
"""What ``PeftModel`` puts before a module's name: a LoRA memory's tensors are named by the base model's
module paths, PEFT's by the same paths inside ``PeftModel(base_model=LoraModel(model=...))``."""
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
MAX_CARD_TITLES = 200
"""A card lists at most this many document titles (and how many more there are)."""


def peft_adapter(
    adapter_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], base_model_name: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` contents for a LoRA memory.

    Every setting of :class:`~lift_integrations.adapters.lora.LoRAConfig` has a PEFT field of the same
    meaning (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, a name list or a regular
    expression as in PEFT), and LIFT injects its adapters with PEFT's ``LoraConfig`` defaults for the
    rest, written out here so a later PEFT default cannot change how the file is read.
    """
    strange = [name for name in tensors if not name.endswith(LORA_SUFFIXES)]
    if strange:
        raise ValueError(f"these tensors are not LoRA weights PEFT can load: {sorted(strange)[:3]}")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": adapter_config["r"],
        "lora_alpha": adapter_config["alpha"],
        "lora_dropout": adapter_config.get("dropout", 0.0),
        "target_modules": adapter_config["target_modules"],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    return config, {PEFT_PREFIX + name: tensor for name, tensor in tensors.items()}


def model_card(manifest: Mapping[str, Any], *, name: str | None = None) -> str:
    """A Hugging Face model card (``README.md``) for the memory described by ``manifest``: base model,
    documents' titles, the recipe (absorption and adapter configs), and how to load it; ``name`` is the
    hub id or folder the snippets load it from."""
    from huggingface_hub import ModelCard, ModelCardData

    from lift_integrations._hub import looks_like_hub_id

    base = manifest["base_model"]["name"]
    kind = manifest["adapter"]["kind"]
    titles = [d["title"] for d in manifest["documents"]]
    lora = kind == "lora"
    data = ModelCardData(
        base_model=base if looks_like_hub_id(base) else None,
        library_name="lift-integrations",
        pipeline_tag="text-generation",
        tags=["lift", "lift-integrations", "long-input-fine-tuning", "memory", kind.replace("_", "-")]
        + (["peft", "lora"] if lora else []),
        lift_memory={"id": manifest["id"], "adapter": kind, "documents": len(titles)},
    )
    where = name or "path/to/this/memory"
    embedded = base == DEFAULT_MODEL_NAME  # the package's own quantised SmolLM2, loaded by passing None
    base_arg = "None" if embedded else repr(base)
    listed = "\n".join(f"- {_markdown(t) or '(untitled)'}" for t in titles[:MAX_CARD_TITLES])
    if len(titles) > MAX_CARD_TITLES:
        listed += f"\n- ... and {len(titles) - MAX_CARD_TITLES} more (all are in `documents.json`)"
    parts = [
        f"# LIFT memory: {_markdown(titles[0]) if len(titles) == 1 else f'{len(titles)} documents'}",
        "",
        f"Documents absorbed into a {_ADAPTER_NAMES.get(kind, kind)} adapter of **{_markdown(base)}** by "
        "[lift-integrations](https://github.com/lift-integrations/lift-integrations) (LIFT: long-input "
        "fine-tuning). The model answers about them from its weights, with no retrieval at question time.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` (weights fingerprint `{manifest['base_model']['fingerprint'][:16]}`) |",
        f"| adapter | `{kind}`, {manifest['num_parameters']:,} parameters |",
        f"| memory id | `{manifest['id']}` |",
        f"| created | {manifest.get('created_at') or 'unknown'} |",
        "",
        f"## Documents ({len(titles)})",
        "",
        listed,
        "",
        "## Recipe",
        "",
        "The absorption settings (`LIFTConfig`) and the adapter's, as saved in `manifest.json`:",
        "",
        "```json",
        json.dumps({"config": manifest["config"], "adapter": manifest["adapter"]["config"]}, indent=2),
        "```",
        "",
        "## Use it with lift-integrations",
        "",
        "```python",
        "from lift_integrations import LIFTModel, Memory",
        "",
        f"lift = LIFTModel.from_pretrained({base_arg}, adapter={kind!r})"
        + ("  # the embedded SmolLM2" if embedded else ""),
        f"memory = Memory.from_pretrained({where!r})",
        'print(lift.generate("Your question about the documents", memory=memory).text)',
        "```",
        "",
        "The memory only runs on the base model it was made for: another model is refused.",
    ]
    if lora:
        parts += [
            "",
            "## Use it with PEFT",
            "",
            f"The folder is also a PEFT LoRA adapter (`{PEFT_CONFIG_FILE}`, `{PEFT_TENSORS_FILE}`):",
            "",
            "```python",
            "from peft import PeftModel",
            *(
                [
                    "from lift_integrations import LIFTModel",
                    "",
                    "base = LIFTModel.from_pretrained(None, adapter='lora').model  # the embedded SmolLM2",
                ]
                if embedded
                else [
                    "from transformers import AutoModelForCausalLM",
                    "",
                    f"base = AutoModelForCausalLM.from_pretrained({base!r})",
                ]
            ),
            f"model = PeftModel.from_pretrained(base, {where!r})",
            "```",
            "",
            "PEFT runs the adapter only: the same logits as lift-integrations for the same tokens, without "
            "the prompt format lift-integrations builds around a question.",
        ]
    body = "\n".join(parts) + "\n"
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


_ADAPTER_NAMES = {"gated_memory": "Gated Memory", "lora": "LoRA"}


def _markdown(text: str) -> str:
    """``text`` on one line with Markdown's special characters escaped (a title cannot add a heading,
    a link or HTML to the card)."""
    flat = " ".join(text.split())
    return "".join(f"\\{c}" if c in "\\`*_{}[]()<>#+!|" else c for c in flat)


def bank_card(
    memories: Mapping[str, list[str]], *, base_model: str | None, adapter: str | None, name: str | None = None
) -> str:
    """A model card (``README.md``) for a memory bank: its memories by name with their documents' titles,
    the base model, and how to load it; ``name`` is the hub id or folder the snippet loads it from."""
    from huggingface_hub import ModelCard, ModelCardData

    from lift_integrations._hub import looks_like_hub_id

    data = ModelCardData(
        base_model=base_model if base_model and looks_like_hub_id(base_model) else None,
        library_name="lift-integrations",
        pipeline_tag="text-generation",
        tags=["lift", "lift-integrations", "long-input-fine-tuning", "memory-bank"],
        lift_memory_bank={"memories": len(memories)},
    )
    rows = [
        f"| `{memory}` | {'; '.join(_markdown(t) for t in titles[:5])}"
        + (f" (+{len(titles) - 5} more)" if len(titles) > 5 else "")
        + " |"
        for memory, titles in list(memories.items())[:MAX_CARD_TITLES]
    ]
    if len(memories) > MAX_CARD_TITLES:
        rows.append(f"| ... | {len(memories) - MAX_CARD_TITLES} more memories (all are in `bank.json`) |")
    where = name or "path/to/this/bank"
    body = "\n".join(
        [
            f"# LIFT memory bank: {len(memories)} memories",
            "",
            f"One LIFT memory per document set, absorbed into {_ADAPTER_NAMES.get(adapter or '', 'adapter')} "
            f"weights of **{_markdown(base_model or 'unknown')}** by "
            "[lift-integrations](https://github.com/lift-integrations/lift-integrations); a router picks "
            "the memory a question is about. Each memory's folder has its own card with its recipe.",
            "",
            "| memory | documents |",
            "|---|---|",
            *rows,
            "",
            "## Use it with lift-integrations",
            "",
            "```python",
            "from lift_integrations import LIFTModel, MemoryBank",
            "",
            f"lift = LIFTModel.from_pretrained({None if base_model == DEFAULT_MODEL_NAME else base_model!r}, "
            f"adapter={adapter!r})",
            f"bank = MemoryBank.from_pretrained({where!r})",
            'question = "Your question"',
            "name = bank.router().route(question)  # None: no memory is about it",
            "print(lift.generate(question, memory=bank[name] if name else None).text)",
            "```",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n"))
