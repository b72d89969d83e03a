"""The RAG-versus-LIFT harness: run every arm on the cases (:mod:`lift_bench.cases`), score and summarise.

Honest-reporting rules the harness enforces rather than leaves to the reader:

* every arm answers the same questions with the same model, decoding and answer prompt;
* scores are SQuAD EM/F1 with the official normalisation, each with a bootstrap 95% interval;
* a memory arm's gain is reported against its control arm (paired bootstrap over the same questions),
  next to its raw score, because training any memory changes answers even without new knowledge;
* RAG's chunk size and ``k`` are tuned for RAG's benefit (on the evaluation questions themselves when
  ``tune_rag`` is set, which can only flatter RAG), never for LIFT's;
* a memory must not cost general ability: whenever an arm made the document's memory, the *general-ability
  probe* asks unrelated questions (general knowledge closed book, and unrelated SQuAD paragraphs read in
  context) of the base model and of the model with that memory, and reports the paired difference.

``examples/compare_rag.py`` is the command-line front end; :func:`run_comparison` is the API.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lift_bench.arms import (
    ALL_ARMS,
    ARM_DESCRIPTIONS,
    CONTROL_OF,
    Answer,
    Arm,
    CaseResources,
    HarnessSettings,
    answer_all,
    batch_answers,
    langchain_rag_chain,
    make_arm,
    retrieve_and_answer,
    stream_answer,
)
from lift_bench.cases import BenchDocument, BenchQuestion, Case, sample_questions
from lift_bench.squad import bootstrap_ci, exact_match, f1_score, normalize_answer

if TYPE_CHECKING:
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel
    from lift_integrations.routing import MemoryRouter

__all__ = [
    "GENERAL_QUESTIONS",
    "PROBE_KINDS",
    "QUICK_ARMS",
    "RAG_ARMS",
    "HarnessSettings",
    "ProbeQuestion",
    "arm_stats",
    "combine_probes",
    "contains_gold",
    "gains_over_controls",
    "general_probe_questions",
    "kv_cache_bytes_per_token",
    "load_general_questions",
    "mean_over_seeds",
    "paired_difference",
    "run_comparison",
    "run_general_probe",
    "seed_means",
    "summarize",
    "tune_rag",
]

QUICK_ARMS: tuple[str, ...] = (
    "closed_book",
    "icl",
    "rag_langchain",
    "lift_only",
    "hybrid",
    "control",
    "control_hybrid",
)
"""The arms of ``make demo``: every kind of arm once, and the controls the memory arms need."""

RAG_ARMS = frozenset({"rag_langchain", "rag_llamaindex", "hybrid", "control_hybrid"})
"""Arms whose chunk size and ``k`` come from RAG tuning."""

PROBE_KINDS: dict[str, str] = {
    "knowledge": "general knowledge, closed book",
    "reading": "an unrelated SQuAD paragraph in context",
}
"""The two kinds of general-ability probe question; reports add ``"all"``, both pooled."""

GENERAL_QUESTIONS = Path(__file__).resolve().parents[1] / "examples" / "data" / "general_questions.json"
"""The bundled general-knowledge questions (written for this project, CC0), in a source checkout."""


# Scoring ---------------------------------------------------------------------------------------------


def contains_gold(prediction: str, gold: str) -> bool:
    """Whether the normalised gold answer appears as whole words in the normalised prediction.

    SmolLM-size models answer in sentences, so exact match is near zero even when the answer is right;
    this rate shows that. Whole words, so a gold "1" is not found inside "1973".
    """
    needle = normalize_answer(gold)
    return bool(needle) and f" {needle} " in f" {normalize_answer(prediction)} "


def kv_cache_bytes_per_token(lift: LIFTModel) -> int:
    """KV-cache bytes per token of context: 2 (K and V) x layers x KV heads x head dim x element size."""
    config = lift.model.config
    config = getattr(config, "text_config", None) or config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    element = int(lift.dtype.itemsize)
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * element


def _ci(values: Sequence[float], settings: HarnessSettings) -> dict[str, float]:
    mean, low, high = bootstrap_ci(values, n_resamples=settings.bootstrap_resamples, seed=settings.seed)
    return {"mean": mean, "low": low, "high": high}


def arm_stats(rows: Sequence[dict[str, Any]], settings: HarnessSettings, kv_per_token: int) -> dict[str, Any]:
    """Pooled statistics of one arm over its per-question rows."""
    in_context = [r["gold_in_context"] for r in rows if r["gold_in_context"] is not None]
    routed = [r["memory_used"] for r in rows if r.get("memory_used") is not None]
    prompt = [r["prompt_tokens"] for r in rows]
    return {
        "n": len(rows),
        "em": _ci([r["em"] for r in rows], settings),
        "f1": _ci([r["f1"] for r in rows], settings),
        "contains": float(np.mean([r["contains"] for r in rows])),
        "gold_in_context": float(np.mean(in_context)) if in_context else None,
        "memory_used": float(np.mean(routed)) if routed else None,
        "prompt_tokens_mean": float(np.mean(prompt)),
        "kv_cache_bytes_prompt_mean": float(np.mean(prompt)) * kv_per_token,
        "ttft_s_mean": float(np.mean([r["ttft_s"] for r in rows])),
        "ttft_s_median": float(np.median([r["ttft_s"] for r in rows])),
        "total_s_mean": float(np.mean([r["total_s"] for r in rows])),
        "total_s_median": float(np.median([r["total_s"] for r in rows])),
    }


def paired_difference(
    mine: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]], settings: HarnessSettings, what: str
) -> dict[str, Any]:
    """``mine`` minus ``theirs``, per question (same questions, same order), with paired bootstrap intervals:
    pairing removes the between-question spread, so the interval is about the difference alone."""
    if [r["question"] for r in mine] != [r["question"] for r in theirs]:
        raise AssertionError(f"{what} answered different questions")
    pairs = list(zip(mine, theirs, strict=True))
    contains = [a["contains"] - b["contains"] for a, b in pairs]
    return {
        "f1": _ci([a["f1"] - b["f1"] for a, b in pairs], settings),
        "em": _ci([a["em"] - b["em"] for a, b in pairs], settings),
        "contains": float(np.mean(contains)),
        "contains_ci": _ci(contains, settings),
    }


def gains_over_controls(rows: dict[str, list[dict[str, Any]]], settings: HarnessSettings) -> dict[str, Any]:
    """Each memory arm minus its control, per question (same questions, same order): paired intervals."""
    gains: dict[str, Any] = {}
    for arm, control in CONTROL_OF.items():
        if arm in rows and control in rows:
            paired = paired_difference(rows[arm], rows[control], settings, f"{arm} and {control}")
            gains[arm] = {"control": control, **paired}
    return gains


# RAG tuning ------------------------------------------------------------------------------------------


def untuned_rag(settings: HarnessSettings) -> dict[str, Any]:
    """RAG's settings as the command line gave them (``--no-tune-rag``)."""
    return {
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.overlap,
        "k": settings.k,
        "tuned": False,
    }


