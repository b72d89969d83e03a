"""The corpus setting end to end on a tiny in-process model: three tiny articles as one knowledge base,
a router whose choices are known, every corpus arm. Quality is not asserted (the model is random); which
memory each question gets, the routing accuracy, the report and the reuse of saved memories are.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from tiny_models import build_tiny_model, one_torch_thread

from lift_bench.arms import HarnessSettings
from lift_bench.cases import BenchDocument, BenchQuestion
from lift_bench.corpus import WHOLE, build_corpus, probe_documents
from lift_bench.corpus_arms import CORPUS_ARMS
from lift_bench.corpus_report import corpus_markdown, write_corpus_outputs
from lift_bench.corpus_run import routing_accuracy, run_corpus
from lift_integrations import LIFTConfig, LIFTModel

MAX_NEW_TOKENS = 5


def _article(title: str, paragraphs: list[str], qa: list[tuple[str, str, int]]) -> BenchDocument:
    return BenchDocument(
        title,
        "\n\n".join(paragraphs),
        tuple(BenchQuestion(q, a, title, paragraphs[i]) for q, a, i in qa),
        (title,),
    )


ARTICLES = [
    _article(
        "Zorblat Institute",
        [
            "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven.",
            "Its first director was Tobias Renwick, who studied glass harps and river tides.",
        ],
        [
            ("Who founded the Zorblat Institute?", "Mira Quenton", 0),
            ("Who was its director?", "Tobias Renwick", 1),
        ],
    ),
    _article(
        "Old Kestrel",
        [
            "Old Kestrel is a lighthouse on the island of Brannock, lit for the first time in 1830.",
            "The keeper longest in service was Ada Fenwick, who logged every ship in a green ledger.",
        ],
        [("When was Old Kestrel first lit?", "1830", 0), ("Who kept the light longest?", "Ada Fenwick", 1)],
    ),
    _article(
        "Marsh Orchids",
        [
            "Marsh orchids grow in wet meadows and fens; their purple flowers open in early summer.",
            "Botanists count the spots on the lip to tell the hybrid forms of marsh orchids apart.",
        ],
        [("When do marsh orchids flower?", "early summer", 0), ("What do botanists count?", "the spots", 1)],
    ),
]
FICTION = {
    "title": "Brindle Clocks",
    "text": "The Brindle clock museum in Saltreach was founded by Orla Pennick in 1887.",
    "questions": [{"question": "Who founded the Brindle clock museum?", "answer": "Orla Pennick"}],
}
KNOWLEDGE = (
    BenchQuestion("What is the capital of France?", "Paris", "geography"),
    BenchQuestion("Who founded the Zorblat Institute in Vellhaven?", "Mira Quenton", "history"),
)


class StubRouter:
    """Routes by a fixed table (anything else to none), and records what it was asked."""

    def __init__(self, table: dict[str, str | None]) -> None:
        self.table = table
        self.asked: list[list[str]] = []

    def route_many(self, questions: list[str]) -> list[str | None]:
        self.asked.append(list(questions))
        return [self.table.get(q) for q in questions]


def _settings(**overrides: Any) -> HarnessSettings:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from llama_index.core.embeddings import MockEmbedding

    fields: dict[str, Any] = {
        "absorb_config": LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2),
        "max_new_tokens": MAX_NEW_TOKENS,
        "chunk_size": 32,
        "k": 2,
        "bootstrap_resamples": 100,
        "log": None,
        "langchain_embeddings": DeterministicFakeEmbedding(size=16),
        "llamaindex_embed_model": MockEmbedding(embed_dim=16),
        "general_probe": 2,
        "general_questions": KNOWLEDGE,
        "route_memories": True,
    }
    return HarnessSettings(**{**fields, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    calls: dict[str, list[Any]] = {"absorb": [], "absorb_many": []}
    absorb, absorb_many = lift.absorb, lift.absorb_many

    def counting_absorb(*args: Any, **kwargs: Any) -> Any:
        calls["absorb"].append(args[0])
        return absorb(*args, **kwargs)

    def counting_absorb_many(*args: Any, **kwargs: Any) -> Any:
        calls["absorb_many"].append(args[0])
        return absorb_many(*args, **kwargs)

    lift.absorb = counting_absorb  # type: ignore[method-assign]
    lift.absorb_many = counting_absorb_many  # type: ignore[method-assign]
    corpus = build_corpus(ARTICLES, 2, seed=0)
    zorblat, _, orchids = corpus.names
    table: dict[str, str | None] = {
        **{q.question: zorblat for q in ARTICLES[0].questions},  # both right
        ARTICLES[1].questions[0].question: None,  # to the base model
        ARTICLES[1].questions[1].question: orchids,  # to the wrong memory
        **{q.question: orchids for q in ARTICLES[2].questions},  # both right
        KNOWLEDGE[1].question: zorblat,  # a probe question that names the corpus
    }
    router = StubRouter(table)
    bank_dir = tmp_path_factory.mktemp("corpus") / "kb"
    with one_torch_thread():
        report = run_corpus(
            lift,
            corpus,
            CORPUS_ARMS,
            _settings(),
            unrelated=probe_documents([], [FICTION]),
            router=router,
            bank_dir=bank_dir,
        )
    return {
        "lift": lift,
        "corpus": corpus,
        "report": report,
        "router": router,
        "table": table,
        "calls": calls,
        "bank_dir": bank_dir,
        "out": tmp_path_factory.mktemp("corpus-out"),
    }


def test_every_arm_answers_every_question_in_corpus_order(run: dict[str, Any]) -> None:
    report, corpus = run["report"], run["corpus"]
    assert report["meta"]["setting"] == "corpus" and report["meta"]["routing"] == "bank_router"
    assert report["meta"]["arms"] == list(CORPUS_ARMS)
    (case,) = report["cases"]
    assert list(case["questions"]) == list(CORPUS_ARMS)
    for arm, rows in case["questions"].items():
        assert [(r["question"], r["source"]) for r in rows] == [
            (q.question, q.source) for q in corpus.questions
        ]
        for row in rows:
            assert isinstance(row["answer"], str) and row["prompt_tokens"] > 0, arm
            assert row["em"] in (0.0, 1.0) and 0.0 <= row["f1"] <= 1.0
    summary = report["summary"]["corpus"]
    assert set(summary["arms"]) == set(CORPUS_ARMS) and summary["questions"] == 6
    assert set(summary["gains"]) == {"lift_only", "hybrid"}
    assert summary["gains"]["hybrid"]["control"] == "control_hybrid"


def test_each_arm_gets_the_memory_its_plan_names(run: dict[str, Any]) -> None:
    """Routed arms follow the router; the oracle its own article; a control another article's memory on
    the routed questions; the whole-corpus arms the one memory on the routed questions."""
    corpus, table = run["corpus"], run["table"]
    rows = run["report"]["cases"][0]["questions"]
    routed = [table[q.question] for q in corpus.questions]
    own = [corpus.name_of(q.source) for q in corpus.questions]
    labels = {arm: [r["memory"] for r in rows[arm]] for arm in rows}
    assert labels["lift_only"] == labels["hybrid"] == routed
    assert labels["lift_oracle"] == own
    assert labels["lift_whole"] == labels["hybrid_whole"] == [None if r is None else WHOLE for r in routed]
    for arm in ("control", "control_hybrid"):
        for label, route, mine in zip(labels[arm], routed, own, strict=True):
            assert (label is None) == (route is None)
            assert label is None or (label != mine and label in corpus.names)
    assert labels["closed_book"] == labels["rag_langchain"] == [None] * 6
    # The router was asked the corpus questions once (every routed arm shares its decisions), then the probe.
    assert run["router"].asked[0] == [q.question for q in corpus.questions]
    assert len(run["router"].asked) == 2


def test_a_question_routed_to_none_gets_the_base_model(run: dict[str, Any]) -> None:
    rows = run["report"]["cases"][0]["questions"]
    without = {"lift_only": "closed_book", "lift_whole": "closed_book", "control": "closed_book"}
    without |= {"hybrid": "rag_langchain", "hybrid_whole": "rag_langchain", "control_hybrid": "rag_langchain"}
    checked = 0
    for arm, plain in without.items():
        for mine, theirs in zip(rows[arm], rows[plain], strict=True):
            assert mine["memory_used"] is (mine["memory"] is not None)
            if mine["memory"] is None:
                assert mine["answer"] == theirs["answer"], (arm, mine["question"])
                assert mine["prompt_tokens"] == theirs["prompt_tokens"]
                checked += 1
    assert checked == len(without)  # one question routed to none, in every arm


def test_routing_accuracy_is_the_share_routed_to_the_own_article(run: dict[str, Any]) -> None:
    routing = run["report"]["corpus"]["routing"]
    assert routing["n"] == 6
    assert routing["correct"] == pytest.approx(4 / 6)
    assert routing["none"] == pytest.approx(1 / 6) and routing["wrong"] == pytest.approx(1 / 6)
    _, kestrel, orchids = run["corpus"].names
    assert routing["per_article"]["Old Kestrel"] == {"n": 2, "correct": 0.0, "none": 0.5, "wrong": 0.5}
    assert routing["per_article"]["Zorblat Institute"]["correct"] == 1.0
    assert routing["confusions"] == [{"own": kestrel, "routed": orchids, "count": 1}]
    # The same function on hand-made lists.
    own, titles = ["a", "a", "b", "b"], ["A", "A", "B", "B"]
    result = routing_accuracy(own, ["a", None, "a", "b"], titles)
    assert (result["correct"], result["none"], result["wrong"]) == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="one own name"):
        routing_accuracy(own, ["a"], titles)


def test_absorption_once_per_memory_kind_and_reported(run: dict[str, Any]) -> None:
    calls, corpus = run["calls"], run["corpus"]
    assert len(calls["absorb_many"]) == 1 and len(calls["absorb_many"][0]) == 3  # the bank, side by side
    assert [list(d) for d in calls["absorb"]] == [[(a.title, a.text) for a in corpus.articles]]  # whole
    section = run["report"]["corpus"]
    bank, whole = section["bank"], section["whole"]
    assert bank["memories"] == 3 and bank["loaded_from"] is None and bank["wall_s"] > 0
    assert [a["title"] for a in bank["per_article"]] == corpus.titles
    for entry in bank["per_article"]:
        assert entry["steps"] > 0 and entry["disk_bytes"] > entry["tensor_bytes"] > 0
    assert whole["steps"] > 0 and whole["document_tokens"] == section["tokens"]
    assert (run["bank_dir"] / "bank" / "bank.json").is_file() and (run["bank_dir"] / "whole").is_dir()


def test_comparisons_with_rag_and_retrieval_of_the_own_article(run: dict[str, Any]) -> None:
    report = run["report"]
    rows, section = report["cases"][0]["questions"], report["corpus"]
    for arm, against in section["versus_rag"].items():
        assert set(against) == {"rag_langchain", "rag_llamaindex"} - {arm}
        for rag, entry in against.items():
            mine = sum(r["f1"] for r in rows[arm]) / 6
            theirs = sum(r["f1"] for r in rows[rag]) / 6
            assert entry["difference"]["mean"] == pytest.approx(mine - theirs)
            assert entry["ratio"] == (pytest.approx(mine / theirs) if theirs else None)
    assert set(section["own_article_in_context"]) == {
        "rag_langchain",
        "rag_llamaindex",
        "hybrid",
        "hybrid_whole",
        "control_hybrid",
    }
    corpus = run["corpus"]
    for row in rows["rag_langchain"]:
        article = next(a for a in corpus.articles if a.title == row["source"])
        assert isinstance(row["own_article_in_context"], bool)
        if row["gold"] in article.text and row["gold_in_context"]:
            assert row["own_article_in_context"]  # gold answers occur in their own article only
    assert set(section["per_article_f1"]["lift_only"]) == set(corpus.titles)


def test_general_probe_routes_through_the_bank(run: dict[str, Any]) -> None:
    general = run["report"]["cases"][0]["general"]
    base, memory = general["questions"]["base"], general["questions"]["memory"]
    assert [r["kind"] for r in base] == ["knowledge", "knowledge", "reading"]
    assert general["routed_to_memory"] == pytest.approx(1 / 3)
    for mine, theirs in zip(memory, base, strict=True):
        if mine["question"] == KNOWLEDGE[1].question:
            assert mine["memory_used"] is True and mine["memory"] == run["corpus"].names[0]
        else:  # routed to none: the base model's answer stands
            assert mine["memory_used"] is False and mine["answer"] == theirs["answer"]
    assert general["kinds"]["all"]["n"] == 3
    assert run["report"]["summary"]["corpus"]["general"]["documents"] == 1


def test_outputs_written(run: dict[str, Any]) -> None:
    report = run["report"]
    paths = write_corpus_outputs(report, run["out"], plots=False)
    saved = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert saved["corpus"]["routing"]["correct"] == pytest.approx(4 / 6)
    markdown = Path(paths["markdown"]).read_text(encoding="utf-8")
    assert markdown == corpus_markdown(report)
    for arm in CORPUS_ARMS:
        assert f"| {arm} |" in markdown
    for heading in ("## Routing", "## The knowledge base", "## F1 per article", "## General ability"):
        assert heading in markdown
    assert "67% to their own article's memory, 17% to none" in markdown
    assert "vs control_hybrid" in markdown and "Control design: a control arm" in markdown


def test_saved_memories_are_reused_and_batches_mix_memories(run: dict[str, Any]) -> None:
    """A second run with the same bank folder absorbs nothing and, answering in mixed batches
    (``generate_batch(memories=[...])``), gives the one-at-a-time answers."""
    calls, lift = run["calls"], run["lift"]
    before = (len(calls["absorb"]), len(calls["absorb_many"]))
    arms = ["lift_only", "lift_oracle", "hybrid_whole", "control"]
    with one_torch_thread():
        report = run_corpus(
            lift,
            run["corpus"],
            arms,
            # RAG tuned over a grid of the fixed point alone: the same chunks as the first run.
            _settings(answer_batch=4, general_probe=0, tune_rag=True, rag_chunk_sizes=(32,), rag_ks=(2,)),
            router=StubRouter(run["table"]),
            bank_dir=run["bank_dir"],
        )
    assert (len(calls["absorb"]), len(calls["absorb_many"])) == before
    rag = report["cases"][0]["rag"]
    assert rag["tuned"] and rag["tuned_on"] == 6 and (rag["chunk_size"], rag["k"]) == (32, 2)
    section = report["corpus"]
    assert section["bank"]["loaded_from"] and section["whole"]["loaded_from"]
    assert section["bank"]["wall_s"] == run["report"]["corpus"]["bank"]["wall_s"]  # the recorded absorption
    first = run["report"]["cases"][0]["questions"]
    for arm in arms:
        got = report["cases"][0]["questions"][arm]
        assert [r["answer"] for r in got] == [r["answer"] for r in first[arm]], arm
    # Memories of another recipe are refused, not silently reused.
    with pytest.raises(ValueError, match="another --bank folder"):
        run_corpus(
            lift,
            run["corpus"],
            ["lift_oracle"],
            _settings(absorb_config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=2, qa_per_document=2)),
            bank_dir=run["bank_dir"],
        )


def test_the_bank_router_routes_by_the_articles_text(run: dict[str, Any]) -> None:
    """Without a stub: a BankRouter over the articles' text (bag-of-words embeddings), its decisions
    counted into the routing accuracy exactly as the rows record them."""
    from langchain_core.embeddings import Embeddings
    from tiny_models import bag_of_words

    class BagOfWords(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return bag_of_words(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    corpus = run["corpus"]
    with one_torch_thread():
        report = run_corpus(
            run["lift"],
            corpus,
            ["lift_only"],
            _settings(langchain_embeddings=BagOfWords(), general_probe=0),
            bank_dir=run["bank_dir"],
        )
    rows = report["cases"][0]["questions"]["lift_only"]
    own = [corpus.name_of(r["source"]) for r in rows]
    routing = report["corpus"]["routing"]
    assert routing["correct"] == pytest.approx(
        sum(r["memory"] == o for r, o in zip(rows, own, strict=True)) / len(rows)
    )
    assert routing["none"] == pytest.approx(sum(r["memory"] is None for r in rows) / len(rows))
    # Questions that name their article's rare words go to its memory.
    assert rows[0]["memory"] == corpus.names[0]


def test_oracle_routing_without_a_router(run: dict[str, Any]) -> None:
    with one_torch_thread():
        report = run_corpus(
            run["lift"],
            run["corpus"],
            ["lift_only", "control"],
            _settings(route_memories=False, general_probe=0),
            router=StubRouter({}),
            bank_dir=run["bank_dir"],
        )
    rows = report["cases"][0]["questions"]
    corpus = run["corpus"]
    assert [r["memory"] for r in rows["lift_only"]] == [corpus.name_of(q.source) for q in corpus.questions]
    assert [r["memory"] for r in rows["control"]] == [corpus.control_name(q.source) for q in corpus.questions]
    assert report["corpus"]["routing"] is None and report["meta"]["routing"] == "oracle"
    assert "oracle routing" in corpus_markdown(report)


def test_corpus_building_checks() -> None:
    corpus = build_corpus(ARTICLES, 1, seed=3)
    assert [len(a.questions) for a in corpus.articles] == [1, 1, 1]
    assert corpus.names == ("Zorblat-Institute", "Old-Kestrel", "Marsh-Orchids")
    assert [corpus.control_name(t) for t in corpus.titles] == [
        "Old-Kestrel",
        "Marsh-Orchids",
        "Zorblat-Institute",
    ]
    assert build_corpus(ARTICLES, 1, seed=3) == corpus  # seeded
    with pytest.raises(ValueError, match="distinct"):
        build_corpus([ARTICLES[0], ARTICLES[0]], 1, seed=0)
    with pytest.raises(ValueError, match="without questions"):
        build_corpus([BenchDocument("Empty", "text", (), ("Empty",))], 1, seed=0)
    (fiction,) = probe_documents([], [FICTION])
    assert fiction.questions[0].paragraph == FICTION["text"]


def _cli() -> Any:
    path = Path(__file__).resolve().parents[1] / "examples" / "compare_rag.py"
    spec = importlib.util.spec_from_file_location("compare_rag_cli_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_line_corpus_setting() -> None:
    cli = _cli()
    args = cli.parse_args(["--settings", "corpus"])
    assert (args.settings, args.questions, args.arms, args.articles) == ("corpus", 5, "all", None)
    assert args.route_memories is True and args.bank is None and not args.absorb_only
    args = cli.parse_args(["--settings", "corpus", "--questions", "2", "--bank", "kb", "--absorb-only"])
    assert args.questions == 2 and args.bank == Path("kb") and args.absorb_only
    assert cli.parse_args(["--settings", "single"]).questions == 50  # the other settings keep theirs
    for wrong in (
        ["--settings", "corpus,single"],
        ["--settings", "corpus", "--absorb-only"],
        ["--settings", "corpus", "--memory-seeds", "2"],
    ):
        with pytest.raises(SystemExit):
            cli.parse_args(wrong)


@pytest.mark.slow
def test_the_corpus_setting_runs_on_the_embedded_model(tmp_path: Path) -> None:
    """The command line on the real path: SmolLM2, MiniLM embeddings, the BankRouter, the saved bank."""
    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "squad-dev.json"
    if not data.is_file():
        pytest.skip("needs ../shared/data/squad-dev.json (several articles)")
    command = [
        sys.executable,
        "examples/compare_rag.py",
        "--settings", "corpus",
        "--data", str(data),
        "--articles", "2",
        "--paragraphs", "1",
        "--questions", "1",
        "--arms", "rag_langchain,lift_only,control",
        "--preset", "fast",
        "--config", '{"stage1_epochs": 1, "stage2_epochs": 1, "qa_per_document": 2}',
        "--no-tune-rag",
        "--general", "2",
        "--max-new-tokens", "8",
        "--answer-batch", "2",
        "--no-plots",
        "--threads", "1",
        "--bank", str(tmp_path / "kb"),
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert list(report["cases"][0]["questions"]) == ["rag_langchain", "lift_only", "control"]
    routing = report["corpus"]["routing"]
    assert routing["n"] == 2 and routing["correct"] + routing["none"] + routing["wrong"] == pytest.approx(1.0)
    assert report["corpus"]["bank"]["memories"] == 2 and (tmp_path / "kb" / "bank" / "bank.json").is_file()
    assert "## Routing" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
