"""What a :class:`~lift_integrations.routing.MemoryRouter` would change in an existing comparison report.

    python benchmarks/route_reports.py docs/runs/h200_sweep10_qa400 --data ../shared/data/squad-dev.json

A routed memory answers a question exactly as the memory arm did when the router sends it there, and
exactly as the same arm without a memory did otherwise (``hybrid`` -> ``rag_langchain``, ``lift_icl`` ->
``icl``, ``lift_only`` -> ``closed_book``; the probe's base answers). Both answers are already in a report
run with those arms, so routing can be measured on the GPU runs of record without the GPU: only the
router runs here (all-MiniLM-L6-v2 on the CPU). The router reads the document memory's text, rebuilt from
the SQuAD file exactly as ``examples/compare_rag.py`` built it. The control arms follow the document
memory's router, as ``--route-memories`` routes them (``lift_bench.arms.CaseResources.router``),
so their routed answers are in the report too.

Prints a Markdown table per report: each memory arm's F1 unrouted and routed with the share of questions
sent to the memory, its routed gain over its routed control, and the probe's contains-gold (base, with the
memory, through the router), with paired bootstrap intervals. ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from merge_reports import load_report

from lift_bench.arms import CONTROL_OF
from lift_bench.cases import article_document, concatenate
from lift_bench.squad import Article, bootstrap_ci, load_squad_articles
from lift_integrations import routing
from lift_integrations.memory import Memory
from lift_integrations.routing import (
    CALIBRATION_QUANTILE,
    LEXICAL_WEIGHT,
    Embedder,
    MemoryRouter,
    default_embedder,
)

WITHOUT_MEMORY = {
    "lift_only": "closed_book",
    "lift_icl": "icl",
    "hybrid": "rag_langchain",
    "control": "closed_book",
    "control_icl": "icl",
    "control_hybrid": "rag_langchain",
}
"""Each memory arm and the arm that answers the same prompt without a memory."""


def articles_memory(articles: Sequence[Article]) -> Memory:
    """A memory of the articles as the harness builds its document (one article as itself, several
    concatenated with a title line each), holding its text and no weights: the router reads text only."""
    documents = [article_document(a) for a in articles]
    document = documents[0] if len(documents) == 1 else concatenate(documents)
    return routing.text_memory([(document.title, document.text)])


def document_memory(case: dict[str, Any], articles: dict[str, Article]) -> Memory:
    """The case's document memory as the harness absorbed it (see :func:`articles_memory`; a long case
    always has several sources)."""
    missing = [s for s in case["sources"] if s not in articles]
    if missing:
        raise ValueError(f"articles {missing} of case {case['document']!r} are not in the data file")
    return articles_memory([articles[s] for s in case["sources"]])


def _ci(values: Sequence[float]) -> str:
    mean, low, high = bootstrap_ci(list(values), n_resamples=1000, seed=0)
    return f"{mean * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def _routed(
    wants: Sequence[bool], mine: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]], key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per question: the memory arm's score, the memory-free arm's, and the routed one."""
    if [r["question"] for r in mine] != [r["question"] for r in theirs]:
        raise ValueError("the memory arm and the arm without memory answered different questions")
    memory = np.array([r[key] for r in mine], dtype=float)
    plain = np.array([r[key] for r in theirs], dtype=float)
    return memory, plain, np.where(np.asarray(wants, dtype=bool), memory, plain)


def _collect(
    bucket: dict[str, dict[str, list[Any]]], arm: str, wants: Sequence[bool], *scores: np.ndarray
) -> None:
    """Append one case's decisions and (memory, without memory, routed) scores to the arm's pool."""
    entry = bucket.setdefault(arm, {"wants": [], "memory": [], "without": [], "routed": []})
    entry["wants"].extend(wants)
    for name, values in zip(("memory", "without", "routed"), scores, strict=True):
        entry[name].extend(values)