def tune_rag(
    lift: LIFTModel, resources: CaseResources, questions: Sequence[BenchQuestion], settings: HarnessSettings
) -> dict[str, Any]:
    """Pick chunk size and ``k`` for RAG's benefit: the grid point with the best mean F1 of plain RAG.

    It is scored on (up to ``tune_questions`` of) the evaluation questions themselves, an oracle choice
    that can only flatter RAG; ties go to the higher contains-gold rate, then to the shorter prompt.
    """
    grid = []
    asked = list(questions)[: settings.tune_questions]
    for chunk_size in settings.rag_chunk_sizes:
        overlap = (
            chunk_size // 8 if settings.chunk_overlap is None else min(settings.chunk_overlap, chunk_size - 1)
        )
        store = resources.langchain_store(chunk_size, overlap)
        for k in settings.rag_ks:
            retriever = store.as_retriever(search_kwargs={"k": k})
            f1s, hits, tokens = [], [], []
            if settings.answer_batch > 1:
                answers = retrieve_and_answer(retriever, lift, [q.question for q in asked], None, settings)
                replies = [(a.text, a.prompt_tokens) for a in answers]
            else:
                record: dict[str, Any] = {}
                chain = langchain_rag_chain(
                    retriever, lift, memory=None, max_new_tokens=settings.max_new_tokens, record=record
                )
                replies = []
                for q in asked:
                    text = chain.invoke(q.question)
                    replies.append((text, record["result"].input_tokens))
            for q, (text, prompt_tokens) in zip(asked, replies, strict=True):
                f1s.append(f1_score(text, q.answer))
                hits.append(contains_gold(text, q.answer))
                tokens.append(prompt_tokens)
            grid.append(
                {
                    "chunk_size": chunk_size,
                    "chunk_overlap": overlap,
                    "k": k,
                    "f1": float(np.mean(f1s)),
                    "contains": float(np.mean(hits)),
                    "prompt_tokens": float(np.mean(tokens)),
                }
            )
            settings.say(
                f"  tune RAG chunk={chunk_size} k={k}: F1 {grid[-1]['f1']:.3f}, "
                f"contains {grid[-1]['contains']:.2f}, {grid[-1]['prompt_tokens']:.0f} prompt tokens"
            )
    best = max(grid, key=lambda g: (g["f1"], g["contains"], -g["prompt_tokens"]))
    return {
        "chunk_size": best["chunk_size"],
        "chunk_overlap": best["chunk_overlap"],
        "k": best["k"],
        "tuned": True,
        "tuned_on": len(asked),
        "grid": grid,
    }


