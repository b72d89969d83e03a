"""The corpus setting: many articles as one knowledge base, questions about any of them.

The single and long settings (:mod:`lift_bench.cases`) ask about one document. A user with a knowledge
base has many: every article of the data file (the 24 of ``squad-dev.json``, about 150K tokens, far
beyond any small model's window), and questions that may be about any of them. What that user gets from
the library is a :class:`~lift_integrations.MemoryBank` (one memory per document, absorbed side by side
by ``absorb_many``), a :class:`~lift_integrations.bank.BankRouter` choosing one memory (or none) per
question, and ``generate_batch(memories=[...])`` answering a batch whose rows each use their own memory;
RAG's counterpart is one vector store holding every article's chunks. This module holds what the corpus
arms (:mod:`lift_bench.corpus_arms`) share: the corpus and its questions, the vector store, the bank, the
memory of the whole corpus (the composition arm), the routing decisions, and each arm's memory per
question.

The control design (no memory of unrelated text is absorbed for it): a control arm answers question of
article ``i`` with the memory of article ``i + 1`` (the last article's questions with the first's), a
fixed derangement of the bank, on exactly the questions the router gave some memory; the rest go to the
base model, as in the routed arm. So a control trains nothing extra, and its memories were absorbed by the
same recipe from text of the same kind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_bench.arms import default_langchain_embeddings, split_by_tokens
from lift_bench.cases import BenchDocument, BenchQuestion, sample_questions
from lift_bench.squad import Article

if TYPE_CHECKING:
    from lift_bench.arms import HarnessSettings
    from lift_integrations.bank import MemoryBank
    from lift_integrations.bank_router import BankRouter, BankRouting
    from lift_integrations.config import LIFTConfig
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel
    from lift_integrations.routing import Embedder

__all__ = [
    "PLANS",
    "WHOLE",
    "Corpus",
    "CorpusResources",
    "build_corpus",
    "corpus_router",
    "probe_documents",
]

WHOLE = "(whole corpus)"
"""The label of the memory absorbed from the whole corpus in rows and reports (never a bank name)."""

PLANS = ("routed", "oracle", "control", "whole")
"""Which memory each question gets: the router's choice, its own article's, the control's (the next
article's, where the router chose some memory), or the whole corpus's (where the router chose some)."""

ABSORPTION_FILE = "absorption.json"


@dataclass(frozen=True)
class Corpus:
    """The articles of the knowledge base, each with the questions sampled from it, in file order.

    ``names`` are the bank's memory names (:func:`~lift_integrations.bank.bank_names` of the titles).
    """

    articles: tuple[BenchDocument, ...]
    names: tuple[str, ...]

    @property
    def titles(self) -> list[str]:
        return [a.title for a in self.articles]

    @property
    def questions(self) -> list[BenchQuestion]:
        """Every question, article after article (the order of every arm's rows)."""
        return [q for a in self.articles for q in a.questions]

    def name_of(self, title: str) -> str:
        """The bank name of the article titled ``title``."""
        return self.names[self.titles.index(title)]

    def control_name(self, title: str) -> str:
        """The memory a control arm uses for a question about ``title``: the next article's."""
        index = self.titles.index(title)
        return self.names[(index + 1) % len(self.names)]


def build_corpus(documents: Sequence[BenchDocument], questions_per_article: int | None, seed: int) -> Corpus:
    """The corpus of ``documents`` with ``questions_per_article`` questions drawn from each (seeded:
    article ``i`` with ``seed + i``, as the single setting draws them)."""
    from lift_integrations.bank import bank_names

    if not documents:
        raise ValueError("the corpus needs at least one article")
    titles = [d.title for d in documents]
    if len(set(titles)) != len(titles) or not all(titles):
        raise ValueError(f"corpus articles need distinct, non-empty titles, got {titles}")
    sampled = tuple(sample_questions(d, questions_per_article, seed + i) for i, d in enumerate(documents))
    empty = [d.title for d in sampled if not d.questions]
    if empty:
        raise ValueError(f"articles without questions to ask: {empty}")
    return Corpus(sampled, tuple(bank_names(titles)))


def probe_documents(
    articles: Sequence[Article], fiction: Sequence[dict[str, Any]] = ()
) -> tuple[BenchDocument, ...]:
    """Documents unrelated to the corpus for the general-ability probe's reading questions: the data
    file's articles left out of the corpus (each question with its paragraph) and fictional fact sheets
    (``{"title", "text", "questions"}``, each question read with the whole sheet)."""
    from lift_bench.cases import article_document

    documents = [article_document(a) for a in articles]
    for sheet in fiction:
        title, text = sheet["title"], sheet["text"]
        questions = tuple(
            BenchQuestion(q["question"], q["answer"], title, text) for q in sheet.get("questions", ())
        )
        documents.append(BenchDocument(title, text, questions, (title,)))
    return tuple(documents)


def corpus_router(
    corpus: Corpus, embed: Embedder, routing: BankRouting | Mapping[str, Any] | None = None
) -> BankRouter:
    """A ``BankRouter`` over the corpus's bank names, built from the articles' text alone (a router reads
    nothing else, so no memory is loaded or absorbed for it): the corpus arms' router with ``routing``
    left ``None`` (the defaults), and any other rule's on the same bank, offline
    (``benchmarks/route_corpus_report.py``)."""
    from lift_integrations.bank import BankRouter, MemoryBank
    from lift_integrations.routing import text_memory

    texts = MemoryBank(
        {
            name: text_memory([(a.title, a.text)])
            for a, name in zip(corpus.articles, corpus.names, strict=True)
        }
    )
    return BankRouter(texts, embed=embed, routing=routing)


@dataclass
class CorpusResources:
    """What the corpus arms share, each built on first use: the vector store (per chunk size), the bank,
    the whole-corpus memory, the routing decisions.

    ``router``: anything with ``route_many(questions) -> [name or None]`` over the bank's names (default:
    the bank's :class:`~lift_integrations.bank.BankRouter`, embedding with the run's LangChain
    embeddings). ``bank_dir``: a folder keeping the absorbed memories between runs (``bank/``, a
    :class:`MemoryBank`; ``whole/``, a memory; ``absorption.json``: how they were made); memories found
    there are loaded instead of absorbed, after checking they were made from the same articles, model and
    recipe.
    """

    lift: LIFTModel
    corpus: Corpus
    settings: HarnessSettings
    router: Any = None
    bank_dir: Path | None = None
    rag: dict[str, Any] = field(default_factory=dict)
    absorptions: dict[str, Any] = field(default_factory=dict)
    _stores: dict[tuple[int, int], Any] = field(default_factory=dict)
    _chunk_titles: dict[str, str] = field(default_factory=dict)
    _bank: MemoryBank | None = None
    _whole: Memory | None = None
    _routes: list[str | None] | None = None
    _used: dict[int, Memory] = field(default_factory=dict)

    # RAG ---------------------------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return int(self.rag.get("chunk_size", self.settings.chunk_size))

    @property
    def k(self) -> int:
        return int(self.rag.get("k", self.settings.k))

    @property
    def overlap(self) -> int:
        return int(self.rag.get("chunk_overlap", self.settings.overlap))

    @property
    def langchain_embeddings(self) -> Any:
        if self.settings.langchain_embeddings is None:
            self.settings.langchain_embeddings = default_langchain_embeddings()
        return self.settings.langchain_embeddings

    def langchain_store(self, chunk_size: int | None = None, overlap: int | None = None) -> Any:
        """One ``InMemoryVectorStore`` of every article's chunks (each article split on its own, as a
        user adds documents one by one; the title in each chunk's metadata)."""
        from langchain_core.documents import Document
        from langchain_core.vectorstores import InMemoryVectorStore

        chunk_size = chunk_size or self.chunk_size
        overlap = self.overlap if overlap is None else overlap
        key = (chunk_size, min(overlap, chunk_size - 1))
        if key not in self._stores:
            chunks = []
            for article in self.corpus.articles:
                pieces = split_by_tokens(article.full_text, key[0], key[1], self.lift.count_tokens)
                for i, piece in enumerate(pieces):
                    chunks.append(Document(page_content=piece, metadata={"title": article.title, "chunk": i}))
                    self._chunk_titles.setdefault(piece, article.title)
            store = InMemoryVectorStore(self.langchain_embeddings)
            store.add_documents(chunks)
            self._stores[key] = store
        return self._stores[key]

    def chunk_article(self, chunk: str) -> str | None:
        """The title of the article a retrieved chunk comes from (LangChain's chunks by lookup, others,
        such as LlamaIndex's nodes, by containment), or ``None`` when no article holds it verbatim."""
        if chunk in self._chunk_titles:
            return self._chunk_titles[chunk]
        text = chunk.strip()
        return next((a.title for a in self.corpus.articles if text and text in a.full_text), None)

    # Memories ----------------------------------------------------------------------------------------

    def config(self) -> LIFTConfig:
        from lift_integrations.config import LIFTConfig

        if self.settings.absorb_config is not None:
            return self.settings.absorb_config
        return LIFTConfig.for_device(self.lift.device.type, seed=self.settings.seed)

    @property
    def bank(self) -> MemoryBank:
        """One memory per article (``MemoryBank.from_documents``: ``absorb_many``), or the saved bank."""
        if self._bank is None:
            self._bank = self._load_bank() or self._absorb_bank()
        return self._bank

    @property
    def has_bank(self) -> bool:
        return self._bank is not None

    @property
    def whole(self) -> Memory:
        """One memory absorbed from every article of the corpus (``absorb`` of the list of articles)."""
        if self._whole is None:
            self._whole = self._load_whole() or self._absorb_whole()
        return self._whole

    def _absorb_bank(self) -> MemoryBank:
        from lift_integrations.bank import MemoryBank

        articles = self.corpus.articles
        tokens = [self.lift.count_tokens(a.full_text) for a in articles]
        self.settings.say(f"  absorbing {len(articles)} memories (absorb_many): {sum(tokens):,} tokens")
        start = time.perf_counter()
        bank = MemoryBank.from_documents(
            self.lift,
            [(a.title, a.text) for a in articles],
            names=list(self.corpus.names),
            config=self.config(),
        )
        wall = time.perf_counter() - start
        disk = self._save("bank", lambda folder: bank.save(folder))
        self.absorptions["bank"] = {
            "memories": len(articles),
            "wall_s": round(wall, 3),
            "wall_s_per_article": round(wall / len(articles), 3),
            "tokens": sum(tokens),
            "loaded_from": None,
            "per_article": [
                {
                    "title": article.title,
                    "name": name,
                    "document_tokens": count,
                    **_memory_record(bank[name]),
                    "disk_bytes": disk.get(name),
                }
                for article, name, count in zip(articles, self.corpus.names, tokens, strict=True)
            ],
        }
        self.settings.say(f"  absorbed the bank in {wall:.1f} s ({wall / len(articles):.1f} s per article)")
        self._write_records()
        return bank

    def _absorb_whole(self) -> Memory:
        articles = self.corpus.articles
        tokens = sum(self.lift.count_tokens(a.full_text) for a in articles)
        self.settings.say(f"  absorbing one memory of the whole corpus: {tokens:,} tokens")
        start = time.perf_counter()
        memory = self.lift.absorb([(a.title, a.text) for a in articles], config=self.config())
        wall = time.perf_counter() - start
        disk = self._save("whole", lambda folder: memory.save(folder))
        self.absorptions["whole"] = {
            "wall_s": round(wall, 3),
            "document_tokens": tokens,
            "loaded_from": None,
            **_memory_record(memory),
            "disk_bytes": disk.get(""),
        }
        self.settings.say(f"  absorbed the whole corpus in {wall:.1f} s")
        self._write_records()
        return memory

    def _save(self, what: str, save: Any) -> dict[str, int]:
        """Save into ``bank_dir/what`` (when there is a bank folder); bytes on disk per memory folder
        (``""``: the folder itself)."""
        if self.bank_dir is None:
            return {}
        folder = Path(save(self.bank_dir / what))
        sizes = {"": _folder_bytes(folder)}
        sizes.update({sub.name: _folder_bytes(sub) for sub in folder.iterdir() if sub.is_dir()})
        return sizes

    def _identity(self) -> dict[str, Any]:
        """What a saved memory must have been made with to be reused."""
        return {
            "model": self.lift.name,
            "fingerprint": self.lift.fingerprint,
            "adapter": self.lift.backend.kind,
            "config": self.config().to_dict(),
            "articles": [
                {"title": a.title, "name": n, "text_chars": len(a.text)}
                for a, n in zip(self.corpus.articles, self.corpus.names, strict=True)
            ],
        }

    def _write_records(self) -> None:
        if self.bank_dir is None:
            return
        path = self.bank_dir / ABSORPTION_FILE
        saved = _read_json(path) if path.is_file() else {}
        if saved.get("identity") != self._identity():
            saved = {}
        saved.update({"identity": self._identity(), **self.absorptions})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")

    def _saved_record(self, what: str) -> dict[str, Any] | None:
        """The saved absorption record of ``what`` when its folder holds it, checked against this run."""
        if self.bank_dir is None or not (self.bank_dir / what).exists():
            return None
        path = self.bank_dir / ABSORPTION_FILE
        saved = _read_json(path) if path.is_file() else {}
        if saved.get("identity") != self._identity() or what not in saved:
            raise ValueError(
                f"{self.bank_dir / what} was not absorbed from these articles with this model and recipe "
                f"(see {path}); pass another --bank folder or remove it"
            )
        return dict(saved[what])

    def _load_bank(self) -> MemoryBank | None:
        from lift_integrations.bank import MemoryBank

        record = self._saved_record("bank")
        if record is None:
            return None
        assert self.bank_dir is not None
        bank = MemoryBank.load(self.bank_dir / "bank")
        for article, name in zip(self.corpus.articles, self.corpus.names, strict=True):
            documents = bank.documents(name) if name in bank else []
            if [(d.title, d.text) for d in documents] != [(article.title, article.text)]:
                raise ValueError(f"{self.bank_dir / 'bank'}: memory {name!r} does not hold {article.title!r}")
        self.absorptions["bank"] = {**record, "loaded_from": str(self.bank_dir / "bank")}
        self.settings.say(f"  loaded the bank of {len(bank)} memories from {self.bank_dir / 'bank'}")
        return bank

    def _load_whole(self) -> Memory | None:
        from lift_integrations.memory import Memory

        record = self._saved_record("whole")
        if record is None:
            return None
        assert self.bank_dir is not None
        memory = Memory.load(self.bank_dir / "whole")
        expected = [(a.title, a.text) for a in self.corpus.articles]
        if [(d.title, d.text) for d in memory.documents] != expected:
            raise ValueError(f"{self.bank_dir / 'whole'} does not hold this corpus")
        self.absorptions["whole"] = {**record, "loaded_from": str(self.bank_dir / "whole")}
        self.settings.say(f"  loaded the whole-corpus memory from {self.bank_dir / 'whole'}")
        return memory

    # Routing -----------------------------------------------------------------------------------------

    def bank_router(self) -> Any:
        """The router over the bank's names: the given one, else a ``BankRouter`` built from the articles'
        text (no memory is loaded or absorbed for it), calibrated now rather than in a timed answer."""
        if self.router is None:
            from lift_integrations.routing import document_embedder

            self.router = corpus_router(self.corpus, document_embedder(self.langchain_embeddings))
            _ = self.router.thresholds
        return self.router

    @property
    def routes(self) -> list[str | None]:
        """Each question's memory name by the router (``settings.route_memories``), else its own article's
        (oracle routing). Computed once, timed in ``route_s``."""
        if self._routes is None:
            questions = self.corpus.questions
            if self.settings.route_memories:
                router = self.bank_router()
                start = time.perf_counter()
                routes = list(router.route_many([q.question for q in questions]))
                self.absorptions["route_s"] = round(time.perf_counter() - start, 3)
                unknown = {r for r in routes if r is not None} - set(self.corpus.names)
                if len(routes) != len(questions) or unknown:
                    raise ValueError(f"the router must return one bank name or None per question: {unknown}")
                self._routes = routes
            else:
                self._routes = [self.corpus.name_of(q.source) for q in questions]
        return self._routes

    @property
    def routed(self) -> bool:
        return self._routes is not None

    def plan(self, which: str) -> list[str | None]:
        """Each question's memory label under plan ``which`` (:data:`PLANS`): a bank name, :data:`WHOLE`
        or ``None`` (the base model)."""
        questions = self.corpus.questions
        if which == "oracle":
            return [self.corpus.name_of(q.source) for q in questions]
        if which not in PLANS:
            raise ValueError(f"unknown memory plan {which!r}; expected one of {PLANS}")
        if which == "control" and len(self.corpus.names) < 2:
            raise ValueError("the control arms use another article's memory: select at least two articles")
        routes = self.routes
        if which == "routed":
            return list(routes)
        if which == "control":
            return [
                None if r is None else self.corpus.control_name(q.source)
                for q, r in zip(questions, routes, strict=True)
            ]
        return [None if r is None else WHOLE for r in routes]

    def memory(self, label: str | None) -> Memory | None:
        """The memory a plan's label names."""
        if label is None:
            return None
        memory = self.whole if label == WHOLE else self.bank[label]
        self._used[id(memory)] = memory
        return memory

    def close(self) -> None:
        """Release the adapters of the memories handed out and drop the stores."""
        for memory in self._used.values():
            self.lift.release(memory)
        self._used.clear()
        self._stores.clear()


def _memory_record(memory: Memory) -> dict[str, Any]:
    """What a memory records of its absorption (the trainer's own numbers) and its size."""
    stats = memory.stats
    return {
        "steps": int(stats.get("steps", 0)),
        "tokens_trained": int(stats.get("tokens_trained", 0)),
        "train_s": float(stats.get("seconds", 0.0)),
        "final_loss": stats.get("final_loss"),
        "tensor_bytes": memory.size_bytes,
    }


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
