"""The corpus setting's runner: every corpus arm on every question, routing accuracy, the general-ability
probe through the bank's router, and the report.

The report keeps the other settings' shape where it can (``meta``; ``cases``: one case, setting
``"corpus"``, with every arm's per-question rows and statistics; ``summary``: :func:`summarize`'s), so
``benchmarks/paired_arms.py`` reads it as it is, and adds ``corpus``: routing accuracy, each arm's F1
against the RAG arms (ratio and paired difference), F1 per article, how often retrieval put the question's
own article in context, and the absorption of the bank and of the whole-corpus memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lift_bench.arms import Answer, HarnessSettings
from lift_bench.cases import BenchDocument, BenchQuestion, Case, sample_questions
from lift_bench.compare import (
    GENERAL_QUESTIONS,
    _meta,
    _probe_stats,
    _score,
    arm_stats,
    gains_over_controls,
    general_probe_questions,
    kv_cache_bytes_per_token,
    load_general_questions,
    paired_difference,
    summarize,
    tune_rag,
    untuned_rag,
)
from lift_bench.corpus import Corpus, CorpusResources
from lift_bench.corpus_arms import (
    BANK_ARMS,
    CORPUS_ARM_DESCRIPTIONS,
    CORPUS_ARMS,
    RAG_BASELINES,
    WHOLE_ARMS,
    answer_corpus,
    answer_with_memories,
    make_corpus_arm,
)

if TYPE_CHECKING:
    from lift_integrations.model import LIFTModel

__all__ = ["CONTROL_DESIGN", "absorb_corpus", "routing_accuracy", "run_corpus", "versus"]

CONTROL_DESIGN = (
    "a control arm answers each question of article i with the memory of article i + 1 (the last "
    "article's with the first's: a fixed derangement of the bank, never the question's own article), on "
    "exactly the questions the router gave some memory; the base model answers the rest, as in lift_only. "
    "No memory is absorbed for it: the bank's memories are the controls' too."
)

_CONTROLS = {"lift_only": "control", "hybrid": "control_hybrid"}


def routing_accuracy(
    own: Sequence[str], routed: Sequence[str | None], titles: Sequence[str]
) -> dict[str, Any]:
    """How often the router chose each question's own article's memory (``own``: the questions' bank
    names; ``routed``: the router's, ``None`` for the base model; ``titles``: each question's article).

    ``correct`` + ``none`` + ``wrong`` = 1; per article the same shares, and the most frequent wrong
    choices (own -> chosen) with their counts."""
    if len(own) != len(routed) or len(own) != len(titles) or not own:
        raise ValueError("routing accuracy needs one own name, one routed name and one title per question")

    def shares(pairs: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
        n = len(pairs)
        correct = sum(r == o for o, r in pairs)
        none = sum(r is None for _, r in pairs)
        return {"n": n, "correct": correct / n, "none": none / n, "wrong": (n - correct - none) / n}

    pairs = list(zip(own, routed, strict=True))
    per_article: dict[str, list[tuple[str, str | None]]] = {}
    for title, pair in zip(titles, pairs, strict=True):
        per_article.setdefault(title, []).append(pair)
    wrong = Counter((o, r) for o, r in pairs if r is not None and r != o)
    return {
        **shares(pairs),
        "per_article": {title: shares(p) for title, p in per_article.items()},
        "confusions": [{"own": o, "routed": r, "count": c} for (o, r), c in wrong.most_common(10)],
    }


def versus(rows: dict[str, list[dict[str, Any]]], settings: HarnessSettings) -> dict[str, Any]:
    """Every arm's mean F1 against each RAG arm that ran: the ratio of means and the paired difference
    (mine minus RAG, same questions) with its bootstrap interval."""
    result: dict[str, Any] = {}
    for rag in (r for r in RAG_BASELINES if r in rows):
        rag_f1 = float(np.mean([r["f1"] for r in rows[rag]]))
        for arm, mine in rows.items():
            if arm == rag:
                continue
            f1 = float(np.mean([r["f1"] for r in mine]))
            result.setdefault(arm, {})[rag] = {
                "f1": f1,
                "rag_f1": rag_f1,
                "ratio": f1 / rag_f1 if rag_f1 else None,
                "difference": paired_difference(mine, rows[rag], settings, f"{arm} and {rag}")["f1"],
            }
    return result


def _knowledge(settings: HarnessSettings) -> list[BenchQuestion]:
    if settings.general_questions is not None:
        return list(settings.general_questions)
    return load_general_questions(GENERAL_QUESTIONS) if GENERAL_QUESTIONS.is_file() else []


def corpus_probe(
    lift: LIFTModel,
    resources: CorpusResources,
    unrelated: Sequence[BenchDocument],
    settings: HarnessSettings,
) -> dict[str, Any] | None:
    """The general-ability probe through the bank: unrelated questions (general knowledge closed book,
    unrelated text in context) answered by the base model, and again with the memory the bank's router
    chooses for each; a question routed to none keeps the base model's answer. Without routing
    (``route_memories`` off) every question gets a memory, the bank's in turn, so the probe then measures
    what an always-attached memory costs."""
    corpus = resources.corpus
    everything = BenchDocument("", "", (), tuple(corpus.titles))
    probe = general_probe_questions(
        Case("corpus", everything, everything, tuple(unrelated)), settings, _knowledge(settings)
    )
    if not probe:
        settings.say("  general probe: no questions (no knowledge file, no unrelated text)")
        return None
    start = time.perf_counter()
    prompts = [q.question for q in probe]
    contexts = [None if q.context is None else [q.context] for q in probe]
    base_answers = answer_with_memories(lift, prompts, [None] * len(probe), contexts, settings)
    base = [
        {"kind": q.kind, **_score(q, a), "memory_used": None}
        for q, a in zip(probe, base_answers, strict=True)
    ]
    if settings.route_memories:
        names = list(resources.bank_router().route_many(prompts))
    else:
        names = [corpus.names[i % len(corpus.names)] for i in range(len(probe))]
    asked = [i for i, name in enumerate(names) if name is not None]
    answered = answer_with_memories(
        lift,
        [prompts[i] for i in asked],
        [resources.memory(names[i]) for i in asked],
        [contexts[i] for i in asked],
        settings,
    )
    with_memory = [{**row, "memory_used": False, "memory": None} for row in base]
    for i, answer in zip(asked, answered, strict=True):
        with_memory[i] = {"kind": probe[i].kind, **_score(probe[i], answer), "memory": names[i]}
    kinds = _probe_stats(base, with_memory, settings, kv_cache_bytes_per_token(lift))
    general = {
        "kinds": kinds,
        "questions": {"base": base, "memory": with_memory},
        "routed_to_memory": len(asked) / len(probe),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    all_kinds = kinds["all"]
    settings.say(
        f"  general probe ({all_kinds['n']} questions, {len(asked)} routed to a memory): F1 "
        f"{all_kinds['base']['f1']['mean']:.3f} -> {all_kinds['memory']['f1']['mean']:.3f}"
    )
    return general


def absorb_corpus(lift: LIFTModel, resources: CorpusResources, arms: Sequence[str]) -> dict[str, Any]:
    """Absorb (or load) only what ``arms`` need, keeping it in the bank folder: a run split over several
    processes absorbs first and answers later."""
    if BANK_ARMS.intersection(arms):
        _ = resources.bank
    if WHOLE_ARMS.intersection(arms):
        _ = resources.whole
    return dict(resources.absorptions)


def run_corpus(
    lift: LIFTModel,
    corpus: Corpus,
    arms: Sequence[str | Any],
    settings: HarnessSettings | None = None,
    *,
    unrelated: Sequence[BenchDocument] = (),
    router: Any = None,
    bank_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Answer every corpus question with every arm and return the report (a JSON-serialisable dict).

    ``arms``: names of :data:`~lift_bench.corpus_arms.CORPUS_ARMS` or arm objects. ``unrelated``: text
    outside the corpus for the general-ability probe's reading questions. ``router``: anything with
    ``route_many`` over the bank's names (default: a ``BankRouter`` of the articles). ``bank_dir``: where
    absorbed memories are kept and reused (:class:`~lift_bench.corpus.CorpusResources`).
    """
    settings = settings or HarnessSettings()
    if settings.memory_seeds != 1:
        raise ValueError("the corpus setting absorbs each memory once (memory_seeds must be 1)")
    built = [make_corpus_arm(a, lift, settings) if isinstance(a, str) else a for a in arms]
    names = [a.name for a in built]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    kv_per_token = kv_cache_bytes_per_token(lift)
    started = time.perf_counter()
    lift.generate("Hello.", memory=None, max_new_tokens=2)  # one-off costs outside every arm's clock
    questions = corpus.questions
    tokens = sum(lift.count_tokens(a.full_text) for a in corpus.articles)
    settings.say(
        f"corpus: {len(corpus.articles)} articles, {tokens:,} tokens, {len(questions)} questions "
        f"(window {lift.context_window:,})"
    )
    resources = CorpusResources(
        lift, corpus, settings, router=router, bank_dir=None if bank_dir is None else Path(bank_dir)
    )
    try:
        rag_arms = {"rag_langchain", "rag_llamaindex", "hybrid", "hybrid_whole", "control_hybrid"}
        if settings.tune_rag and rag_arms.intersection(names):
            # Tuned on up to tune_questions questions spread over the articles (round robin), not the
            # first articles' only.
            spread = sample_questions(
                BenchDocument("", "", tuple(questions)), settings.tune_questions, settings.seed
            )
            resources.rag = tune_rag(lift, resources, spread.questions, settings)
        else:
            resources.rag = untuned_rag(settings)
        rows: dict[str, list[dict[str, Any]]] = {}
        prepare_s: dict[str, float] = {}
        for arm in built:
            start = time.perf_counter()
            answers, labels = answer_corpus(arm, resources)
            answering = sum(a.total_s for a in answers)
            prepare_s[arm.name] = round(max(0.0, time.perf_counter() - start - answering), 3)
            rows[arm.name] = [
                _row(resources, q, a, None if labels is None else labels[i])
                for i, (q, a) in enumerate(zip(questions, answers, strict=True))
            ]
            stats = arm_stats(rows[arm.name], settings, kv_per_token)
            settings.say(
                f"  {arm.name:<15} F1 {stats['f1']['mean']:.3f}  EM {stats['em']['mean']:.3f}  "
                f"contains {stats['contains']:.2f}  {stats['total_s_mean']:.2f} s/question"
            )
        routing = None
        if resources.routed and settings.route_memories:
            routing = routing_accuracy(
                [corpus.name_of(q.source) for q in questions], resources.routes, [q.source for q in questions]
            )
            routing["route_s"] = resources.absorptions.get("route_s")
            settings.say(
                f"  routing: {routing['correct']:.1%} to the own article's memory, {routing['none']:.1%} "
                f"to none, {routing['wrong']:.1%} to another"
            )
        general = None
        if resources.has_bank and settings.general_probe > 0:
            general = corpus_probe(lift, resources, unrelated, settings)
        record = _record(lift, corpus, resources, rows, prepare_s, general, tokens, kv_per_token, settings)
    finally:
        resources.close()
    meta = _meta(lift, settings, names, kv_per_token, round(time.perf_counter() - started, 3))
    meta.update(
        {
            "setting": "corpus",
            "arm_descriptions": {a: CORPUS_ARM_DESCRIPTIONS.get(a, "custom arm") for a in names},
            "controls": {arm: c for arm, c in _CONTROLS.items() if arm in names and c in names},
            "control_design": CONTROL_DESIGN,
            "routing": "bank_router" if settings.route_memories else "oracle",
            "bank_routing": _routing_options(resources.router),
            "all_arms": list(CORPUS_ARMS),
        }
    )
    return {
        "meta": meta,
        "cases": [record],
        "summary": summarize([record], settings, kv_per_token),
        "corpus": _corpus_section(corpus, resources, rows, routing, tokens, settings),
    }