# Running ---------------------------------------------------------------------------------------------


def _score(question: BenchQuestion | ProbeQuestion, answer: Answer) -> dict[str, Any]:
    gold_in_context = None
    if answer.context is not None:
        gold_in_context = any(contains_gold(chunk, question.answer) for chunk in answer.context)
    return {
        "question": question.question,
        "gold": question.answer,
        "source": question.source,
        "answer": answer.text,
        "em": exact_match(answer.text, question.answer),
        "f1": f1_score(answer.text, question.answer),
        "contains": float(contains_gold(answer.text, question.answer)),
        "gold_in_context": gold_in_context,
        "prompt_tokens": answer.prompt_tokens,
        "ttft_s": round(answer.ttft_s, 4),
        "total_s": round(answer.total_s, 4),
        "memory_used": answer.memory_used,
    }


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)

    def __call__(self) -> float:
        return round(time.perf_counter() - self.start, 3)


# General-ability probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeQuestion:
    """A question of the general-ability probe, unrelated to every document of the run.

    ``kind`` is a key of :data:`PROBE_KINDS`: ``"knowledge"`` questions are asked bare (closed book),
    ``"reading"`` ones with ``context``, the paragraph of an unrelated SQuAD article they were written
    against, in the answer prompt the ``icl`` and RAG arms use. The first kind shows whether a memory
    overwrites what the model knew, the second whether it damages reading text it has not absorbed.
    """

    kind: str
    question: str
    answer: str
    source: str
    context: str | None = field(default=None, repr=False)


def load_general_questions(path: str | Path = GENERAL_QUESTIONS) -> list[BenchQuestion]:
    """Read a JSON list of ``{"question", "answer", "topic"}`` objects (topic optional).

    The topic becomes the question's source, so sampling spreads the probe over topics. A malformed entry
    raises rather than being skipped: a silently shorter probe would change its scores unnoticed.
    """
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    questions = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), str) and entry[key].strip() for key in ("question", "answer")
        ):
            raise ValueError(f"{path}: entry {index} needs non-empty 'question' and 'answer' strings")
        topic = str(entry.get("topic") or "general")
        questions.append(BenchQuestion(entry["question"], entry["answer"], topic))
    return questions


