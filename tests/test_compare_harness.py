"""The RAG-versus-LIFT harness end to end on a tiny in-process model: every arm answers every question,
scores and intervals are in range, each memory arm is compared with its control, the general-ability probe
reuses the arms' memory, and the JSON, Markdown and PNG outputs are written. Quality is not asserted (the
model is random); the plumbing is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
pytest.importorskip("matplotlib")

from tiny_models import build_tiny_model

from lift_bench.arms import (
    ALL_ARMS,
    CONTROL_OF,
    CaseResources,
    HarnessSettings,
    icl_context,
    langchain_rag_chain,
    make_arm,
    split_by_tokens,
)
from lift_bench.cases import (
    BenchDocument,
    BenchQuestion,
    Case,
    build_cases,
    control_document,
    sample_questions,
)
from lift_bench.compare import (
    GENERAL_QUESTIONS,
    PROBE_KINDS,
    contains_gold,
    general_probe_questions,
    kv_cache_bytes_per_token,
    load_general_questions,
    run_comparison,
)
from lift_bench.report import markdown_report, write_outputs
from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.documents import Document

MAX_NEW_TOKENS = 6
GENERAL = 3  # general-probe questions per kind


def _document(title: str, paragraphs: list[str], qa: list[tuple[str, str, int]]) -> BenchDocument:
    return BenchDocument(
        title=title,
        text="\n\n".join(paragraphs),
        questions=tuple(BenchQuestion(q, a, title, paragraphs[i]) for q, a, i in qa),
        sources=(title,),
    )


ZORBLAT = _document(
    "Zorblat Institute",
    [
        "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. Its first "
        "building stood on the north bank of the river Ost, next to the old salt market.",
        "Its first director was Tobias Renwick, who studied glass harps and river tides. Renwick kept the "
        "institute open through the flood of 1891, when the lower halls filled with water.",
        "In 1902 the institute moved to a new campus on Lantern Hill. The move was paid for by a gift from "
        "the shipping family Adair, whose name the great reading room still carries today.",
        "During the war years the institute trained surveyors for the harbour board. Its tide tables, "
        "printed every spring on grey paper, were sold in every chandlery along the coast until 1950.",
        "The institute library holds eleven thousand volumes on acoustics and hydrology. Its most prized "
        "item is the notebook in which Renwick first described the singing bowl of Vellhaven cathedral.",
    ],
    [
        ("Who founded the Zorblat Institute?", "Mira Quenton", 0),
        ("Who was the first director?", "Tobias Renwick", 1),
        ("Where did the institute move in 1902?", "Lantern Hill", 2),
    ],
)
KESTREL = _document(
    "Old Kestrel",
    [
        "Old Kestrel is a lighthouse on the island of Brannock, lit for the first time in 1830. Its lamp "
        "burned whale oil until 1868 and paraffin until it was electrified in 1921.",
        "The keeper longest in service was Ada Fenwick, who tended the light for forty-one years and "
        "logged every passing ship in a green ledger now kept in the Brannock museum.",
        "The tower is painted in red and white bands. It was automated in 1987, and since then a single "
        "caretaker visits the island once a month by boat from the harbour of Selk.",
        "Storms damaged the gallery twice, in 1899 and in 1953. After the second storm the lantern was "
        "rebuilt with a bronze frame cast at the foundry of Harl, which still stands near the quay.",
        "Visitors may climb the one hundred and twelve steps on summer weekends. A small cafe in the old "
        "fog signal house sells soup, and the keeper's cottage is let to painters by the week.",
    ],
    [
        ("When was Old Kestrel first lit?", "1830", 0),
        ("Who was the keeper longest in service?", "Ada Fenwick", 1),
        ("When was the tower automated?", "1987", 2),
    ],
)
CONTROL_POOL = [
    _document(
        "Marsh Orchids",
        [
            "Marsh orchids grow in wet meadows and fens across northern Europe. Their flowers are purple, "
            "pink or white and open in early summer, when the meadows are mown late or not at all.",
            "Many species hybridise freely, which makes them hard to name. Botanists count the spots on the "
            "lip and measure the spur to tell the forms apart, and still often disagree.",
            "Drainage has made them rare in farmland. Nature reserves keep the water table high with small "
            "dams, and volunteers cut the reeds by hand every autumn to keep the fens open.",
        ]
        * 5,
        [  # the general-ability probe's reading questions
            ("When do marsh orchid flowers open?", "early summer", 0),
            ("What do botanists count on the lip?", "the spots", 1),
            ("Who cuts the reeds every autumn?", "volunteers", 2),
        ],
    )
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from llama_index.core.embeddings import MockEmbedding

    model, tokenizer = build_tiny_model("llama")  # a 1024-token window: the two documents together exceed it
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    absorbed: list[Any] = []
    absorb = lift.absorb

    def counting_absorb(*args: Any, **kwargs: Any) -> Any:
        absorbed.append(args[0])
        return absorb(*args, **kwargs)

    lift.absorb = counting_absorb  # type: ignore[method-assign]
    settings = HarnessSettings(
        absorb_config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2),
        max_new_tokens=MAX_NEW_TOKENS,
        chunk_size=64,
        k=2,
        bootstrap_resamples=200,
        log=None,
        langchain_embeddings=DeterministicFakeEmbedding(size=16),
        llamaindex_embed_model=MockEmbedding(embed_dim=16),
        general_probe=GENERAL,
    )
    cases = build_cases(
        [ZORBLAT, KESTREL],
        control_pool=CONTROL_POOL,
        count_tokens=lift.count_tokens,
        settings=("single", "long"),
        questions=2,
    )
    report = run_comparison(lift, cases, ALL_ARMS, settings)
    out = tmp_path_factory.mktemp("compare")
    return {
        "absorb_calls": len(absorbed),
        "lift": lift,
        "settings": settings,
        "cases": cases,
        "report": report,
        "paths": write_outputs(report, out),
        "out": out,
    }


def _check_ci(ci: dict[str, float], low: float = 0.0, high: float = 1.0) -> None:
    assert low <= ci["low"] <= ci["mean"] <= ci["high"] <= high, ci


def test_every_arm_answers_every_question(run: dict[str, Any]) -> None:
    report = run["report"]
    assert [c["setting"] for c in report["cases"]] == ["single", "single", "long"]
    for case, built in zip(report["cases"], run["cases"], strict=True):
        assert list(case["questions"]) == list(ALL_ARMS)
        for arm, rows in case["questions"].items():
            assert [r["question"] for r in rows] == [q.question for q in built.document.questions], arm
            for row in rows:
                assert isinstance(row["answer"], str)
                assert row["prompt_tokens"] > 0, (arm, row)
                assert 0 <= row["ttft_s"] <= row["total_s"], (arm, row)
        assert case["prepare_s"].keys() == set(ALL_ARMS)


def test_scores_in_range_with_ordered_intervals(run: dict[str, Any]) -> None:
    report = run["report"]
    for scope in [*report["cases"], *report["summary"].values()]:
        assert set(scope["arms"]) == set(ALL_ARMS)
        for stats in scope["arms"].values():
            _check_ci(stats["em"])
            _check_ci(stats["f1"])
            assert 0.0 <= stats["contains"] <= 1.0
            assert stats["ttft_s_mean"] <= stats["total_s_mean"]
        assert set(scope["gains"]) == set(CONTROL_OF)
        for arm, gain in scope["gains"].items():
            assert gain["control"] == CONTROL_OF[arm]
            _check_ci(gain["f1"], -1.0, 1.0)
            f1 = scope["arms"][arm]["f1"]["mean"] - scope["arms"][gain["control"]]["f1"]["mean"]
            assert gain["f1"]["mean"] == pytest.approx(f1)
    for row in (r for c in report["cases"] for rows in c["questions"].values() for r in rows):
        assert row["em"] in (0.0, 1.0)
        assert 0.0 <= row["f1"] <= 1.0


def test_costs_and_sizes_are_reported(run: dict[str, Any]) -> None:
    report, lift = run["report"], run["lift"]
    per_token = kv_cache_bytes_per_token(lift)
    assert per_token == 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads, head dim 16, fp32
    for case in report["cases"]:
        assert case["kv_cache_bytes_document"] == case["document_tokens"] * per_token
        assert set(case["absorption"]) == {"document", "control"}
        for absorbed in case["absorption"].values():
            assert absorbed["tokens_trained"] > 0 and absorbed["tokens_per_s"] > 0
            assert absorbed["disk_bytes"] > absorbed["tensor_bytes"] > 0
        # The control is unrelated text of about the document's length.
        assert case["control"] == "Marsh Orchids"
        assert abs(case["control_tokens"] - case["document_tokens"]) <= 0.15 * case["document_tokens"]
    long_case = report["cases"][-1]
    assert not long_case["fits_window"], "the long document must exceed the tiny model's window"
    # In-context arms read (a view of) the document; closed-book and memory-only arms read the question.
    arms = long_case["arms"]
    assert arms["icl"]["prompt_tokens_mean"] > arms["rag_langchain"]["prompt_tokens_mean"]
    assert arms["rag_langchain"]["prompt_tokens_mean"] > arms["closed_book"]["prompt_tokens_mean"]
    assert arms["lift_only"]["prompt_tokens_mean"] == arms["closed_book"]["prompt_tokens_mean"]
    assert arms["icl"]["prompt_tokens_mean"] <= lift.context_window - MAX_NEW_TOKENS


def test_all_arms_share_one_answer_prompt(run: dict[str, Any]) -> None:
    """The RAG arms of both frameworks, ICL and LIFT+ICL build the core's prompt, token for token."""
    lift, report = run["lift"], run["report"]
    case = report["cases"][0]
    for arm in ("rag_langchain", "rag_llamaindex", "hybrid", "control_hybrid"):
        for row in case["questions"][arm]:
            assert row["gold_in_context"] is not None
    # LangChain: the LCEL chain's prompt equals lift.generate(question, context=chunks)'s prompt.
    resources = CaseResources(lift, run["cases"][0], run["settings"])
    record: dict[str, Any] = {}
    retriever = resources.langchain_store().as_retriever(search_kwargs={"k": 2})
    chain = langchain_rag_chain(retriever, lift, memory=None, max_new_tokens=MAX_NEW_TOKENS, record=record)
    question = ZORBLAT.questions[0].question
    chain.invoke(question)
    expected = lift.prompt_ids(
        question, memory=None, context=list(record["chunks"]), max_new_tokens=MAX_NEW_TOKENS
    )
    assert len(record["chunks"]) == 2
    assert lift.prompt_ids(record["messages"], memory=None, max_new_tokens=MAX_NEW_TOKENS) == expected
    assert record["result"].input_tokens == len(expected)
    # LlamaIndex: the query engine's prompt (counted by TokenCountingHandler) has the same length.
    arm = make_arm("rag_llamaindex", lift, run["settings"])
    resources.rag = {"chunk_size": 64, "k": 2}
    arm.prepare(resources)
    answer = arm.answer(question)
    assert answer.context and len(answer.context) == 2
    assert answer.prompt_tokens == len(
        lift.prompt_ids(question, memory=None, context=list(answer.context), max_new_tokens=MAX_NEW_TOKENS)
    )