def route_report(
    report: dict[str, Any],
    articles: dict[str, Article],
    embed: Embedder,
    quantile: float = CALIBRATION_QUANTILE,
    lexical_weight: float = LEXICAL_WEIGHT,
) -> dict[str, Any]:
    """Routed scores for every case of ``report``, pooled per setting, by a :class:`MemoryRouter` with
    ``quantile`` and ``lexical_weight``. Every arm follows the document memory's router (the controls
    too, as ``--route-memories`` does), so a routed gain over the routed control compares the two
    memories on the same questions."""
    pooled: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for case in report["cases"]:
        memory = document_memory(case, articles)
        router = MemoryRouter(memory, embed=embed, quantile=quantile, lexical_weight=lexical_weight)
        rows = case["questions"]
        bucket = pooled.setdefault(case["setting"], {})
        any_arm = next(iter(rows.values()))
        wants = router.wants([r["question"] for r in any_arm])
        for arm, plain in WITHOUT_MEMORY.items():
            if arm in rows and plain in rows:
                _collect(bucket, arm, wants, *_routed(wants, rows[arm], rows[plain], "f1"))
        general = case.get("general")
        if general:
            base, with_memory = general["questions"]["base"], general["questions"]["memory"]
            probe_wants = router.wants([r["question"] for r in base])
            _collect(bucket, "probe", probe_wants, *_routed(probe_wants, with_memory, base, "contains"))
    result: dict[str, Any] = {}
    for setting, arms in pooled.items():
        result[setting] = {}
        for arm, entry in arms.items():
            memory, without, routed = (np.array(entry[k]) for k in ("memory", "without", "routed"))
            stats = {
                "n": len(routed),
                "routed_to_memory": float(np.mean(entry["wants"])),
                "memory": float(memory.mean()),
                "without_memory": float(without.mean()),
                "routed": float(routed.mean()),
                "routed_minus_without": _ci(routed - without),
            }
            control = CONTROL_OF.get(arm)
            if control in arms:
                stats["routed_gain_over_routed_control"] = _ci(routed - np.array(arms[control]["routed"]))
            result[setting][arm] = stats
    return result


def markdown(name: str, routed: dict[str, Any]) -> str:
    lines = [
        f"### {name}",
        "",
        "| setting | arm (vs the arm without memory) | n | sent to memory | without memory | memory always "
        "| routed | routed minus without memory | routed gain over routed control |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, arms in routed.items():
        for arm, s in arms.items():
            label = (
                "probe, contains-gold (vs base)"
                if arm == "probe"
                else f"{arm}, F1 (vs {WITHOUT_MEMORY[arm]})"
            )
            lines.append(
                f"| {setting} | {label} | {s['n']} | {s['routed_to_memory'] * 100:.0f}% "
                f"| {s['without_memory'] * 100:.1f} | {s['memory'] * 100:.1f} | {s['routed'] * 100:.1f} "
                f"| {s['routed_minus_without']} | {s.get('routed_gain_over_routed_control', '')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reports", nargs="+", help="run folders (their report.json) or report.json files")
    parser.add_argument(
        "--data", required=True, help="the SQuAD file the runs read (to rebuild the documents)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--quantile",
        type=float,
        default=CALIBRATION_QUANTILE,
        help=f"the router's calibration quantile (MemoryRouter's default, {CALIBRATION_QUANTILE})",
    )
    parser.add_argument(
        "--lexical-weight",
        type=float,
        default=LEXICAL_WEIGHT,
        help=f"the router's lexical weight (MemoryRouter's default, {LEXICAL_WEIGHT}; 0: embeddings alone)",
    )
    args = parser.parse_args(argv)
    articles = {a.title: a for a in load_squad_articles(args.data)}
    embed = default_embedder()
    everything: dict[str, Any] = {}
    for source in args.reports:
        try:
            path, report = load_report(source)
        except (OSError, json.JSONDecodeError) as error:
            sys.exit(f"cannot read a report: {error}")
        if report["meta"].get("route_memories"):
            sys.exit(f"{path} was run with --route-memories: its memory arms are routed already")
        routed = route_report(report, articles, embed, args.quantile, args.lexical_weight)
        everything[str(path)] = routed
        print(markdown(str(path.parent if path.name == "report.json" else path), routed))
    if args.json is not None:
        args.json.write_text(json.dumps(everything, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