def _knowledge_questions(settings: HarnessSettings) -> list[BenchQuestion]:
    """The settings' knowledge questions, else the bundled file; none (with a note) when it is missing,
    as in an installed wheel, so a run without them still measures the reading kind."""
    if settings.general_questions is not None:
        return list(settings.general_questions)
    if GENERAL_QUESTIONS.is_file():
        return load_general_questions(GENERAL_QUESTIONS)
    settings.say(f"general probe: {GENERAL_QUESTIONS} not found; set HarnessSettings.general_questions")
    return []


def general_probe_questions(
    case: Case, settings: HarnessSettings, knowledge: Sequence[BenchQuestion] | None = None
) -> tuple[ProbeQuestion, ...]:
    """Up to ``settings.general_probe`` questions of each kind for ``case``: knowledge questions (default:
    the bundled ones) spread over topics, reading questions spread over the case's unrelated articles.

    Sampling is seeded, so every case of a run, every arm setting and every rerun get the same questions.
    A reading question needs its paragraph, with the gold answer in it (SQuAD answers are spans of their
    paragraph; a question whose answer is not there would test recall, not reading). Articles of the case's
    own document are skipped even when a hand-built case lists them as unrelated.
    """
    n = settings.general_probe
    if n <= 0:
        return ()
    if knowledge is None:
        knowledge = _knowledge_questions(settings)
    picked = sample_questions(BenchDocument("", "", tuple(knowledge)), n, settings.seed).questions
    probe = [ProbeQuestion("knowledge", q.question, q.answer, q.source) for q in picked]
    own = {case.document.title, *case.document.sources} - {""}
    readable = tuple(
        q
        for document in case.unrelated
        for q in document.questions
        if q.paragraph and q.source not in own and q.answer in q.paragraph
    )
    picked = sample_questions(BenchDocument("", "", readable), n, settings.seed + 1).questions
    probe += [ProbeQuestion("reading", q.question, q.answer, q.source, q.paragraph) for q in picked]
    return tuple(probe)


def _probe_rows(
    lift: LIFTModel,
    questions: Sequence[ProbeQuestion],
    memory: Memory | None,
    settings: HarnessSettings,
) -> list[dict[str, Any]]:
    if not questions:
        return []
    contexts = [None if q.context is None else [q.context] for q in questions]
    if settings.answer_batch > 1:
        prompts = [q.question for q in questions]
        answers = batch_answers(lift, prompts, memory=memory, contexts=contexts, settings=settings)
    else:
        answers = [
            stream_answer(
                lift,
                q.question,
                memory=memory,
                context=c,
                max_new_tokens=settings.max_new_tokens,
            )
            for q, c in zip(questions, contexts, strict=True)
        ]
    return [{"kind": q.kind, **_score(q, a)} for q, a in zip(questions, answers, strict=True)]


def _probe_stats(
    base: Sequence[dict[str, Any]],
    memory: Sequence[dict[str, Any]],
    settings: HarnessSettings,
    kv_per_token: int,
) -> dict[str, Any]:
    """Per kind and for both kinds (``"all"``): base and with-memory statistics, and the paired difference
    (with memory minus base) with bootstrap intervals. A kind without questions has ``n`` 0 and ``None``s."""
    stats: dict[str, Any] = {}
    for kind in (*PROBE_KINDS, "all"):
        keep = [i for i, row in enumerate(base) if kind in ("all", row["kind"])]
        theirs, mine = [base[i] for i in keep], [memory[i] for i in keep]
        stats[kind] = {
            "n": len(keep),
            "base": arm_stats(theirs, settings, kv_per_token) if keep else None,
            "memory": arm_stats(mine, settings, kv_per_token) if keep else None,
            "difference": paired_difference(mine, theirs, settings, "the probe with and without memory")
            if keep
            else None,
        }
    return stats