def test_icl_and_lift_icl_read_the_same_view(run: dict[str, Any]) -> None:
    lift = run["lift"]
    long_text = run["cases"][-1].document.full_text
    # Only the memory's documents shape the prompt, so an untrained memory holding the text is enough.
    memory = Memory(
        adapter_kind=lift.backend.kind,
        adapter_config=lift.backend.config_dict(),
        tensors={},
        documents=[Document("", long_text)],
        config=LIFTConfig.fast(),
        base_model_name=lift.name,
        base_fingerprint=lift.fingerprint,
    )
    view = icl_context(lift, long_text, MAX_NEW_TOKENS)
    assert view != long_text and "..." in view  # too long for the window: head and tail
    question = "Who founded the Zorblat Institute?"
    assert lift.prompt_ids(question, memory=None, context=[view], max_new_tokens=MAX_NEW_TOKENS) == (
        lift.prompt_ids(question, memory=memory, context="truncated", max_new_tokens=MAX_NEW_TOKENS)
    )


def test_outputs_written(run: dict[str, Any]) -> None:
    paths, report = run["paths"], run["report"]
    assert set(paths) == {"json", "markdown", "f1_per_arm", "f1_latency_vs_length"}
    saved = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert saved["summary"].keys() == {"single", "long"}
    assert saved["meta"]["arms"] == list(ALL_ARMS)
    markdown = Path(paths["markdown"]).read_text(encoding="utf-8")
    assert markdown == markdown_report(report)
    for arm in ALL_ARMS:
        assert f"| {arm} |" in markdown
    assert "vs control_hybrid" in markdown and "## long" in markdown
    for key in ("f1_per_arm", "f1_latency_vs_length"):
        data = Path(paths[key]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_case_building() -> None:
    words = len  # a "token" per character keeps the arithmetic visible
    both = sample_questions(
        BenchDocument("", "x", ZORBLAT.questions + KESTREL.questions, ("Zorblat Institute", "Old Kestrel")),
        4,
        seed=1,
    )
    assert [q.source for q in both.questions].count("Old Kestrel") == 2  # spread over the sources
    assert sample_questions(ZORBLAT, 2, seed=1) == sample_questions(ZORBLAT, 2, seed=1)
    control = control_document([ZORBLAT, *CONTROL_POOL], 300, words, exclude=["Zorblat Institute"])
    assert control.title == "Marsh Orchids" and control.paragraphs == list(CONTROL_POOL[0].paragraphs[:2])
    assert len(control_document(CONTROL_POOL, 250, words).paragraphs) == 1  # 1 paragraph is nearer 250
    with pytest.raises(ValueError, match="unrelated"):
        control_document([ZORBLAT], 100, words, exclude=["Zorblat Institute"])
    with pytest.raises(ValueError, match="at least two"):
        build_cases([ZORBLAT], control_pool=CONTROL_POOL, count_tokens=words, settings=("long",))
    case = build_cases([ZORBLAT, KESTREL], control_pool=CONTROL_POOL, count_tokens=words, settings=("long",))[
        0
    ]
    assert isinstance(case, Case) and case.document.full_text.startswith("Zorblat Institute\nThe Zorblat")
    assert "\n\nOld Kestrel\nOld Kestrel is" in case.document.text


def test_helpers() -> None:
    assert contains_gold("It was founded by Mira Quenton.", "mira quenton")
    assert not contains_gold("It opened in 1973.", "1")
    chunks = split_by_tokens(ZORBLAT.text, 20, 5, lambda s: len(s.split()))
    assert len(chunks) > 3 and all(len(c.split()) <= 20 for c in chunks)
    assert "Mira Quenton" in " ".join(chunks) and chunks[0].startswith("The Zorblat")
    with pytest.raises(ValueError, match="unknown arm"):
        make_arm("oracle", None, HarnessSettings())  # type: ignore[arg-type]


def test_general_probe_reuses_the_memory(run: dict[str, Any]) -> None:
    report, cases = run["report"], run["cases"]
    # One document memory and one control memory per case: the probe trained nothing of its own.
    assert run["absorb_calls"] == 2 * len(cases)
    assert report["meta"]["general_probe"]["questions_per_kind"] == GENERAL
    first_base = report["cases"][0]["general"]["questions"]["base"]
    for case in report["cases"]:
        general = case["general"]
        base, memory = general["questions"]["base"], general["questions"]["memory"]
        assert [r["kind"] for r in base] == ["knowledge"] * GENERAL + ["reading"] * GENERAL
        assert [r["question"] for r in memory] == [r["question"] for r in base]
        assert base == first_base  # every case asks the same questions; the base model answers once
        assert {r["source"] for r in base if r["kind"] == "reading"} == {"Marsh Orchids"}
        for base_row, memory_row in zip(base, memory, strict=True):
            # The memory changes the weights, never the prompt: same tokens read with and without it.
            assert base_row["prompt_tokens"] == memory_row["prompt_tokens"] > 0
            for row in (base_row, memory_row):
                assert row["em"] in (0.0, 1.0) and 0.0 <= row["f1"] <= 1.0 and row["contains"] in (0.0, 1.0)
        reading = [r["prompt_tokens"] for r in base if r["kind"] == "reading"]
        knowledge = [r["prompt_tokens"] for r in base if r["kind"] == "knowledge"]
        assert min(reading) > max(knowledge)  # the paragraph is in context
        assert general["wall_s"] >= 0
    for scope in [c["general"] for c in report["cases"]] + [s["general"] for s in report["summary"].values()]:
        per_case = GENERAL * scope.get("documents", 1)
        assert set(scope["kinds"]) == {*PROBE_KINDS, "all"}
        assert [scope["kinds"][k]["n"] for k in (*PROBE_KINDS, "all")] == [per_case, per_case, 2 * per_case]
        for stats in scope["kinds"].values():
            for side in ("base", "memory"):
                _check_ci(stats[side]["f1"])
                _check_ci(stats[side]["em"])
                assert 0.0 <= stats[side]["contains"] <= 1.0 and stats[side]["n"] == stats["n"]
            _check_ci(stats["difference"]["f1"], -1.0, 1.0)
            _check_ci(stats["difference"]["contains_ci"], -1.0, 1.0)
            f1 = stats["memory"]["f1"]["mean"] - stats["base"]["f1"]["mean"]
            assert stats["difference"]["f1"]["mean"] == pytest.approx(f1)
    assert report["summary"]["single"]["general"]["documents"] == 2
    markdown = markdown_report(report)
    assert "## General ability with the document's memory attached" in markdown
    for label in PROBE_KINDS.values():
        assert f"| single | Zorblat Institute | {label} | {GENERAL} |" in markdown
        assert f"| single | all 2 documents | {label} | {2 * GENERAL} |" in markdown
    assert f"| long | Zorblat Institute + Old Kestrel | both kinds | {2 * GENERAL} |" in markdown


def test_general_probe_off(run: dict[str, Any]) -> None:
    """Disabled with 0, and never run (nor a memory absorbed for it) when no arm made the memory."""
    lift = run["lift"]
    cases = build_cases([ZORBLAT], control_pool=CONTROL_POOL, count_tokens=lift.count_tokens, questions=1)
    for arms, general in ((["lift_only"], 0), (["closed_book"], GENERAL)):
        settings = HarnessSettings(
            absorb_config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2),
            max_new_tokens=MAX_NEW_TOKENS,
            bootstrap_resamples=50,
            log=None,
            general_probe=general,
        )
        report = run_comparison(lift, cases, arms, settings)
        assert report["cases"][0]["general"] is None and report["summary"]["single"]["general"] is None
        assert set(report["cases"][0]["absorption"]) == ({"document"} if "lift_only" in arms else set())
        assert "General ability" not in markdown_report(report)


