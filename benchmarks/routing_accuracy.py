"""How well a :class:`~lift_integrations.routing.MemoryRouter` tells a memory's questions from others.

    python benchmarks/routing_accuracy.py --data ../shared/data/squad-dev.json --json out.json

No model runs: a memory here is only text (routing reads nothing else), and only all-MiniLM-L6-v2 embeds.
For each SQuAD article outside the comparison's three dev articles (those, and the general-knowledge
probe, stay out so that choosing a rule here does not tune on the comparison's own questions), a memory of
the article alone, and one of every three consecutive such articles concatenated as one document (the
long setting's shape). Reported per rule: every pair of a lexical weight (``--lexical-weights``; 0 is
the embedding similarity alone, ``MemoryRouter``'s default is ``LEXICAL_WEIGHT``) and a calibration
quantile of the replay questions' relevance (``--quantiles``; 1.0 is their maximum, ``MemoryRouter``'s
default is ``CALIBRATION_QUANTILE``):

* recall: the share of the memory's own SQuAD questions sent to it;
* false routes: the share of other articles' questions (up to ``--negatives`` drawn from articles not in
  the memory) sent to it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from route_reports import articles_memory

from lift_bench.squad import Article, load_squad_articles
from lift_integrations.routing import Embedder, MemoryRouter, default_embedder

DEV_ARTICLES = ("Normans", "1973 oil crisis", "Amazon rainforest")
"""The comparison's articles (examples/compare_rag.py's default), left out of this benchmark."""


def cached(embed: Embedder) -> Embedder:
    """``embed`` computing each distinct text once: every rule's router reads the same passages."""
    memo: dict[str, np.ndarray] = {}

    def embed_once(texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, np.asarray(embed(missing), dtype=np.float32), strict=True))
        return np.stack([memo[t] for t in texts])

    return embed_once


def rule_name(lexical_weight: float, quantile: float) -> str:
    return f"lexical {lexical_weight:g}, quantile {quantile:g}"


def measure(
    articles: Sequence[Article],
    group: int,
    lexical_weights: Sequence[float],
    quantiles: Sequence[float],
    negatives: int,
    embed: Any,
) -> dict[str, Any]:
    """Recall and false-route rate per rule (lexical weight, quantile), pooled over memories of ``group``
    consecutive articles."""
    rng = random.Random(0)
    rules = [(w, q) for w in lexical_weights for q in quantiles]
    own_hits = dict.fromkeys(rules, 0)
    other_hits = dict.fromkeys(rules, 0)
    own_total = other_total = 0
    memories = [articles[i : i + group] for i in range(0, len(articles) - group + 1, group)]
    for members in memories:
        titles = {a.title for a in members}
        own = [q.question for a in members for q in a.questions]
        pool = [q.question for a in articles if a.title not in titles for q in a.questions]
        others = rng.sample(pool, min(negatives, len(pool)))
        memory = articles_memory(members)
        for weight in lexical_weights:
            base = MemoryRouter(memory, embed=embed, lexical_weight=weight)
            own_scores, other_scores = base.relevance(own), base.relevance(others)
            for quantile in quantiles:
                router = MemoryRouter(memory, embed=embed, lexical_weight=weight, quantile=quantile)
                own_hits[weight, quantile] += int((own_scores > router.threshold).sum())
                other_hits[weight, quantile] += int((other_scores > router.threshold).sum())
        own_total += len(own)
        other_total += len(others)
    return {
        "memories": len(memories),
        "own_questions": own_total,
        "other_questions": other_total,
        "rules": {
            rule_name(*rule): {
                "recall": own_hits[rule] / own_total,
                "false_routes": other_hits[rule] / other_total,
            }
            for rule in rules
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="SQuAD paragraph-list JSON")
    parser.add_argument("--lexical-weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--quantiles", type=float, nargs="+", default=[1.0, 0.99, 0.95, 0.9])
    parser.add_argument("--negatives", type=int, default=300, help="other articles' questions per memory")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    articles = [a for a in load_squad_articles(args.data) if a.title not in DEV_ARTICLES]
    embed = cached(default_embedder())
    results = {
        f"{group} article(s) per memory": measure(
            articles, group, args.lexical_weights, args.quantiles, args.negatives, embed
        )
        for group in (1, 3)
    }
    print("| memory | memories | rule | recall (own questions) | false routes |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        for rule, stats in result["rules"].items():
            print(
                f"| {name} | {result['memories']} | {rule} | {stats['recall'] * 100:.1f}% "
                f"| {stats['false_routes'] * 100:.2f}% |"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
