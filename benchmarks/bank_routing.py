"""How well a :class:`~lift_integrations.bank.BankRouter` sends questions to the right memory of a bank,
and keeps unrelated questions away from all of them.

    python benchmarks/bank_routing.py --data ../shared/data/squad-dev.json --json out.json

No model runs: a memory here is only text (routing reads nothing else), and only all-MiniLM-L6-v2 embeds.
The articles are dealt into ``--folds`` folds; for each fold a bank holds one memory per article of the
other folds, and the fold's own articles are text the bank has never seen.

Reported per rule (:data:`RULES`: ``BankRouter``'s ``calibration``, ``margin``, ``quantile`` and
``lexical_weight``; ``--rule`` picks some, all by default):

* own questions (up to ``--questions`` per banked article): sent to their article's memory, to none
  (the base model), or to another article's;
* unrelated questions sent to some memory (false routes): the held-out articles' questions, the bundled
  general-knowledge questions (``examples/data/general_questions.json``) and the invented fact sheets'
  questions (``examples/data/{quillon,brindlecombe,tarrowmere}.json``).

A bank of many memories has many chances to claim an unrelated question; ``per_memory`` calibrates each
memory alone (as :class:`~lift_integrations.routing.MemoryRouter` does), ``joint`` calibrates the bank as
a whole on the same replay questions; ``bank`` calibrates the bank as a whole on the replay questions and
the package's encyclopedic calibration questions (``lift_integrations/data/calibration_questions.json``).
None of the calibration questions is a reported one: the general-knowledge questions reported here are
the probe's, left out of the calibration set (docs/routing.md, "Routing in a bank").
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routing_accuracy import cached

from lift_bench.squad import Article, load_squad_articles
from lift_integrations.bank import BankRouter
from lift_integrations.routing import default_embedder

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
SHEETS = ("quillon.json", "brindlecombe.json", "tarrowmere.json")
RULES: dict[str, dict[str, Any]] = {
    "per_memory": {"calibration": "per_memory"},
    "per_memory, margin 0.05": {"calibration": "per_memory", "margin": 0.05},
    "per_memory, margin 0.1": {"calibration": "per_memory", "margin": 0.1},
    "joint": {"calibration": "joint"},
    "bank": {"calibration": "bank", "quantile": 0.99, "lexical_weight": 0.5},
    "bank, quantile 0.95": {"calibration": "bank", "quantile": 0.95, "lexical_weight": 0.5},
    "bank, quantile 0.9": {"calibration": "bank", "quantile": 0.9, "lexical_weight": 0.5},
    "bank, quantile 0.85": {"calibration": "bank", "quantile": 0.85, "lexical_weight": 0.5},
    "bank, quantile 0.95, lexical 0.25": {"calibration": "bank", "quantile": 0.95, "lexical_weight": 0.25},
    "bank, quantile 0.9, lexical 0.25": {"calibration": "bank", "quantile": 0.9, "lexical_weight": 0.25},
    "bank, quantile 0.85, lexical 0.25": {"calibration": "bank", "quantile": 0.85, "lexical_weight": 0.25},
    "bank, quantile 0.9, lexical 0": {"calibration": "bank", "quantile": 0.9, "lexical_weight": 0.0},
    "per_memory, lexical 0.25": {"calibration": "per_memory", "lexical_weight": 0.25},
}
"""Each rule's ``BankRouter`` options, spelt out (a ``"bank"`` rule's own defaults are 0.9 and 0.25)."""


class TextBank:
    """What a :class:`BankRouter` reads of a bank: names, and each memory's documents."""

    class Document:
        def __init__(self, title: str, text: str) -> None:
            self.title, self.text = title, text

    def __init__(self, articles: Sequence[Article]) -> None:
        self._articles = {a.title: a for a in articles}
        self.names = list(self._articles)

    def __len__(self) -> int:
        return len(self.names)

    def documents(self, name: str) -> list[TextBank.Document]:
        article = self._articles[name]
        return [TextBank.Document(article.title, article.text)]


def unrelated_questions() -> dict[str, list[str]]:
    """The bundled unrelated questions, by kind."""
    general = json.loads((DATA / "general_questions.json").read_text(encoding="utf-8"))
    sheets = [json.loads((DATA / name).read_text(encoding="utf-8")) for name in SHEETS]
    return {
        "general knowledge": [q["question"] for q in general],
        "invented fact sheets": [q["question"] for sheet in sheets for q in sheet["questions"]],
    }


def measure(
    articles: Sequence[Article], folds: int, questions: int, embed: Any, rules: Sequence[str] = tuple(RULES)
) -> dict[str, Any]:
    """Counts per rule (``rules``: names of :data:`RULES`), summed over the folds."""
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; the rules are {list(RULES)}")
    rng = random.Random(0)
    order = list(articles)
    rng.shuffle(order)
    counts: dict[str, dict[str, int]] = {rule: {} for rule in rules}

    def add(calibration: str, key: str, value: int) -> None:
        counts[calibration][key] = counts[calibration].get(key, 0) + value

    fixed = unrelated_questions()
    for fold in range(folds):
        held_out = order[fold::folds]
        banked = [a for a in order if a not in held_out]
        own = [
            (a.title, q.question)
            for a in banked
            for q in rng.sample(a.questions, min(questions, len(a.questions)))
        ]
        unrelated = {
            "held-out articles": [q.question for a in held_out for q in a.questions[:questions]],
            **fixed,
        }
        for calibration in rules:
            router = BankRouter(TextBank(banked), embed=embed, **RULES[calibration])
            chosen = router.route_many([q for _, q in own])
            add(calibration, "own questions", len(own))
            add(calibration, "own memory", sum(c == t for (t, _), c in zip(own, chosen, strict=True)))
            add(calibration, "none", sum(c is None for c in chosen))
            for kind, texts in unrelated.items():
                routed = router.route_many(texts)
                add(calibration, f"{kind}: questions", len(texts))
                add(calibration, f"{kind}: routed", sum(c is not None for c in routed))
                if kind == "general knowledge":  # which probe questions a bank claims, and for which memory
                    for text, memory in zip(texts, routed, strict=True):
                        if memory is not None:
                            add(calibration, f"probe question routed: {text} -> {memory}", 1)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="SQuAD paragraph-list JSON")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--questions", type=int, default=40, help="questions per article")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--rule", action="append", choices=list(RULES), help="a rule to measure (repeatable; default: all)"
    )
    args = parser.parse_args(argv)
    articles = load_squad_articles(args.data)
    rules = args.rule or list(RULES)
    counts = measure(articles, args.folds, args.questions, cached(default_embedder()), rules)
    kinds = ["held-out articles", "general knowledge", "invented fact sheets"]
    print(
        f"# {len(articles)} articles, {args.folds} folds: banks of about "
        f"{len(articles) - len(articles) // args.folds} memories"
    )
    print("| rule | own memory | none | another memory | " + " | ".join(f"{k}: routed" for k in kinds) + " |")
    print("|---" * (4 + len(kinds)) + "|")
    for calibration, c in counts.items():
        n = c["own questions"]
        other = n - c["own memory"] - c["none"]
        cells = [f"{c['own memory'] / n:.1%}", f"{c['none'] / n:.1%}", f"{other / n:.1%}"]
        cells += [f"{c[k + ': routed']}/{c[k + ': questions']}" for k in kinds]
        print(f"| {calibration} | " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(counts, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
