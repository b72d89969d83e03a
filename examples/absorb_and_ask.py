"""Absorb a real article into a memory, then ask about it with and without the memory.

    python examples/absorb_and_ask.py                 # embedded SmolLM2, fast preset, CPU friendly
    python examples/absorb_and_ask.py --paragraphs 10 --model HuggingFaceTB/SmolLM2-360M-Instruct

The article is the SQuAD v1.1 "Normans" article (CC BY-SA 4.0, see examples/data/NOTICE.md); the
fictional Quillon document shows what no base model can know.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import time
from collections import Counter
from pathlib import Path

from lift_integrations import LIFTConfig, LIFTModel

DATA = Path(__file__).resolve().parent / "data"


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no a/an/the, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD's token F1 between the normalised answer and the normalised gold answer."""
    mine, theirs = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(mine) & Counter(theirs)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(mine), same / len(theirs)
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument(
        "--paragraphs", type=int, default=4, help="paragraphs of the Normans article to absorb"
    )
    parser.add_argument("--save", type=Path, default=None, help="save the memories under this folder")
    args = parser.parse_args()

    lift = LIFTModel.from_pretrained(args.model)
    print(f"model: {lift.name} on {lift.device}, window {lift.context_window} tokens")

    fiction = json.loads((DATA / "quillon.json").read_text())
    # A SQuAD paragraph list: {"title", "context", "questions": [{"question", "answer"}]} per paragraph.
    paragraphs = json.loads((DATA / "normans.json").read_text(encoding="utf-8"))[: args.paragraphs]
    normans_questions = [(q["question"], q["answer"]) for p in paragraphs for q in p["questions"]]
    cases = [
        (fiction["title"], fiction["text"], [(q["question"], q["answer"]) for q in fiction["questions"]]),
        ("Normans", "\n\n".join(p["context"] for p in paragraphs), normans_questions[:8]),
    ]
    for title, text, questions in cases:
        start = time.perf_counter()
        memory = lift.absorb((title, text), config=LIFTConfig.fast(), show_progress=True)
        print(
            f"\n== {title}: {lift.count_tokens(text)} tokens absorbed in {time.perf_counter() - start:.0f} s "
            f"({memory.num_parameters:,} memory parameters)"
        )
        if args.save:
            print(f"saved to {memory.save(args.save / title.replace(' ', '_'))}")
        scores = {"base model": 0.0, "with memory": 0.0}
        for question, gold in questions:
            base = lift.generate(question, memory=None, max_new_tokens=32).text.strip()
            remembered = lift.generate(question, memory=memory, max_new_tokens=32).text.strip()
            scores["base model"] += f1_score(base, gold) / len(questions)
            scores["with memory"] += f1_score(remembered, gold) / len(questions)
            mark = "✓" if normalize_answer(gold) in normalize_answer(remembered) else " "
            print(
                f"\nQ: {question}   (gold: {gold})\n  base:   {base[:100]}\n"
                f"  memory: {remembered[:100]} {mark}"
            )
        print(
            f"\n{title}: mean token F1 base {scores['base model']:.2f}, "
            f"with memory {scores['with memory']:.2f}"
        )


if __name__ == "__main__":
    main()
