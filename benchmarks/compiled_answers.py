"""Does ``LIFTConfig(compile=True)`` absorb the memory that eager training absorbs?

Absorbs one document three times with the same settings and seed: twice eagerly (their difference is the
noise floor: GPU attention backward kernels are not bitwise deterministic) and once compiled. Reports, for
eager vs eager and eager vs compiled, the relative difference of the memories' parameters and how many
greedy answers to the document's questions are identical, plus each memory's token F1 against the gold
answers. Compiled training is "the same" when its differences are of the order of the noise floor.

    python benchmarks/compiled_answers.py --length 8000 --questions 40 --json docs/compiled_answers_h200.json

The document and questions are the SQuAD "Normans" article shipped in examples/data (CC BY-SA 4.0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from absorb_speed import ARTICLE, document_of


def relative_difference(a: dict, b: dict) -> float:
    """``||a - b|| / ||a||`` over all of a memory's tensors together."""
    import torch

    diff = sum(float(torch.sum((a[k].float() - b[k].float()) ** 2)) for k in a)
    norm = sum(float(torch.sum(a[k].float() ** 2)) for k in a)
    return (diff / norm) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or path (default: the embedded SmolLM2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--adapter", default="gated_memory", choices=["gated_memory", "lora"])
    parser.add_argument("--preset", default="paper", choices=["paper", "fast", "dense_qa"])
    parser.add_argument("--length", type=int, default=8000, help="document tokens")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    from lift_bench.squad import f1_score
    from lift_integrations import LIFTConfig, LIFTModel

    lift = LIFTModel.from_pretrained(args.model, device=args.device, adapter=args.adapter)
    text = document_of(lift.tokenizer, args.length)
    qas = [q for p in json.loads(ARTICLE.read_text()) for q in p["questions"]][: args.questions]
    prompts = [q["question"] for q in qas]

    runs: dict[str, dict] = {}
    for name, compile_ in (("eager", False), ("eager_again", False), ("compiled", True)):
        memory = lift.absorb(text, config=getattr(LIFTConfig, args.preset)(compile=compile_))
        answers = [
            r.text
            for r in lift.generate_batch(
                prompts, memory=memory, max_new_tokens=args.max_new_tokens, batch_size=64
            )
        ]
        runs[name] = {
            "tensors": memory.tensors,
            "answers": answers,
            "final_loss": memory.stats["final_loss"],
            "train_s": memory.stats["seconds"],
            "f1": round(100 * mean(f1_score(a, q["answer"]) for a, q in zip(answers, qas, strict=True)), 2),
        }
        print(f"{name}: final loss {memory.stats['final_loss']:.6f}, F1 {runs[name]['f1']}", flush=True)

    base = runs["eager"]
    comparisons = {}
    for other in ("eager_again", "compiled"):
        same = sum(a == b for a, b in zip(base["answers"], runs[other]["answers"], strict=True))
        comparisons[f"eager_vs_{other}"] = {
            "relative_parameter_difference": relative_difference(base["tensors"], runs[other]["tensors"]),
            "identical_answers": same,
            "questions": len(prompts),
        }
        print(f"eager vs {other}: {comparisons[f'eager_vs_{other}']}", flush=True)
    result = {
        "preset": args.preset,
        "adapter": args.adapter,
        "document_tokens": args.length,
        "device": str(lift.device),
        "runs": {name: {k: v for k, v in run.items() if k != "tensors"} for name, run in runs.items()},
        "comparisons": comparisons,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