def _routing_options(router: object) -> dict[str, Any] | None:
    """The options a bank router routed with (``None`` for any other router): what a later re-routing of
    the report (``benchmarks/route_corpus_report.py``) compares its rules with."""
    from lift_integrations.bank_router import BankRouting

    options = getattr(router, "routing", None)
    return options.to_dict() if isinstance(options, BankRouting) else None


def _row(
    resources: CorpusResources, question: BenchQuestion, answer: Answer, label: str | None
) -> dict[str, Any]:
    """A scored row, with the memory the answer used and whether its chunks held its own article."""
    row = {**_score(question, answer), "memory": label}
    if answer.context is not None:
        row["own_article_in_context"] = any(
            resources.chunk_article(chunk) == question.source for chunk in answer.context
        )
    return row


def _record(
    lift: LIFTModel,
    corpus: Corpus,
    resources: CorpusResources,
    rows: dict[str, list[dict[str, Any]]],
    prepare_s: dict[str, float],
    general: dict[str, Any] | None,
    tokens: int,
    kv_per_token: int,
    settings: HarnessSettings,
) -> dict[str, Any]:
    """The corpus as one case in the other settings' record format."""
    return {
        "setting": "corpus",
        "document": f"corpus of {len(corpus.articles)} articles",
        "sources": corpus.titles,
        "document_tokens": tokens,
        "fits_window": tokens + settings.max_new_tokens + 64 <= lift.context_window,
        "kv_cache_bytes_document": tokens * kv_per_token,
        "control": "the next article's memory (derangement)",
        "control_tokens": tokens,
        "rag": resources.rag,
        "absorption": {},  # the corpus's memories are reported under "corpus" (a bank, not one document)
        "prepare_s": prepare_s,
        "arms": {name: arm_stats(r, settings, kv_per_token) for name, r in rows.items()},
        "gains": gains_over_controls(rows, settings),
        "questions": rows,
        "memory_seeds": None,
        "general": general,
    }


def _corpus_section(
    corpus: Corpus,
    resources: CorpusResources,
    rows: dict[str, list[dict[str, Any]]],
    routing: dict[str, Any] | None,
    tokens: int,
    settings: HarnessSettings,
) -> dict[str, Any]:
    per_article = {
        arm: {
            title: float(np.mean([r["f1"] for r in arm_rows if r["source"] == title]))
            for title in corpus.titles
        }
        for arm, arm_rows in rows.items()
    }
    retrieval = {
        arm: float(np.mean([r["own_article_in_context"] for r in arm_rows]))
        for arm, arm_rows in rows.items()
        if arm_rows and "own_article_in_context" in arm_rows[0]
    }
    return {
        "articles": [
            {"title": a.title, "name": n, "questions": len(a.questions)}
            for a, n in zip(corpus.articles, corpus.names, strict=True)
        ],
        "tokens": tokens,
        "questions": len(corpus.questions),
        "routing": routing,
        "own_article_in_context": retrieval,
        "versus_rag": versus(rows, settings),
        "per_article_f1": per_article,
        "bank": resources.absorptions.get("bank"),
        "whole": resources.absorptions.get("whole"),
        "control_design": CONTROL_DESIGN,
    }
