"""What a :class:`~lift_integrations.routing.MemoryRouter` would change in an existing comparison report.

    python benchmarks/route_reports.py docs/runs/h200_sweep10_qa400 --data ../shared/data/squad-dev.json

A routed memory answers a question exactly as the memory arm did when the router sends it there, and
exactly as the same arm without a memory did otherwise (``hybrid`` -> ``rag_langchain``, ``lift_icl`` ->
``icl``, ``lift_only`` -> ``closed_book``; the probe's base answers). Both answers are already in a report
run with those arms, so routing can be measured on the GPU runs of record without the GPU: only the
router runs here (all-MiniLM-L6-v2 on the CPU). The router reads the document memory's text, rebuilt from
the SQuAD file exactly as ``examples/compare_rag.py`` built it. Control memories hold parts of other
articles cut to a token count, which the report does not keep, so control arms are not re-routed; a routed
run of ``examples/compare_rag.py --route-memories`` measures them.

Prints a Markdown table per report: each document arm's F1 unrouted and routed with the share of questions
sent to the memory, and the probe's contains-gold (base, with the memory, through the router) with paired
bootstrap intervals. ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lift_integrations.bench.compare import article_document, concatenate
from lift_integrations.bench.squad import bootstrap_ci, load_squad_articles
from lift_integrations.config import LIFTConfig
from lift_integrations.memory import AbsorbedDocument, Memory
from lift_integrations.routing import MemoryRouter, default_embedder

WITHOUT_MEMORY = {"lift_only": "closed_book", "lift_icl": "icl", "hybrid": "rag_langchain"}
"""Each document memory arm and the arm that answers the same prompt without a memory."""


def document_memory(case: dict[str, Any], articles: dict[str, Any]) -> Memory:
    """A memory holding the case's document text as the harness absorbed it (no weights: the router
    reads text only)."""
    missing = [s for s in case["sources"] if s not in articles]
    if missing:
        raise ValueError(f"articles {missing} of case {case['document']!r} are not in the data file")
    documents = [article_document(articles[s]) for s in case["sources"]]
    document = documents[0] if case["setting"] == "single" else concatenate(documents)
    return Memory(
        adapter_kind="none",
        adapter_config={},
        tensors={},
        documents=[AbsorbedDocument(document.title, document.text)],
        config=LIFTConfig(),
        base_model_name="none",
        base_fingerprint="none",
    )


def _ci(values: Sequence[float]) -> str:
    mean, low, high = bootstrap_ci(list(values), n_resamples=1000, seed=0)
    return f"{mean * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def route_report(report: dict[str, Any], articles: dict[str, Any], embed: Any) -> dict[str, Any]:
    """Routed scores for every case of ``report``, pooled per setting."""
    pooled: dict[str, dict[str, list[Any]]] = {}
    for case in report["cases"]:
        router = MemoryRouter(document_memory(case, articles), embed=embed)
        rows = case["questions"]
        bucket = pooled.setdefault(case["setting"], {})
        for arm, plain in WITHOUT_MEMORY.items():
            if arm not in rows or plain not in rows:
                continue
            wants = router.wants([r["question"] for r in rows[arm]])
            for want, mine, theirs in zip(wants, rows[arm], rows[plain], strict=True):
                bucket.setdefault(arm, []).append((want, mine["f1"], theirs["f1"]))
        general = case.get("general")
        if general:
            base, memory = general["questions"]["base"], general["questions"]["memory"]
            wants = router.wants([r["question"] for r in base])
            for want, theirs, mine in zip(wants, base, memory, strict=True):
                bucket.setdefault("probe", []).append((want, mine["contains"], theirs["contains"]))
    result: dict[str, Any] = {}
    for setting, arms in pooled.items():
        result[setting] = {}
        for arm, triples in arms.items():
            wants = np.array([t[0] for t in triples])
            mine = np.array([t[1] for t in triples], dtype=float)
            theirs = np.array([t[2] for t in triples], dtype=float)
            routed = np.where(wants, mine, theirs)
            result[setting][arm] = {
                "n": len(triples),
                "routed_to_memory": float(wants.mean()),
                "memory": float(mine.mean()),
                "without_memory": float(theirs.mean()),
                "routed": float(routed.mean()),
                "routed_minus_without": _ci(routed - theirs),
                "memory_minus_without": _ci(mine - theirs),
            }
    return result


def markdown(name: str, routed: dict[str, Any]) -> str:
    lines = [
        f"### {name}",
        "",
        "| setting | arm (vs the arm without memory) | n | sent to memory | without memory | memory always "
        "| routed | routed minus without memory |",
        "|---|---|---|---|---|---|---|---|",
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
                f"| {s['routed_minus_without']} |"
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
    args = parser.parse_args(argv)
    articles = {a.title: a for a in load_squad_articles(args.data)}
    embed = default_embedder()
    everything: dict[str, Any] = {}
    for source in args.reports:
        path = Path(source) / "report.json" if Path(source).is_dir() else Path(source)
        if not path.is_file():
            sys.exit(f"no report at {path}")
        report = json.loads(path.read_text(encoding="utf-8"))
        routed = route_report(report, articles, embed)
        everything[str(path)] = routed
        print(markdown(str(path.parent if path.name == "report.json" else path), routed))
    if args.json is not None:
        args.json.write_text(json.dumps(everything, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