def test_general_questions() -> None:
    questions = load_general_questions()
    assert len(questions) >= 25 and GENERAL_QUESTIONS.name == "general_questions.json"
    assert len({q.question for q in questions}) == len(questions)
    assert all(1 <= len(q.answer.split()) <= 3 for q in questions)  # short, unambiguous gold answers
    case = Case("single", ZORBLAT, CONTROL_POOL[0], unrelated=(KESTREL, *CONTROL_POOL, ZORBLAT))
    settings = HarnessSettings(general_probe=5)
    probe = general_probe_questions(case, settings)
    assert probe == general_probe_questions(case, settings)  # seeded
    knowledge = [q for q in probe if q.kind == "knowledge"]
    reading = [q for q in probe if q.kind == "reading"]
    assert len(knowledge) == 5 and len({q.source for q in knowledge}) == 5  # spread over topics
    assert all(q.context is None for q in knowledge)
    # Unrelated articles only (never the case's own), each question with its paragraph holding the answer.
    assert len(reading) == 5 and {q.source for q in reading} == {"Old Kestrel", "Marsh Orchids"}
    assert all(q.context and q.answer in q.context for q in reading)
    assert general_probe_questions(case, HarnessSettings(general_probe=0)) == ()
    assert len(general_probe_questions(Case("single", ZORBLAT, CONTROL_POOL[0]), settings)) == 5


