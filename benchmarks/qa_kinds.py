"""Which kinds of questions the extractive QA generator asks: direct ones or ones quoting the sentence.

    python benchmarks/qa_kinds.py                    # the two fact sheets and the "Normans" article
    python benchmarks/qa_kinds.py --pairs 24 --seeds 0 1 --show

For each document it counts every candidate pair (``max_pairs`` unbounded) and a sample of ``--pairs``
pairs per seed (fast() asks for 24 on a short sheet), by kind: ``direct`` ("Who founded the Brindlecombe
Clock Museum?"), ``echo`` ("Based on T: ... in what year?") and ``blank`` ("Based on T: "... ____ ..."
Who or what fills in the blank?"). To count the generator of an older commit, put that commit's tree
first on ``PYTHONPATH`` (``git worktree add /tmp/old <commit>; PYTHONPATH=/tmp/old python ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lift_integrations.absorb.extractive import extractive_qa_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"


def documents() -> list[tuple[str, str, str]]:
    """(label, title, text): the two fact sheets and the SQuAD "Normans" article of absorb_speed.py."""
    docs = []
    for name in ("quillon.json", "brindlecombe.json"):
        sheet = json.loads((DATA / name).read_text(encoding="utf-8"))
        docs.append((name, sheet["title"], sheet["text"]))
    from absorb_speed import ARTICLE

    paragraphs = [p["context"] for p in json.loads(ARTICLE.read_text(encoding="utf-8"))]
    docs.append(("Normans (SQuAD)", "Normans", "\n\n".join(paragraphs)))
    return docs


def kind_of(question: str) -> str:
    if not question.startswith("Based on "):
        return "direct"
    return "blank" if "fills in the blank?" in question else "echo"


def counts(questions: list[str]) -> dict[str, int]:
    kinds = [kind_of(q) for q in questions]
    return {k: kinds.count(k) for k in ("direct", "echo", "blank")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=24, help="pairs per sample (fast() asks for 24)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--show", action="store_true", help="print the fact sheets' candidate questions")
    args = parser.parse_args()
    for label, title, text in documents():
        every = extractive_qa_pairs(text, title=title, max_pairs=100_000)
        line = f"{label}: all {len(every)} {counts([p.question for p in every])}"
        for seed in args.seeds:
            sample = extractive_qa_pairs(text, title=title, max_pairs=args.pairs, seed=seed)
            line += f"; {args.pairs} pairs, seed {seed}: {counts([p.question for p in sample])}"
        print(line)
        if args.show and label.endswith(".json"):
            for pair in every:
                print(f"  {kind_of(pair.question):6} [{pair.answer}] {pair.question}")


if __name__ == "__main__":
    main()