def run_general_probe(
    lift: LIFTModel,
    memory: Memory,
    questions: Sequence[ProbeQuestion],
    settings: HarnessSettings,
    base_rows: dict[ProbeQuestion, dict[str, Any]] | None = None,
    router: MemoryRouter | None = None,
) -> dict[str, Any]:
    """Answer the probe questions with the base model and with ``memory``: is the model with a document's
    memory any worse at what it could do before? Returns per-kind statistics and every answer's row.
    With a ``router``, "with the memory" means through it: the memory answers only what it routes to it,
    and a question routed away keeps the base model's row, its latency included (routing time is not
    added, so the probe's latencies are not the arms').

    Decoding and answer length are the arms'. ``base_rows`` caches the base model's rows across cases: they
    do not depend on the case (greedy decoding, no memory), so each question costs the base model one
    answer per run however many cases ask it. All base answers come first, then all answers with the
    memory, so the adapter is switched once rather than per question.
    """
    cache = base_rows if base_rows is not None else {}
    missing = [question for question in questions if question not in cache]
    cache.update(zip(missing, _probe_rows(lift, missing, None, settings), strict=True))
    base = [cache[question] for question in questions]
    if router is None:
        with_memory = _probe_rows(lift, questions, memory, settings)
    else:
        # A question routed away is the base model's to answer, and its answer to this very prompt is
        # in ``base``: reusing it keeps batch composition (bf16 rounding on a GPU) out of the difference.
        routed = router.wants([q.question for q in questions])
        asked = [q for q, use in zip(questions, routed, strict=True) if use]
        answered = iter(_probe_rows(lift, asked, memory, settings))
        with_memory = [
            {**(next(answered) if use else row), "memory_used": use}
            for row, use in zip(base, routed, strict=True)
        ]
    return {
        "kinds": _probe_stats(base, with_memory, settings, kv_cache_bytes_per_token(lift)),
        "questions": {"base": base, "memory": with_memory},
    }


def _say_probe(general: dict[str, Any], settings: HarnessSettings) -> None:
    for kind, stats in general["kinds"].items():
        if kind != "all" and stats["n"]:
            base, memory, difference = stats["base"], stats["memory"], stats["difference"]
            settings.say(
                f"  general probe, {kind} ({stats['n']}): F1 {base['f1']['mean']:.3f} -> "
                f"{memory['f1']['mean']:.3f} ({difference['f1']['mean']:+.3f}), contains "
                f"{base['contains']:.2f} -> {memory['contains']:.2f} with the memory"
            )


def _uses_memory(arm: Arm) -> bool:
    """Whether the arm answers with a memory (the document's or the control's), so that each memory
    seed answers again with it; an arm of another kind (or a custom arm without ``source``) runs once."""
    return getattr(arm, "source", None) in ("document", "control")


def _run_arm(
    arm: Arm,
    resources: CaseResources,
    questions: Sequence[BenchQuestion],
    settings: HarnessSettings,
    kv_per_token: int,
) -> tuple[list[dict[str, Any]], float]:
    """Prepare ``arm`` and answer every question with it: the scored rows and the seconds preparing took."""
    timer = _Timer()
    arm.prepare(resources)
    seconds = timer()
    answers = answer_all(arm, [q.question for q in questions], settings)
    rows = [_score(q, a) for q, a in zip(questions, answers, strict=True)]
    stats = arm_stats(rows, settings, kv_per_token)
    settings.say(
        f"  {arm.name:<15} F1 {stats['f1']['mean']:.3f}  EM {stats['em']['mean']:.3f}  "
        f"contains {stats['contains']:.2f}  {stats['total_s_mean']:.2f} s/question"
    )
    return rows, seconds


def _probe_case(
    lift: LIFTModel,
    case: Case,
    resources: CaseResources,
    settings: HarnessSettings,
    knowledge: Sequence[BenchQuestion],
    base_rows: dict[ProbeQuestion, dict[str, Any]],
) -> dict[str, Any] | None:
    """The general-ability probe with the case's document memory, if an arm made one (it never absorbs)."""
    memory = resources.absorbed("document")
    if memory is None or settings.general_probe <= 0:
        return None
    probe = general_probe_questions(case, settings, knowledge)
    if not probe:
        settings.say("  general probe: no questions (no knowledge file, no unrelated articles)")
        return None
    timer = _Timer()
    router = resources.router()
    general = run_general_probe(lift, memory, probe, settings, base_rows, router)
    general["wall_s"] = timer()
    _say_probe(general, settings)
    return general