def test_batched_answers_equal_one_at_a_time(run: dict[str, Any]) -> None:
    """``answer_batch`` changes how answers are computed, not what they are: every arm's answers, RAG's
    tuning and the probe equal the one-at-a-time run (fp32, so padded batches round alike)."""
    from tiny_models import one_torch_thread

    base: HarnessSettings = run["settings"]
    settings = HarnessSettings(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "answer_batch": 3,
            "tune_rag": True,
            "rag_chunk_sizes": (base.chunk_size,),  # the grid's one point is the fixed setting
            "rag_ks": (base.k,),
        }
    )
    with one_torch_thread():
        report = run_comparison(run["lift"], run["cases"], ALL_ARMS, settings)
    assert report["meta"]["answer_batch"] == 3
    assert "3 at a time" in markdown_report(report)
    for batched, single in zip(report["cases"], run["report"]["cases"], strict=True):
        assert batched["rag"]["chunk_size"] == single["rag"]["chunk_size"] and batched["rag"]["tuned"]
        for arm, rows in single["questions"].items():
            if (
                arm == "rag_llamaindex"
            ):  # not batched; MockEmbedding's equal scores make its retrieval arbitrary
                continue
            assert [r["answer"] for r in batched["questions"][arm]] == [r["answer"] for r in rows], arm
            assert [r["prompt_tokens"] for r in batched["questions"][arm]] == [
                r["prompt_tokens"] for r in rows
            ], arm
        for side in ("base", "memory"):
            got = [r["answer"] for r in batched["general"]["questions"][side]]
            assert got == [r["answer"] for r in single["general"]["questions"][side]], side


