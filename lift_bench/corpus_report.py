"""The corpus setting's report as people read it: Markdown tables, the F1 plot and the JSON file.

Next to each arm's score it puts what the corpus setting is about: the arm against RAG over the same
corpus (ratio of mean F1 and the paired difference), the memory arms against their controls, how often
the router chose the question's own article's memory, and what the memories cost to make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lift_bench.compare import PROBE_KINDS, save_json
from lift_bench.corpus_arms import RAG_BASELINES
from lift_bench.report import _bytes, _pct, _rate, plot_f1_per_arm

__all__ = ["corpus_markdown", "write_corpus_outputs"]


def _versus(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    ratio = "–" if entry["ratio"] is None else f"{entry['ratio']:.2f}x"
    return f"{ratio}, {_pct(entry['difference'], signed=True)}"


def corpus_markdown(report: dict[str, Any]) -> str:
    """The tables of a corpus report (:func:`~lift_bench.corpus_run.run_corpus`)."""
    meta, corpus = report["meta"], report["corpus"]
    case = report["cases"][0]
    arms = case["arms"]
    n_articles = len(corpus["articles"])
    lines = [
        f"# Knowledge base of {n_articles} articles: RAG vs LIFT, {meta['model']}",
        "",
        f"{meta['device']}, {meta['dtype']}, window {meta['context_window']:,} tokens, greedy decoding, at "
        f"most {meta['max_new_tokens']} new tokens, seed {meta['seed']}. The corpus: {n_articles} articles, "
        f"{corpus['tokens']:,} tokens ({corpus['tokens'] / meta['context_window']:.1f} windows), "
        f"{corpus['questions']} questions drawn across all of them. Memories: "
        + (
            "one per article, the bank's router choosing one (or none) per question."
            if meta.get("routing") == "bank_router"
            else "each question given its own article's memory (oracle routing, no router)."
        )
        + " Scores are SQuAD v1.1 EM and F1 in percent with bootstrap 95% intervals; differences are "
        "paired over the same questions.",
    ]
    if meta.get("answer_batch", 1) > 1:
        lines[-1] += (
            f" Questions were answered {meta['answer_batch']} at a time (rag_llamaindex: one at a time); an "
            "answer's latency is its arm's generation time split evenly."
        )
    rag = case["rag"]
    lines += [
        "",
        f"## Arms: {corpus['questions']} questions",
        "",
        f"RAG: chunks of {rag['chunk_size']} tokens, k = {rag['k']}"
        + (" (tuned for RAG)." if rag.get("tuned") else "."),
        "",
        "| Arm | EM | F1 | F1 gain over control | vs rag_langchain (ratio, difference) "
        "| vs rag_llamaindex (ratio, difference) | contains gold | own article in context | memory attached "
        "| prompt tokens | latency s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gains = case["gains"]
    versus = corpus["versus_rag"]
    retrieval = corpus["own_article_in_context"]
    for arm, stats in arms.items():
        gain = f"{_pct(gains[arm]['f1'], signed=True)} vs {gains[arm]['control']}" if arm in gains else ""
        cells = [_versus(versus.get(arm, {}).get(r)) for r in RAG_BASELINES]
        lines.append(
            f"| {arm} | {_pct(stats['em'])} | {_pct(stats['f1'])} | {gain} | {cells[0]} | {cells[1]} "
            f"| {_rate(stats['contains'])} | {_rate(retrieval.get(arm))} | {_rate(stats['memory_used'])} "
            f"| {stats['prompt_tokens_mean']:,.0f} | {stats['total_s_mean']:.2f} |"
        )
    lines += _routing_table(corpus)
    lines += _absorption_tables(corpus)
    lines += _per_article_table(corpus)
    lines += _probe_table(case.get("general"))
    lines += [
        "",
        f"Control design: {meta['control_design']}",
        "",
        "Arms: " + "; ".join(f"`{a}`: {d}" for a, d in meta["arm_descriptions"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def _routing_table(corpus: dict[str, Any]) -> list[str]:
    routing = corpus.get("routing")
    if not routing:
        return []
    lines = [
        "",
        "## Routing",
        "",
        f"Of {routing['n']} questions the bank's router sent {_rate(routing['correct'])} to their own "
        f"article's memory, {_rate(routing['none'])} to none (the base model) and {_rate(routing['wrong'])} "
        "to another article's memory"
        + (f"; routing every question took {routing['route_s']:.2f} s." if routing.get("route_s") else "."),
        "",
        "| Article | questions | own memory | none | another |",
        "|---|---|---|---|---|",
    ]
    for title, row in routing["per_article"].items():
        lines.append(
            f"| {title} | {row['n']} | {_rate(row['correct'])} | {_rate(row['none'])} "
            f"| {_rate(row['wrong'])} |"
        )
    if routing["confusions"]:
        lines += [
            "",
            "Most frequent wrong choices: "
            + ", ".join(f"{c['own']} -> {c['routed']} ({c['count']})" for c in routing["confusions"])
            + ".",
        ]
    return lines


def _absorption_tables(corpus: dict[str, Any]) -> list[str]:
    bank, whole = corpus.get("bank"), corpus.get("whole")
    lines: list[str] = []
    if bank:
        loaded = f" (loaded from {bank['loaded_from']})" if bank.get("loaded_from") else ""
        total = sum(a["tensor_bytes"] for a in bank["per_article"])
        lines += [
            "",
            "## The knowledge base",
            "",
            f"{bank['memories']} memories absorbed by `MemoryBank.from_documents` (`absorb_many`: side by "
            "side on the fused engine, one after another on the eager one) "
            f"from {bank['tokens']:,} tokens in {bank['wall_s']:.1f} s, {bank['wall_s_per_article']:.1f} s "
            f"per article{loaded}; {_bytes(total)} of memory tensors in all.",
            "",
            "| Article | tokens | steps | tokens trained | final loss | memory |",
            "|---|---|---|---|---|---|",
        ]
        for a in bank["per_article"]:
            loss = "–" if a["final_loss"] is None else f"{a['final_loss']:.3f}"
            lines.append(
                f"| {a['title']} | {a['document_tokens']:,} | {a['steps']:,} | {a['tokens_trained']:,} "
                f"| {loss} | {_bytes(a['tensor_bytes'])} |"
            )
    if whole:
        loaded = f" (loaded from {whole['loaded_from']})" if whole.get("loaded_from") else ""
        lines += [
            "",
            f"The whole-corpus memory: {whole['document_tokens']:,} tokens absorbed into one memory in "
            f"{whole['wall_s']:.1f} s{loaded}, {whole['steps']:,} steps, {_bytes(whole['tensor_bytes'])}.",
        ]
    return lines


def _per_article_table(corpus: dict[str, Any]) -> list[str]:
    per_article = corpus["per_article_f1"]
    arms = list(per_article)
    if not arms:
        return []
    lines = [
        "",
        "## F1 per article",
        "",
        "| Article | " + " | ".join(arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    for title in per_article[arms[0]]:
        lines.append(f"| {title} | " + " | ".join(f"{per_article[a][title] * 100:.1f}" for a in arms) + " |")
    return lines


def _probe_table(general: dict[str, Any] | None) -> list[str]:
    if not general:
        return []
    lines = [
        "",
        "## General ability through the bank's router",
        "",
        "Questions unrelated to the corpus (general knowledge closed book; unrelated text in context), "
        "answered by the base model and with the memory the router chose for each (none: the base model's "
        f"answer stands). The router gave {_rate(general['routed_to_memory'])} of them a memory.",
        "",
        "| Questions | n | F1 base | F1 routed | F1 difference | contains base | contains routed "
        "| contains difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {**PROBE_KINDS, "reading": "unrelated text in context", "all": "both kinds"}
    for kind, stats in general["kinds"].items():
        if not stats["n"]:
            lines.append(f"| {labels[kind]} | 0 |" + " – |" * 6)
            continue
        base, memory, difference = stats["base"], stats["memory"], stats["difference"]
        lines.append(
            f"| {labels[kind]} | {stats['n']} | {_pct(base['f1'])} | {_pct(memory['f1'])} "
            f"| {_pct(difference['f1'], signed=True)} | {_rate(base['contains'])} "
            f"| {_rate(memory['contains'])} "
            f"| {_pct(difference['contains_ci'], signed=True)} |"
        )
    return lines


def write_corpus_outputs(
    report: dict[str, Any], out_dir: str | Path, *, plots: bool = True
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with matplotlib) ``f1_per_arm.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": save_json(report, out / "report.json")}
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(corpus_markdown(report), encoding="utf-8")
    if plots:
        paths["f1_per_arm"] = plot_f1_per_arm(report, out / "f1_per_arm.png")
    return paths