def mean_over_seeds(runs: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per question from the rows of several absorption seeds (same questions, same order):
    scores and latencies are the mean over seeds, ``answer`` is the first seed's and ``answers`` all of
    them. Averaging per question keeps the bootstrap over questions and the pairing with controls."""
    if len(runs) == 1:
        return runs[0]
    merged = []
    for rows in zip(*runs, strict=True):
        if len({r["question"] for r in rows}) != 1:
            raise AssertionError("memory seeds answered different questions")
        row = dict(rows[0])
        for key in ("em", "f1", "contains", "ttft_s", "total_s"):
            row[key] = float(np.mean([r[key] for r in rows]))
        row["answers"] = [r["answer"] for r in rows]
        merged.append(row)
    return merged


def seed_means(runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, list[float]]:
    """Each memory arm's mean F1 under each seed: how much one training run moves the arm."""
    return {
        name: [float(np.mean([r["f1"] for r in rows])) for rows in per_seed]
        for name, per_seed in runs.items()
        if len(per_seed) > 1
    }


def combine_probes(
    probes: Sequence[dict[str, Any]], settings: HarnessSettings, kv_per_token: int
) -> dict[str, Any] | None:
    """The probe over several seeds' document memories: each question's with-memory row is the mean over
    the seeds, against the base model's row (which no seed changes)."""
    if len(probes) <= 1:
        return probes[0] if probes else None
    base = probes[0]["questions"]["base"]
    memory = mean_over_seeds([p["questions"]["memory"] for p in probes])
    return {
        "kinds": _probe_stats(base, memory, settings, kv_per_token),
        "questions": {"base": base, "memory": memory},
        "wall_s": sum(p["wall_s"] for p in probes),
        "seeds": len(probes),
    }


def run_comparison(
    lift: LIFTModel,
    cases: Sequence[Case],
    arms: Sequence[str | Arm],
    settings: HarnessSettings | None = None,
) -> dict[str, Any]:
    """Answer every case's questions with every arm and return the report (a JSON-serialisable dict).

    ``arms``: names from :data:`~lift_bench.arms.ALL_ARMS` or :class:`Arm` objects (any
    object with ``name``, ``prepare`` and ``answer``). The report holds ``meta`` (model, recipe, settings),
    ``cases`` (per-question rows, absorption and memory sizes, per-arm statistics) and ``summary`` (per
    setting: per-arm statistics pooled over its cases, and each memory arm's gain over its control).

    When an arm made the case's document memory and ``settings.general_probe`` is positive, the
    general-ability probe (:func:`run_general_probe`) runs with that same memory before it is released:
    each case's ``general`` (``None`` otherwise) and each setting's pooled ``general`` in the summary.

    With ``settings.memory_seeds`` above 1, every memory is absorbed once per seed and the arms that use
    one (and the probe) answer once per seed; their per-question scores are the mean over seeds, and each
    case's ``memory_seeds`` gives every such arm's F1 under each seed.
    """
    settings = settings or HarnessSettings()
    built: list[Arm] = [make_arm(a, lift, settings) if isinstance(a, str) else a for a in arms]
    names = [a.name for a in built]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    kv_per_token = kv_cache_bytes_per_token(lift)
    clock = _Timer()
    # One untimed generation first: the first call pays one-off costs (allocator, kernels, lazy imports)
    # that would otherwise be charged to whichever arm happens to run first.
    lift.generate("Hello.", memory=None, max_new_tokens=2)
    knowledge = _knowledge_questions(settings) if settings.general_probe > 0 else []
    base_rows: dict[ProbeQuestion, dict[str, Any]] = {}
    records = []
    for number, case in enumerate(cases, 1):
        doc = case.document
        doc_tokens = lift.count_tokens(doc.full_text)
        settings.say(
            f"[{number}/{len(cases)}] {case.setting}: {doc.label!r}, {doc_tokens:,} tokens, "
            f"{len(doc.questions)} questions (window {lift.context_window:,})"
        )
        resources = CaseResources(lift, case, settings)
        try:
            if settings.tune_rag and RAG_ARMS.intersection(names):
                resources.rag = tune_rag(lift, resources, doc.questions, settings)
            else:
                resources.rag = untuned_rag(settings)
            runs: dict[str, list[list[dict[str, Any]]]] = {}
            prepare_s: dict[str, float] = {}
            probes: list[dict[str, Any]] = []
            memory_arms = [arm for arm in built if _uses_memory(arm)]
            for repeat in range(settings.memory_seeds if memory_arms else 1):
                if repeat:
                    resources.next_memory_seed()
                    settings.say(f"  memory seed {repeat + 1} of {settings.memory_seeds}")
                for arm in memory_arms if repeat else built:
                    rows_once, seconds = _run_arm(arm, resources, doc.questions, settings, kv_per_token)
                    runs.setdefault(arm.name, []).append(rows_once)
                    prepare_s.setdefault(arm.name, seconds)
                general_once = _probe_case(lift, case, resources, settings, knowledge, base_rows)
                if general_once is not None:
                    probes.append(general_once)
            rows = {name: mean_over_seeds(runs[name]) for name in names}
            general = combine_probes(probes, settings, kv_per_token)
            records.append(
                {
                    "setting": case.setting,
                    "document": doc.label,
                    "sources": list(doc.sources),
                    "document_tokens": doc_tokens,
                    "fits_window": doc_tokens + settings.max_new_tokens + 64 <= lift.context_window,
                    "kv_cache_bytes_document": doc_tokens * kv_per_token,
                    "control": case.control.label,
                    "control_tokens": lift.count_tokens(case.control.full_text),
                    "rag": resources.rag,
                    "absorption": {k: v.to_dict() for k, v in resources.absorptions.items()},
                    "prepare_s": prepare_s,
                    "arms": {name: arm_stats(r, settings, kv_per_token) for name, r in rows.items()},
                    "gains": gains_over_controls(rows, settings),
                    "questions": rows,
                    "memory_seeds": seed_means(runs) if settings.memory_seeds > 1 else None,
                    "general": general,
                }
            )
        finally:
            resources.close()
    return {
        "meta": _meta(lift, settings, names, kv_per_token, clock()),
        "cases": records,
        "summary": summarize(records, settings, kv_per_token),
    }


def summarize(
    records: Sequence[dict[str, Any]], settings: HarnessSettings, kv_per_token: int
) -> dict[str, Any]:
    """A report's ``summary`` from its case records: per setting, every arm's statistics pooled over the
    setting's cases, each memory arm's gain over its control and the pooled probe. Public so that reports
    run apart (one process per article) can be pooled afterwards (``benchmarks/merge_reports.py``)."""
    summary: dict[str, Any] = {}
    for setting in dict.fromkeys(r["setting"] for r in records):
        cases = [r for r in records if r["setting"] == setting]
        pooled: dict[str, list[dict[str, Any]]] = {}
        for case in cases:
            for arm, rows in case["questions"].items():
                pooled.setdefault(arm, []).extend(rows)
        absorbed = [  # the document memories of every case and memory seed
            a for c in cases for key, a in c["absorption"].items() if key.partition("@")[0] == "document"
        ]
        summary[setting] = {
            "documents": len(cases),
            "questions": len(next(iter(pooled.values()))) if pooled else 0,
            "document_tokens_mean": float(np.mean([c["document_tokens"] for c in cases])),
            "kv_cache_bytes_document_mean": float(np.mean([c["kv_cache_bytes_document"] for c in cases])),
            "absorb_wall_s_mean": float(np.mean([a["wall_s"] for a in absorbed])) if absorbed else None,
            "absorb_tokens_per_s_mean": float(np.mean([a["tokens_per_s"] for a in absorbed]))
            if absorbed
            else None,
            "memory_disk_bytes_mean": float(np.mean([a["disk_bytes"] for a in absorbed]))
            if absorbed
            else None,
            "memory_tensor_bytes_mean": float(np.mean([a["tensor_bytes"] for a in absorbed]))
            if absorbed
            else None,
            "arms": {arm: arm_stats(rows, settings, kv_per_token) for arm, rows in pooled.items()},
            "gains": gains_over_controls(pooled, settings),
            "general": _pooled_probe(cases, settings, kv_per_token),
        }
    return summary


def _pooled_probe(
    cases: Sequence[dict[str, Any]], settings: HarnessSettings, kv_per_token: int
) -> dict[str, Any] | None:
    """The probe pooled over a setting's cases: pairs are (case, question), each case's memory against the
    base model on the same question; ``None`` when no case ran the probe."""
    probed = [c["general"] for c in cases if c.get("general")]
    if not probed:
        return None
    base = [row for g in probed for row in g["questions"]["base"]]
    memory = [row for g in probed for row in g["questions"]["memory"]]
    return {"documents": len(probed), "kinds": _probe_stats(base, memory, settings, kv_per_token)}


def _meta(
    lift: LIFTModel, settings: HarnessSettings, arms: list[str], kv_per_token: int, wall_s: float
) -> dict[str, Any]:
    import torch

    config = settings.absorb_config
    versions = {}
    for package in ("torch", "transformers", "langchain_core", "llama_index.core", "sentence_transformers"):
        try:
            module = __import__(package, fromlist=["__version__"])
            versions[package] = getattr(module, "__version__", "?")
        except ImportError:
            versions[package] = None
    return {
        "model": lift.name,
        "device": str(lift.device),
        "dtype": str(lift.dtype).removeprefix("torch."),
        "context_window": lift.context_window,
        "adapter": lift.adapter,
        "kv_cache_bytes_per_token": kv_per_token,
        "absorb_config": config.to_dict() if config is not None else "default for the device",
        "arms": arms,
        "arm_descriptions": {a: ARM_DESCRIPTIONS.get(a, "custom arm") for a in arms},
        "controls": CONTROL_OF,
        "max_new_tokens": settings.max_new_tokens,
        "decoding": "greedy",
        "rag_defaults": {
            "chunk_size": settings.chunk_size,
            "chunk_overlap": settings.overlap,
            "k": settings.k,
            "tune_rag": settings.tune_rag,
            "grid_chunk_sizes": list(settings.rag_chunk_sizes),
            "grid_ks": list(settings.rag_ks),
        },
        "langchain_embeddings": _type_name(settings.langchain_embeddings),
        "llamaindex_embed_model": _type_name(settings.llamaindex_embed_model),
        "llamaindex_stock_prompt": settings.llamaindex_stock_prompt,
        "answer_batch": settings.answer_batch,
        "general_probe": {
            "questions_per_kind": settings.general_probe,
            "kinds": PROBE_KINDS,
            "knowledge_questions": "HarnessSettings.general_questions"
            if settings.general_questions is not None
            else str(GENERAL_QUESTIONS),
        },
        "seed": settings.seed,
        "memory_seeds": settings.memory_seeds,
        "route_memories": settings.route_memories,
        "absorb_config_seeds": [
            (config.seed if config is not None else settings.seed) + offset
            for offset in range(settings.memory_seeds)
        ],
        "bootstrap_resamples": settings.bootstrap_resamples,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "wall_s": wall_s,
        "all_arms": list(ALL_ARMS),
    }


def _type_name(value: Any) -> str | None:
    """The class name of an embedder, or ``None`` when no arm needed one."""
    return type(value).__name__ if value is not None else None


def save_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as indented UTF-8 JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return path