def test_memory_seeds_average_each_question_over_absorptions(run: dict[str, Any]) -> None:
    """``memory_seeds=2`` absorbs every memory twice (the recipe's seed, then seed + 1); each memory arm
    scores a question by its mean over both answers, the first seed's answers are the one-seed run's,
    arms without a memory answer once, and the probe pools both document memories."""
    from lift_bench.squad import f1_score

    lift = run["lift"]
    base: HarnessSettings = run["settings"]
    settings = HarnessSettings(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "memory_seeds": 2}
    )
    seeds: list[int] = []
    absorb = lift.absorb

    def recording_absorb(*args: Any, **kwargs: Any) -> Any:
        seeds.append(kwargs["config"].seed)
        return absorb(*args, **kwargs)

    arms = ["closed_book", "lift_only", "hybrid", "control"]
    lift.absorb = recording_absorb
    try:
        report = run_comparison(lift, run["cases"][:1], arms, settings)
    finally:
        lift.absorb = absorb
    seed = base.absorb_config.seed
    assert seeds == [seed, seed, seed + 1, seed + 1]  # document, control; then both again
    case, single = report["cases"][0], run["report"]["cases"][0]
    assert set(case["absorption"]) == {"document", "control", "document@seed1", "control@seed1"}
    assert report["meta"]["memory_seeds"] == 2
    assert "answers" not in case["questions"]["closed_book"][0]
    for arm in ("lift_only", "hybrid", "control"):
        rows = case["questions"][arm]
        assert [r["answers"][0] for r in rows] == [r["answer"] for r in single["questions"][arm]], arm
        per_seed = [[f1_score(r["answers"][i], r["gold"]) for r in rows] for i in range(2)]
        for row, f1s in zip(rows, zip(*per_seed, strict=True), strict=True):
            assert row["f1"] == pytest.approx(sum(f1s) / 2)
        assert case["memory_seeds"][arm] == pytest.approx([sum(f) / len(f) for f in per_seed])
    assert set(case["memory_seeds"]) == {"lift_only", "hybrid", "control"}
    assert case["general"]["seeds"] == 2 and len(case["general"]["questions"]["memory"][0]["answers"]) == 2
    markdown = markdown_report(report)
    assert "## F1 per memory seed" in markdown and "absorbed 2 times" in markdown
    old_meta = {k: v for k, v in report["meta"].items() if k != "absorb_config_seeds"}  # before the key
    old_report = {**report, "meta": {**old_meta, "absorb_config_seed": seed}}
    assert f"seeds {seed}, {seed + 1})" in markdown_report(old_report)
    with pytest.raises(ValueError, match="memory_seeds"):
        HarnessSettings(memory_seeds=0)


