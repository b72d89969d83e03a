"""Save a LoRA memory the standard way, load it back with lift-integrations and with PEFT, and (with
--repo) push it to the Hugging Face Hub.

    python examples/share_memory.py                          # embedded SmolLM2 on the CPU, no network
    python examples/share_memory.py --repo you/quillon-memory  # also uploads it (needs `hf auth login`)

It prints the largest difference between the logits of the memory run by lift-integrations and by
``PeftModel.from_pretrained`` on the same tokens (the same adapter, so rounding only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

QUILLON = (
    "The Quillon Archive",
    "The Quillon Archive was founded in 1911 by the cartographer Edda Morrow in the port town of Vessick. "
    "It holds 40,000 hand-drawn sea charts. Its reading room opens only on Thursdays, and its charts are "
    "copied by hand, never photographed, under a rule Morrow wrote in her will.",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2)")
    parser.add_argument("--out", default="memories/quillon-lora", help="folder to save the memory to")
    parser.add_argument("--repo", default=None, help="hub repository to push the memory to (owner/name)")
    args = parser.parse_args()

    import torch
    from peft import PeftModel

    from lift_integrations import LIFTConfig, LIFTModel, Memory
    from lift_integrations.loading import load_model_and_tokenizer

    lift = LIFTModel.from_pretrained(args.model, device="cpu", dtype="float32", adapter="lora")
    memory = lift.absorb([QUILLON], config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=2))
    folder = memory.save_pretrained(args.out)  # manifest, tensors, documents, README.md, PEFT's files
    print(f"saved {memory} to {folder}: {sorted(p.name for p in Path(folder).iterdir())}")

    loaded = Memory.from_pretrained(folder)
    question = "Who founded the Quillon Archive?"
    print("lift-integrations:", lift.generate(question, memory=loaded, max_new_tokens=24).text)

    ids = lift.prompt_ids(question, memory=None)
    with lift.using(loaded), torch.no_grad():
        lift_logits = lift.logits(ids)
    base, _, _ = load_model_and_tokenizer(
        args.model, gguf_file=None, device=torch.device("cpu"), dtype=torch.float32
    )
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(base, str(folder))(input_ids=torch.tensor([ids])).logits
    print(
        f"largest |logit difference| lift-integrations vs PEFT: {(lift_logits - peft_logits).abs().max():.2e}"
    )

    if args.repo:
        commit = memory.push_to_hub(args.repo, private=True)
        print(f"pushed to {commit.commit_url}; load it with Memory.from_pretrained({args.repo!r})")


if __name__ == "__main__":
    main()
