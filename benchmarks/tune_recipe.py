"""Measure absorption recipes: closed-book answers from the memory alone, and general-knowledge damage.

    python benchmarks/tune_recipe.py --variants '[{"name": "fast"},
        {"name": "lr1e-2", "config": {"learning_rate": 0.01}}]'

Each variant is ``{"name", "preset": "fast"|"paper", "config": {LIFTConfig overrides},
"adapter": "gated_memory"|"lora", "adapter_config": {...}}``. The document is the fictional
examples/data/quillon.json (facts no model can know); add SQuAD articles with --squad FILE --articles N.
Prints one JSON line per (variant, document).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lift_bench.squad import exact_match, f1_score, load_squad_articles, normalize_answer
from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.absorb.samples import split_passages

ROOT = Path(__file__).resolve().parents[1]


def contains(prediction: str, gold: str) -> bool:
    return normalize_answer(gold) in normalize_answer(prediction)


def overlap_passages(passages: list[str], question: str, k: int = 3) -> list[str]:
    """The ``k`` passages sharing the most words with the question: a dependency-free stand-in for a
    retriever, so that hybrid (memory + passages) can be measured where no embedding model is installed."""
    words = set(normalize_answer(question).split())
    ranked = sorted(passages, key=lambda p: -len(words & set(normalize_answer(p).split())))
    return ranked[:k]


def evaluate(
    lift: LIFTModel,
    memory: Memory | None,
    questions: list[tuple[str, str]],
    max_new_tokens: int = 24,
    passages: list[str] | None = None,
) -> dict:
    answers = [
        lift.generate(
            q,
            memory=memory,
            max_new_tokens=max_new_tokens,
            context=overlap_passages(passages, q) if passages else None,
        ).text
        for q, _ in questions
    ]
    golds = [a for _, a in questions]
    n = max(1, len(questions))
    return {
        "contains": sum(contains(p, g) for p, g in zip(answers, golds, strict=True)) / n,
        "em": sum(exact_match(p, g) for p, g in zip(answers, golds, strict=True)) / n,
        "f1": sum(f1_score(p, g) for p, g in zip(answers, golds, strict=True)) / n,
        "samples": [f"{q} -> {p[:60]!r}" for (q, _), p in list(zip(questions, answers, strict=True))[:4]],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", required=True, help="JSON list of variants")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--squad", type=Path, default=None)
    parser.add_argument("--articles", type=int, default=0)
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument(
        "--hybrid", action="store_true", help="also score memory + 3 overlap-retrieved passages"
    )
    args = parser.parse_args()

    fiction = json.loads((ROOT / "examples" / "data" / "quillon.json").read_text())
    documents = [
        (fiction["title"], fiction["text"], [(q["question"], q["answer"]) for q in fiction["questions"]])
    ]
    if args.squad and args.articles:
        for article in load_squad_articles(args.squad)[: args.articles]:
            qs = [(q.question, q.answer) for q in article.questions[: args.questions]]
            documents.append((article.title, article.text, qs))
    general = [(q["question"], q["answer"]) for q in fiction["general_questions"]]

    base = LIFTModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    for title, text, questions in documents:
        before = evaluate(base, None, questions)
        print(json.dumps({"variant": "closed-book", "document": title, **before}), flush=True)
        if args.hybrid:
            rag = evaluate(base, None, questions, passages=split_passages(text, 600))
            print(json.dumps({"variant": "rag (base + passages)", "document": title, **rag}), flush=True)
    general_before = evaluate(base, None, general)["contains"]
    for variant in json.loads(args.variants):
        lift = LIFTModel(
            base.model,
            base.tokenizer,
            name=base.name,
            adapter=variant.get("adapter", "gated_memory"),
            adapter_config=variant.get("adapter_config"),
        )
        lift._fingerprint = base.fingerprint
        config = getattr(LIFTConfig, variant.get("preset", "fast"))(**variant.get("config", {}))
        for title, text, questions in documents:
            start = time.perf_counter()
            memory = lift.absorb((title, text), config=config, generator=variant.get("generator"))
            seconds = time.perf_counter() - start
            result = evaluate(lift, memory, questions)
            if args.hybrid:
                hybrid = evaluate(lift, memory, questions, passages=split_passages(text, 600))
                result["hybrid_f1"], result["hybrid_contains"] = hybrid["f1"], hybrid["contains"]
            result["general_contains"] = evaluate(lift, memory, general)["contains"]
            result["general_before"] = general_before
            print(
                json.dumps(
                    {
                        "variant": variant["name"],
                        "document": title,
                        "absorb_s": round(seconds, 1),
                        "loss": round(memory.stats["final_loss"], 3),
                        "steps": memory.stats["steps"],
                        "qa_samples": memory.stats["qa_samples"],
                        **result,
                    }
                ),
                flush=True,
            )
            lift.release(memory)


if __name__ == "__main__":
    main()