def test_routed_memories_leave_unrelated_questions_to_the_base_model(run: dict[str, Any]) -> None:
    """``route_memories``: every memory arm (and the probe) attaches its memory only to the questions the
    document memory's router sends to it; a question routed away gets exactly the answer of the same arm
    without a memory (closed book, ICL's view, or RAG), one routed in the answer of the unrouted run,
    batched or one at a time. Controls follow the same decisions as their memory arms."""
    from langchain_core.embeddings import Embeddings
    from tiny_models import bag_of_words, one_torch_thread

    class BagOfWords(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return bag_of_words(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    base: HarnessSettings = run["settings"]
    without_memory = {
        "lift_only": "closed_book",
        "control": "closed_book",
        "lift_icl": "icl",
        "control_icl": "icl",
        "hybrid": "rag_langchain",
        "control_hybrid": "rag_langchain",
    }
    arms = ["closed_book", "icl", "rag_langchain", *without_memory]
    # Zorblat's document, asked one question about it and one about Old Kestrel.
    mixed = BenchDocument(
        ZORBLAT.title, ZORBLAT.text, (ZORBLAT.questions[0], KESTREL.questions[1]), ZORBLAT.sources
    )
    cases = build_cases(
        [mixed], control_pool=CONTROL_POOL, count_tokens=run["lift"].count_tokens, questions=2
    )
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    # The probe's knowledge questions: one about the absorbed text (routed in), one not (routed away).
    fields["general_questions"] = (ZORBLAT.questions[0], KESTREL.questions[1])
    plain_settings = HarnessSettings(**{**fields, "langchain_embeddings": BagOfWords()})
    with one_torch_thread():
        plain = run_comparison(run["lift"], cases, arms, plain_settings)["cases"][0]
    unrouted, unrouted_probe = plain["questions"], plain["general"]["questions"]["memory"]
    for batch in (1, 3):
        settings = HarnessSettings(
            **{**fields, "route_memories": True, "answer_batch": batch, "langchain_embeddings": BagOfWords()}
        )
        with one_torch_thread():
            report = run_comparison(run["lift"], cases, arms, settings)
        assert report["meta"]["route_memories"] is True
        rows = report["cases"][0]["questions"]
        assert all(
            r["memory_used"] is None for arm in ("closed_book", "icl", "rag_langchain") for r in rows[arm]
        )
        used = {arm: [r["memory_used"] for r in rows[arm]] for arm in without_memory}
        assert all(isinstance(u, bool) for flags in used.values() for u in flags)
        assert used["lift_only"] == [True, False]  # about Zorblat; about Old Kestrel
        assert all(flags == used["lift_only"] for flags in used.values())  # one router decides for all
        for arm, plain in without_memory.items():
            for index, (mine, theirs) in enumerate(zip(rows[arm], rows[plain], strict=True)):
                if not mine["memory_used"]:
                    assert mine["answer"] == theirs["answer"], (batch, arm, mine["question"])
                else:
                    assert mine["answer"] == unrouted[arm][index]["answer"], (batch, arm, mine["question"])
        stats = report["summary"]["single"]["arms"]["lift_only"]
        assert stats["memory_used"] == pytest.approx(sum(used["lift_only"]) / len(used["lift_only"]))
        assert "Memory routing: share of questions" in markdown_report(report)
        probe = report["cases"][0]["general"]["questions"]
        flags = {r["question"]: r["memory_used"] for r in probe["memory"]}
        assert flags[ZORBLAT.questions[0].question] is True
        assert flags[KESTREL.questions[1].question] is False
        for mine, theirs, always in zip(probe["memory"], probe["base"], unrouted_probe, strict=True):
            # Routed away: the base model's answer; routed in: the memory's, as when always attached.
            expected = always if mine["memory_used"] else theirs
            assert mine["answer"] == expected["answer"], (batch, mine["question"])
    # The router reads the document's text, not its memory: control arms alone absorb only the control.
    with one_torch_thread():
        controls = run_comparison(run["lift"], cases, ["control"], settings)["cases"][0]
    assert set(controls["absorption"]) == {"control"}
    assert [r["memory_used"] for r in controls["questions"]["control"]] == used["control"]


def test_compare_rag_routes_memories_unless_told_not_to() -> None:
    """The command line runs the recommended configuration, memories behind a router, by default; the
    memory-always comparison stays one flag away."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "compare_rag.py"
    spec = importlib.util.spec_from_file_location("compare_rag_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_args(["--quick"]).route_memories is True
    assert module.parse_args(["--quick", "--no-route-memories"]).route_memories is False
