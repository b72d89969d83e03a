"""Are system prompts followed with a memory attached? Ten instructions, each checked automatically.

    python benchmarks/instruction_probe.py --out docs/runs/instruction_probe.json   # about 3 min, 1 thread

Every instruction ("Answer in French.", "Answer in one word.", ...) goes in a system message above each
question: two questions about the fictional Quillon Observatory (``examples/data/quillon.json``, which
no base model knows) and two general ones. Each of the 40 conversations is answered greedily three ways:
by the base model (no memory), with the Quillon memory always attached (``route_memory=False``), and
routed as both framework bindings route by default (:class:`~lift_integrations.routing.RouterSlot` on
the conversation). The report gives, per arm and instruction, how many answers pass the instruction's
check, and whether the answer holds the expected fact (the gold answer, lower-cased, in the answer): an
instruction such as "Answer in French" may change the words, so that figure is only indicative.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.routing import RouterSlot

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "quillon.json"

FRENCH = {"le", "la", "les", "est", "de", "du", "des", "une", "un", "et", "en", "a", "été", "par", "qui"}
ENGLISH = {"the", "is", "of", "and", "was", "in", "by", "it", "a", "an", "which", "who", "to"}


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def _french(text: str) -> bool:
    words = _words(text)
    french = sum(w in FRENCH for w in words)
    english = sum(w in ENGLISH - {"a"} for w in words)
    return french >= 2 and french > english


def _json_answer(text: str) -> bool:
    try:
        value = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
    except ValueError:
        return False
    return isinstance(value, dict) and "answer" in value


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


INSTRUCTIONS: list[tuple[str, str, Callable[[str], bool]]] = [
    ("french", "Answer in French.", _french),
    ("one_word", "Answer in one word.", lambda t: 1 <= len(_words(t)) <= 1),
    ("uppercase", "Answer in uppercase letters only.", lambda t: bool(_letters(t)) and _letters(t).isupper()),
    ("lowercase", "Answer in lowercase letters only.", lambda t: bool(_letters(t)) and _letters(t).islower()),
    ("prefix", "Start your answer with 'Answer:'.", lambda t: t.strip().startswith("Answer:")),
    ("five_words", "Answer in at most five words.", lambda t: 1 <= len(_words(t)) <= 5),
    ("exclaim", "End your answer with an exclamation mark.", lambda t: t.strip().endswith("!")),
    ("json", 'Reply only with JSON of the form {"answer": "..."}.', _json_answer),
    (
        "bullets",
        "Answer as a bulleted list, each line starting with '- '.",
        lambda t: t.lstrip().startswith("- "),
    ),
    (
        "quotes",
        "Put your whole answer in double quotation marks.",
        lambda t: t.strip()[:1] in '"“' and t.strip()[-1:] in '"”' and len(t.strip()) > 1,
    ),
]
"""(name, system prompt, check of the answer)."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id or folder (default: the embedded SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()

    import torch

    started = time.perf_counter()
    lift = LIFTModel.from_pretrained(args.model, device="cpu")
    fixture = json.loads(DATA.read_text(encoding="utf-8"))
    memory_questions = [(q["question"], q["answer"]) for q in fixture["questions"][1:3]]
    general = [("What is the capital of France?", "Paris"), ("How many days are there in a week?", "seven")]
    questions = memory_questions + general

    absorb_start = time.perf_counter()
    memory = lift.absorb((fixture["title"], fixture["text"]), config=LIFTConfig.fast(), show_progress=False)
    absorb_seconds = time.perf_counter() - absorb_start

    conversations = [
        [{"role": "system", "content": prompt}, {"role": "user", "content": question}]
        for _, prompt, _ in INSTRUCTIONS
        for question, _ in questions
    ]
    slot = RouterSlot()
    routed = [slot.route_chat(memory, conversation) for conversation in conversations]
    arms = {
        "base": [None] * len(conversations),
        "memory_always": [memory] * len(conversations),
        "memory_routed": routed,
    }
    results: dict[str, dict[str, object]] = {}
    records = []
    for arm, memories in arms.items():
        answers = lift.generate_batch(conversations, memories=memories, max_new_tokens=args.max_new_tokens)
        per_instruction: dict[str, int] = {}
        followed = correct = 0
        for index, answer in enumerate(answers):
            name, _, check = INSTRUCTIONS[index // len(questions)]
            question, gold = questions[index % len(questions)]
            ok = bool(check(answer.text))
            has_gold = gold.lower() in answer.text.lower()
            per_instruction[name] = per_instruction.get(name, 0) + ok
            followed += ok
            correct += has_gold
            records.append(
                {
                    "arm": arm,
                    "instruction": name,
                    "question": question,
                    "answer": answer.text,
                    "followed": ok,
                    "contains_gold": has_gold,
                    "memory": memories[index] is not None,
                }
            )
        results[arm] = {
            "followed": followed,
            "of": len(conversations),
            "followed_rate": round(followed / len(conversations), 3),
            "contains_gold": correct,
            "per_instruction": per_instruction,
            "answered_with_memory": sum(m is not None for m in memories),
        }
    report = {
        "command": "python benchmarks/instruction_probe.py --out docs/runs/instruction_probe.json",
        "model": lift.name,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "config": "LIFTConfig.fast()",
        "absorb_seconds": round(absorb_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "instructions": [{"name": n, "system_prompt": p} for n, p, _ in INSTRUCTIONS],
        "questions": [
            {"question": q, "gold": g, "about_memory": i < len(memory_questions)}
            for i, (q, g) in enumerate(questions)
        ],
        "routed_to_memory": {
            "memory_questions": sum(
                m is not None for i, m in enumerate(routed) if i % len(questions) < len(memory_questions)
            ),
            "general_questions": sum(
                m is not None for i, m in enumerate(routed) if i % len(questions) >= len(memory_questions)
            ),
            "per_kind_total": len(INSTRUCTIONS) * len(memory_questions),
        },
        "results": results,
        "answers": records,
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    summary = {arm: (r["followed"], r["of"], r["contains_gold"]) for arm, r in results.items()}
    print(
        json.dumps(
            {
                "summary (followed, of, contains_gold)": summary,
                **{k: report[k] for k in ("absorb_seconds", "total_seconds", "routed_to_memory")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
