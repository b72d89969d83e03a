"""The arms of the RAG-versus-LIFT comparison: one way each of answering a question about a document.

Every arm is built from the same :class:`~lift_integrations.LIFTModel`, decodes greedily and ends in the
same answer prompt: the core's user turn (``Context: ... Question: ...``, or the bare question when
nothing is in context) inside the model's chat template. Only *what* reaches that prompt differs: nothing,
the document, retrieved chunks, a memory, or a combination. That is what makes the scores comparable.

* ``closed_book``: the base model, nothing in context.
* ``icl``: the whole document in context when it fits, else its head and tail (the paper's baseline).
* ``rag_langchain``: LangChain's canonical LCEL chain over an ``InMemoryVectorStore``.
* ``rag_llamaindex``: a LlamaIndex ``VectorStoreIndex`` and its default query engine.
* ``lift_only``: the document's memory, nothing in context.
* ``lift_icl``: the memory plus the same head/tail view ``icl`` sees (``context="truncated"``).
* ``hybrid``: the memory plus the chunks ``rag_langchain`` retrieves (same chain, memory on).
* ``control``, ``control_icl``, ``control_hybrid``: the same as ``lift_only``, ``lift_icl`` and
  ``hybrid`` with a memory absorbed by the same recipe from an *unrelated* document. Training any memory
  changes how the model answers (format, length, confidence), so only the gain of a memory arm over its
  control measures knowledge taken from the document.

Arms are pluggable: anything with ``name``, ``prepare(resources)`` and ``answer(question) -> Answer``
works (see :class:`Arm`). What several arms share (the document's memory, the control memory, the
vector stores) lives in :class:`CaseResources`, built once per document and created lazily, so a run that
asks for no memory arm never trains one.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lift_integrations.prompting import SEPARATOR, encode_text, head_tail, qa_user_message

if TYPE_CHECKING:
    from lift_bench.cases import BenchDocument, BenchQuestion, Case
    from lift_integrations.config import LIFTConfig
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel
    from lift_integrations.routing import MemoryRouter

__all__ = [
    "ALL_ARMS",
    "ARM_DESCRIPTIONS",
    "CONTROL_OF",
    "Answer",
    "Arm",
    "CaseResources",
    "ClosedBookArm",
    "HarnessSettings",
    "ICLArm",
    "LIFTArm",
    "LangChainRAGArm",
    "LlamaIndexRAGArm",
    "icl_context",
    "langchain_rag_chain",
    "make_arm",
    "split_by_tokens",
    "stream_answer",
]

ALL_ARMS: tuple[str, ...] = (
    "closed_book",
    "icl",
    "rag_langchain",
    "rag_llamaindex",
    "lift_only",
    "lift_icl",
    "hybrid",
    "control",
    "control_icl",
    "control_hybrid",
)

ARM_DESCRIPTIONS: dict[str, str] = {
    "closed_book": "base model, nothing in context",
    "icl": "whole document in context, head+tail truncated when it does not fit",
    "rag_langchain": "LangChain LCEL chain: InMemoryVectorStore + MiniLM, top-k chunks in context",
    "rag_llamaindex": "LlamaIndex VectorStoreIndex + MiniLM, default query engine, top-k chunks",
    "lift_only": "LIFT memory of the document, nothing in context",
    "lift_icl": "LIFT memory + the same head+tail view as icl",
    "hybrid": "LIFT memory + the rag_langchain chunks",
    "control": "memory of an unrelated document (same recipe), nothing in context",
    "control_icl": "unrelated memory + the head+tail view of the document",
    "control_hybrid": "unrelated memory + the rag_langchain chunks",
}

CONTROL_OF: dict[str, str] = {"lift_only": "control", "lift_icl": "control_icl", "hybrid": "control_hybrid"}
"""Each memory arm and the control arm whose score it must beat to count as absorbed knowledge."""


@dataclass(frozen=True)
class Answer:
    """One answer and what it cost.

    ``prompt_tokens`` is what the model actually read (after any truncation), ``ttft_s`` the seconds from
    the call to the first text piece (retrieval included, as a user waits for it too) and ``total_s`` the
    seconds to the last. ``context`` holds the chunks or document view that were in the prompt, so the
    report can tell retrieval misses from reading failures. ``memory_used`` says whether a
    :class:`~lift_integrations.routing.MemoryRouter` sent the question to the memory (``None``: no router).
    """

    text: str
    prompt_tokens: int
    ttft_s: float
    total_s: float
    context: tuple[str, ...] | None = None
    memory_used: bool | None = None


@runtime_checkable
class Arm(Protocol):
    """One way of answering. ``prepare`` is called once per document, before its questions."""

    name: str

    def prepare(self, resources: CaseResources) -> None: ...

    def answer(self, question: str) -> Answer: ...


@dataclass
class HarnessSettings:
    """Everything a run holds fixed across arms and documents.

    ``chunk_size``/``chunk_overlap`` are in the model's tokens and ``k`` is the number of chunks, shared by
    both RAG arms and the hybrid arms; :func:`~lift_bench.compare.tune_rag` picks them per
    document for RAG's benefit when ``tune_rag`` is set. ``langchain_embeddings`` (a LangChain
    ``Embeddings``) and ``llamaindex_embed_model`` (a LlamaIndex ``BaseEmbedding``) default to the embedded
    all-MiniLM-L6-v2; tests pass fakes. ``llamaindex_stock_prompt`` keeps LlamaIndex's own QA template
    instead of the shared answer prompt (a different prompt, so not comparable; for curiosity only).

    ``general_probe`` is the number of questions per kind of the general-ability probe (0 disables it):
    general-knowledge questions asked closed book, and questions about unrelated SQuAD paragraphs asked
    with their paragraph in context, each answered by the base model and with the case's document memory
    (see :func:`~lift_bench.compare.run_general_probe`). ``general_questions`` replaces the
    bundled knowledge questions (``examples/data/general_questions.json``).
    """

    absorb_config: LIFTConfig | None = None
    max_new_tokens: int = 32
    chunk_size: int = 256
    chunk_overlap: int | None = None
    k: int = 4
    tune_rag: bool = False
    rag_chunk_sizes: tuple[int, ...] = (128, 256, 512)
    rag_ks: tuple[int, ...] = (2, 4, 8)
    tune_questions: int = 30
    seed: int = 0
    bootstrap_resamples: int = 1000
    langchain_embeddings: Any = None
    llamaindex_embed_model: Any = None
    llamaindex_stock_prompt: bool = False
    general_probe: int = 20
    general_questions: Sequence[BenchQuestion] | None = None
    memory_seeds: int = 1
    """Absorptions of each memory, with the recipe's seed, seed + 1, ...: every arm with a memory answers
    once per seed and its per-question scores are the mean over seeds. One training run of a memory moves
    its arm by several F1 points (docs/tuning.md, sweep 9), as much as the effects being measured; the
    mean over a few seeds measures the recipe rather than one run of it. Arms without a memory run once."""
    answer_batch: int = 1
    """Questions answered together (:meth:`LIFTModel.generate_batch`) by the arms that can (all but
    ``rag_llamaindex``), RAG tuning and the probe. 1 answers one question at a time, streaming, so each
    answer's time to first token and latency are its own; above 1 an answer's latency is its batch's time
    split evenly (nothing streams). Greedy answers are the same up to the rounding of padded batches."""
    route_memories: bool = False
    """Answer through a :class:`~lift_integrations.routing.MemoryRouter`: every arm with a memory (and the
    general-ability probe) attaches it only to the questions the router finds about its documents, the
    base model answering the rest. The router embeds with ``langchain_embeddings``."""
    log: Callable[[str], None] | None = print

    def __post_init__(self) -> None:
        if (
            not isinstance(self.memory_seeds, int)
            or isinstance(self.memory_seeds, bool)
            or self.memory_seeds < 1
        ):
            raise ValueError(
                f"HarnessSettings.memory_seeds must be a positive integer, got {self.memory_seeds!r}"
            )

    @property
    def overlap(self) -> int:
        """Chunk overlap in tokens: an eighth of the chunk unless set (LlamaIndex's own ratio is similar)."""
        return self.chunk_overlap if self.chunk_overlap is not None else self.chunk_size // 8

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


# Helpers ---------------------------------------------------------------------------------------------


def stream_answer(
    lift: LIFTModel,
    prompt: Any,
    *,
    memory: Memory | None,
    context: Any,
    max_new_tokens: int,
    router: MemoryRouter | None = None,
) -> Answer:
    """Generate through :meth:`LIFTModel.stream` and time the first piece (time to first token).

    With a ``router`` (and a memory), the memory answers only if the router sends the question to it;
    routing counts in the time to first token, as a user waits for it too."""
    start = time.perf_counter()
    used: bool | None = None
    if router is not None and memory is not None:
        used = router.wants([prompt])[0]
        memory = memory if used else None
    stream = lift.stream(prompt, memory=memory, context=context, max_new_tokens=max_new_tokens)
    first: float | None = None
    for piece in stream:
        if first is None and piece:
            first = time.perf_counter()
    end = time.perf_counter()
    result = stream.result
    assert result is not None  # set once the stream is exhausted
    return Answer(
        text=result.text,
        prompt_tokens=result.input_tokens,
        ttft_s=(first if first is not None else end) - start,
        total_s=end - start,
        memory_used=used,
    )


def batch_answers(
    lift: LIFTModel,
    prompts: Sequence[str],
    *,
    memory: Memory | None,
    contexts: Sequence[Any],
    settings: HarnessSettings,
    overhead_s: float = 0.0,
    router: MemoryRouter | None = None,
) -> list[Answer]:
    """Answer ``prompts`` ``settings.answer_batch`` at a time; each answer's latency (and time to first
    token: nothing streams) is its batch's generation time split evenly, plus ``overhead_s`` (e.g. its
    share of retrieval). With a ``router`` (and a memory), the questions it sends to the memory are
    answered with it and the others by the base model, each group in its own batches."""
    if router is not None and memory is not None:
        timer = time.perf_counter()
        wants = router.wants(list(prompts))
        overhead_s += (time.perf_counter() - timer) / max(1, len(prompts))
        routed: list[Answer | None] = [None] * len(prompts)
        for use in (True, False):
            picked = [i for i, want in enumerate(wants) if bool(want) == use]
            group = batch_answers(
                lift,
                [prompts[i] for i in picked],
                memory=memory if use else None,
                contexts=[contexts[i] for i in picked],
                settings=settings,
                overhead_s=overhead_s,
            )
            for i, answer in zip(picked, group, strict=True):
                routed[i] = replace(answer, memory_used=use)
        assert all(a is not None for a in routed)
        return [a for a in routed if a is not None]
    answers: list[Answer] = []
    size = max(1, settings.answer_batch)
    for start in range(0, len(prompts), size):
        timer = time.perf_counter()
        results = lift.generate_batch(
            prompts[start : start + size],
            memory=memory,
            contexts=contexts[start : start + size],
            max_new_tokens=settings.max_new_tokens,
            batch_size=size,
        )
        share = (time.perf_counter() - timer) / len(results) + overhead_s
        answers += [Answer(r.text, r.input_tokens, share, share) for r in results]
    return answers


def answer_all(arm: Arm, questions: Sequence[str], settings: HarnessSettings) -> list[Answer]:
    """Every question's answer from ``arm``: batched through its ``answer_batch`` when it has one and
    ``settings.answer_batch`` > 1, else one question at a time."""
    batched = getattr(arm, "answer_batch", None)
    if settings.answer_batch > 1 and batched is not None:
        return batched(list(questions))
    return [arm.answer(q) for q in questions]


def retrieve_and_answer(
    retriever: Any,
    lift: LIFTModel,
    questions: Sequence[str],
    memory: Memory | None,
    settings: HarnessSettings,
    router: MemoryRouter | None = None,
) -> list[Answer]:
    """Batched RAG: the LangChain retriever's ``batch`` for every question, then the chunks in context as
    the LCEL chain of :func:`langchain_rag_chain` puts them (the same prompt ids), answered in batches
    (through ``router`` when given, see :func:`batch_answers`)."""
    timer = time.perf_counter()
    found = retriever.batch(list(questions))
    chunks = [tuple(d.page_content for d in docs) for docs in found]
    retrieval_share = (time.perf_counter() - timer) / max(1, len(questions))
    answers = batch_answers(
        lift,
        list(questions),
        memory=memory,
        contexts=[list(c) for c in chunks],
        settings=settings,
        overhead_s=retrieval_share,
        router=router,
    )
    return [_with_context(a, c) for a, c in zip(answers, chunks, strict=True)]


def icl_context(lift: LIFTModel, document_text: str, max_new_tokens: int) -> str:
    """The document as ``icl`` puts it in context: whole when it fits, else its head and tail.

    This reproduces what ``context="truncated"`` does for a memory's documents (same budget, same
    separator), so ``icl`` and ``lift_icl`` read exactly the same view and differ only by the memory.
    """
    budget = lift.context_window - max_new_tokens - 64
    ids = encode_text(lift.tokenizer, document_text)
    if len(ids) <= budget:
        return document_text
    return lift.tokenizer.decode(head_tail(ids, max(budget, 16), encode_text(lift.tokenizer, SEPARATOR)))


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_by_tokens(text: str, chunk_size: int, chunk_overlap: int, count: Callable[[str], int]) -> list[str]:
    """Chunks of at most about ``chunk_size`` tokens, cut at paragraph, then sentence, then word boundaries,
    consecutive chunks sharing up to ``chunk_overlap`` tokens of whole sentences.

    This is what ``RecursiveCharacterTextSplitter.from_huggingface_tokenizer`` does for a LangChain user;
    ``langchain-text-splitters`` is not a dependency, so the few lines live here. Sizes are in the
    answering model's tokens because the chunks end up in its prompt.
    """
    if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"need chunk_size > 0 and 0 <= chunk_overlap < chunk_size, got {chunk_size}, {chunk_overlap}"
        )
    units: list[tuple[str, str, int]] = []  # (separator before it, text, tokens)
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        separator = "\n\n"
        sentences = [paragraph] if count(paragraph) <= chunk_size else _SENTENCE_END.split(paragraph)
        for sentence in sentences:
            words, piece = sentence.split(), ""
            for word in words:  # a sentence longer than a chunk is cut between words
                candidate = f"{piece} {word}" if piece else word
                if piece and count(candidate) > chunk_size:
                    units.append((separator, piece, count(piece)))
                    separator, piece = " ", word
                else:
                    piece = candidate
            if piece:
                units.append((separator, piece, count(piece)))
                separator = " "
    chunks: list[str] = []
    current: list[tuple[str, str, int]] = []
    for unit in units:
        if current and sum(u[2] for u in current) + unit[2] > chunk_size:
            chunks.append(current[0][1] + "".join(sep + piece for sep, piece, _ in current[1:]))
            carried: list[tuple[str, str, int]] = []
            for previous in reversed(current):
                if sum(u[2] for u in carried) + previous[2] > chunk_overlap or (
                    sum(u[2] for u in carried) + previous[2] + unit[2] > chunk_size
                ):
                    break
                carried.insert(0, previous)
            current = carried
        current.append(unit)
    if current:
        chunks.append(current[0][1] + "".join(sep + piece for sep, piece, _ in current[1:]))
    return chunks


class _SentenceTransformerEmbeddings:
    """A LangChain ``Embeddings`` over the embedded all-MiniLM-L6-v2, for when ``lift_integrations.langchain``
    (which has its own) cannot be imported. Built as a subclass at first use so this module does not
    import LangChain."""

    @staticmethod
    def build() -> Any:
        from langchain_core.embeddings import Embeddings

        class SentenceTransformerEmbeddings(Embeddings):
            def __init__(self) -> None:
                from sentence_transformers import SentenceTransformer

                from lift_integrations.loading import default_embedding_path

                self.client = SentenceTransformer(default_embedding_path(), device="cpu")

            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                vectors = self.client.encode(
                    list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )
                return vectors.tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        return SentenceTransformerEmbeddings()


def default_langchain_embeddings() -> Any:
    """The project's LangChain embeddings (all-MiniLM-L6-v2), or a local equivalent if that package is
    unavailable; either way the same model a LangChain user would reach for offline."""
    try:
        from lift_integrations.langchain import SentenceTransformerEmbeddings
    except Exception:  # the LangChain binding is optional here; the embedder is all RAG needs
        return _SentenceTransformerEmbeddings.build()
    return SentenceTransformerEmbeddings()


# Shared per-document resources -----------------------------------------------------------------------


@dataclass
class Absorption:
    """How one memory was made: wall seconds around ``absorb`` and the trainer's own numbers."""

    title: str
    document_tokens: int
    wall_s: float
    train_s: float
    tokens_trained: int
    steps: int
    final_loss: float | None
    tensor_bytes: int
    disk_bytes: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_trained / self.train_s if self.train_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "tokens_per_s": round(self.tokens_per_s, 1)}


@dataclass
class CaseResources:
    """What the arms of one case share, each built on first use: memories, the ICL view, vector stores.

    The LangChain store is keyed by ``(chunk_size, overlap)`` so that RAG tuning and the arms reuse
    embeddings instead of recomputing them.
    """

    lift: LIFTModel
    case: Case
    settings: HarnessSettings
    absorptions: dict[str, Absorption] = field(default_factory=dict)
    rag: dict[str, Any] = field(default_factory=dict)
    _stores: dict[tuple[int, int], Any] = field(default_factory=dict)
    _memories: dict[str, Memory] = field(default_factory=dict)
    _router: MemoryRouter | None = None
    _seed_offset: int = 0

    @property
    def document(self) -> BenchDocument:
        return self.case.document

    @property
    def chunk_size(self) -> int:
        return int(self.rag.get("chunk_size", self.settings.chunk_size))

    @property
    def k(self) -> int:
        return int(self.rag.get("k", self.settings.k))

    @property
    def overlap(self) -> int:
        return int(self.rag.get("chunk_overlap", self.settings.overlap))

    def memory(self, which: str = "document") -> Memory:
        """The memory of the document (``"document"``) or of the unrelated control (``"control"``)."""
        if which not in self._memories:
            source = self.case.document if which == "document" else self.case.control
            self._memories[which] = self._absorb(which, source)
        return self._memories[which]

    def next_memory_seed(self) -> None:
        """Release the memories made so far; the next ones are absorbed with the recipe's seed plus one
        more than before (:attr:`HarnessSettings.memory_seeds`). Their absorption records are kept, the
        first seed's under ``"document"``/``"control"``, later ones under ``"document@seed1"`` and so on
        (the seed the absorption used)."""
        self._release_memories()
        self._seed_offset += 1

    def _release_memories(self) -> None:
        for memory in self._memories.values():
            self.lift.release(memory)
        self._memories.clear()

    def router(self) -> MemoryRouter | None:
        """The document memory's router when ``settings.route_memories`` is set, else ``None``.

        Every memory arm follows its decisions, the control arms too: a control then answers with the
        unrelated memory exactly the questions the document's memory answers, so the gain over it still
        isolates what the document taught. It reads the document's text only (as absorbed:
        :func:`~lift_integrations.routing.text_memory`), so a run of control arms alone absorbs no
        document memory for it, and it serves every memory seed. It embeds with the run's LangChain
        embeddings; its threshold is calibrated here, inside the arm's preparation."""
        if not self.settings.route_memories:
            return None
        if self._router is None:
            from lift_integrations.routing import MemoryRouter, document_embedder, text_memory

            memory = text_memory([(self.document.title, self.document.text)])
            self._router = MemoryRouter(memory, embed=document_embedder(self.langchain_embeddings))
            _ = self._router.threshold  # embed the passages and calibrate now, not in a timed answer
        return self._router

    def absorbed(self, which: str = "document") -> Memory | None:
        """The memory if an arm already made it, else ``None``: for measurements that must reuse the arms'
        memory rather than train one of their own (the general-ability probe)."""
        return self._memories.get(which)

    def _absorb(self, which: str, source: BenchDocument) -> Memory:
        from lift_integrations.config import LIFTConfig

        config = self.settings.absorb_config
        if config is None:
            config = LIFTConfig.for_device(self.lift.device.type, seed=self.settings.seed)
        if self._seed_offset:
            config = replace(config, seed=config.seed + self._seed_offset)
        tokens = self.lift.count_tokens(source.full_text)
        self.settings.say(f"  absorbing the {which} memory: {source.label!r}, {tokens:,} tokens")
        start = time.perf_counter()
        memory = self.lift.absorb((source.title, source.text), config=config)
        wall = time.perf_counter() - start
        stats = memory.stats
        record = f"{which}@seed{config.seed}" if self._seed_offset else which
        self.absorptions[record] = Absorption(
            title=source.label,
            document_tokens=tokens,
            wall_s=round(wall, 3),
            train_s=float(stats.get("seconds", wall)),
            tokens_trained=int(stats.get("tokens_trained", 0)),
            steps=int(stats.get("steps", 0)),
            final_loss=stats.get("final_loss"),
            tensor_bytes=memory.size_bytes,
            disk_bytes=_disk_bytes(memory),
        )
        self.settings.say(
            f"  absorbed in {wall:.1f} s ({self.absorptions[record].tokens_per_s:,.0f} trained tok/s)"
        )
        return memory

    @cached_property
    def icl_text(self) -> str:
        """The view of the document ``icl`` and ``control_icl`` put in context."""
        return icl_context(self.lift, self.document.full_text, self.settings.max_new_tokens)

    @property
    def langchain_embeddings(self) -> Any:
        if self.settings.langchain_embeddings is None:
            self.settings.langchain_embeddings = default_langchain_embeddings()
        return self.settings.langchain_embeddings

    def langchain_store(self, chunk_size: int | None = None, overlap: int | None = None) -> Any:
        """An ``InMemoryVectorStore`` of the document's chunks, as a LangChain user would fill it."""
        from langchain_core.documents import Document
        from langchain_core.vectorstores import InMemoryVectorStore

        chunk_size = chunk_size or self.chunk_size
        overlap = self.overlap if overlap is None else overlap
        key = (chunk_size, min(overlap, chunk_size - 1))
        if key not in self._stores:
            chunks = split_by_tokens(self.document.full_text, key[0], key[1], self.lift.count_tokens)
            store = InMemoryVectorStore(self.langchain_embeddings)
            store.add_documents(
                [Document(page_content=c, metadata={"chunk": i}) for i, c in enumerate(chunks)]
            )
            self._stores[key] = store
        return self._stores[key]

    def close(self) -> None:
        """Release the memories' adapters and drop the stores (a long run holds many documents)."""
        self._release_memories()
        self._router = None
        self._stores.clear()


def _disk_bytes(memory: Memory) -> int:
    """Bytes the saved memory takes on disk (tensors, document text and manifest)."""
    folder = Path(tempfile.mkdtemp(prefix="lift-bench-memory-"))
    try:
        saved = memory.save(folder / "memory")
        return sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Arms ------------------------------------------------------------------------------------------------


class ClosedBookArm:
    """The base model with nothing in context: what it knows before reading anything."""

    def __init__(self, lift: LIFTModel, settings: HarnessSettings, name: str = "closed_book") -> None:
        self.name, self.lift, self.settings = name, lift, settings

    def prepare(self, resources: CaseResources) -> None:
        pass

    def answer(self, question: str) -> Answer:
        return stream_answer(
            self.lift, question, memory=None, context=None, max_new_tokens=self.settings.max_new_tokens
        )

    def answer_batch(self, questions: list[str]) -> list[Answer]:
        contexts = [None] * len(questions)
        return batch_answers(self.lift, questions, memory=None, contexts=contexts, settings=self.settings)


class ICLArm:
    """The base model reading the document: whole when it fits the window, else its head and tail."""

    def __init__(self, lift: LIFTModel, settings: HarnessSettings, name: str = "icl") -> None:
        self.name, self.lift, self.settings = name, lift, settings
        self._context: str = ""

    def prepare(self, resources: CaseResources) -> None:
        self._context = resources.icl_text

    def answer(self, question: str) -> Answer:
        answer = stream_answer(
            self.lift,
            question,
            memory=None,
            context=[self._context],
            max_new_tokens=self.settings.max_new_tokens,
        )
        return _with_context(answer, (self._context,))

    def answer_batch(self, questions: list[str]) -> list[Answer]:
        contexts = [[self._context]] * len(questions)
        answers = batch_answers(self.lift, questions, memory=None, contexts=contexts, settings=self.settings)
        return [_with_context(a, (self._context,)) for a in answers]


class LIFTArm:
    """A memory with an optional document view: ``source`` picks the document's memory or the control's;
    ``view`` is ``None`` (nothing in context) or ``"truncated"`` (the ``icl`` view)."""

    def __init__(
        self, lift: LIFTModel, settings: HarnessSettings, name: str, *, source: str, view: str | None
    ) -> None:
        if source not in ("document", "control") or view not in (None, "truncated"):
            raise ValueError(f"bad LIFTArm source/view: {source!r}, {view!r}")
        self.name, self.lift, self.settings, self.source, self.view = name, lift, settings, source, view
        self._memory: Memory | None = None
        self._router: MemoryRouter | None = None
        self._context: Any = None
        self._view: tuple[str, ...] = ()

    def prepare(self, resources: CaseResources) -> None:
        self._memory = resources.memory(self.source)
        self._router = resources.router()
        if self.view == "truncated":
            # The document's own memory uses the public "truncated" path; the control's memory holds an
            # unrelated document, and a routed question may reach no memory at all, so those get the
            # same view explicitly (identical prompt ids, tested).
            explicit = self.source == "control" or self._router is not None
            self._context = [resources.icl_text] if explicit else "truncated"
            self._view = (resources.icl_text,)

    def answer(self, question: str) -> Answer:
        answer = stream_answer(
            self.lift,
            question,
            memory=self._memory,
            context=self._context,
            max_new_tokens=self.settings.max_new_tokens,
            router=self._router,
        )
        return _with_context(answer, self._view) if self._view else answer

    def answer_batch(self, questions: list[str]) -> list[Answer]:
        contexts = [self._context] * len(questions)
        answers = batch_answers(
            self.lift,
            questions,
            memory=self._memory,
            contexts=contexts,
            settings=self.settings,
            router=self._router,
        )
        return [_with_context(a, self._view) for a in answers] if self._view else answers


_LC_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def langchain_rag_chain(
    retriever: Any,
    lift: LIFTModel,
    *,
    memory: Memory | None,
    max_new_tokens: int,
    record: dict[str, Any] | None = None,
) -> Any:
    """The canonical LCEL RAG chain, with the LIFT model as its LLM.

    ``{"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | llm |
    StrOutputParser()``. The prompt template is the core's own answer prompt
    (``qa_user_message("{question}", "{context}")``), so the model sees exactly the token ids that
    ``lift.generate(question, context=chunks)`` builds, and the "llm" is a streaming generator over
    :meth:`LIFTModel.stream` with ``memory`` (``None`` for plain RAG, a memory for hybrid). ``record``
    receives the retrieved chunks, the messages and the generation result of the last call.
    """
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableGenerator, RunnablePassthrough

    record = record if record is not None else {}
    prompt = ChatPromptTemplate.from_messages([("human", qa_user_message("{question}", "{context}"))])

    def format_docs(docs: Sequence[Any]) -> str:
        record["chunks"] = tuple(d.page_content for d in docs)
        return "\n\n".join(d.page_content for d in docs)

    def llm(prompt_values: Iterator[Any]) -> Iterator[str]:
        value = list(prompt_values)[-1]  # a prompt value arrives whole, as one chunk
        messages = [
            {"role": _LC_ROLES.get(m.type, m.type), "content": m.content} for m in value.to_messages()
        ]
        record["messages"] = messages
        stream = lift.stream(messages, memory=memory, max_new_tokens=max_new_tokens)
        yield from stream
        record["result"] = stream.result

    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | RunnableGenerator(llm)
        | StrOutputParser()
    )


class LangChainRAGArm:
    """RAG as a LangChain user builds it; with ``source`` set, the same chain over a memory (hybrid)."""

    def __init__(
        self, lift: LIFTModel, settings: HarnessSettings, name: str, *, source: str | None = None
    ) -> None:
        self.name, self.lift, self.settings, self.source = name, lift, settings, source
        self._chains: dict[bool, Any] = {}
        self._record: dict[str, Any] = {}
        self._retriever: Any = None
        self._memory: Memory | None = None
        self._router: MemoryRouter | None = None

    def prepare(self, resources: CaseResources) -> None:
        memory = resources.memory(self.source) if self.source is not None else None
        self._router = resources.router() if self.source is not None else None
        retriever = resources.langchain_store().as_retriever(search_kwargs={"k": resources.k})
        self._retriever, self._memory = retriever, memory
        # With a router, one chain with the memory and one without; each question takes one of them.
        self._chains = {
            use: langchain_rag_chain(
                retriever,
                self.lift,
                memory=memory if use else None,
                max_new_tokens=self.settings.max_new_tokens,
                record=self._record,
            )
            for use in ((True, False) if self._router is not None else (True,))
        }

    def answer(self, question: str) -> Answer:
        self._record.clear()
        start = time.perf_counter()
        used = self._router.wants([question])[0] if self._router is not None else None
        first: float | None = None
        for piece in self._chains[used is not False].stream(question):
            if first is None and piece:
                first = time.perf_counter()
        end = time.perf_counter()
        result = self._record["result"]
        return Answer(
            text=result.text,
            prompt_tokens=result.input_tokens,
            ttft_s=(first if first is not None else end) - start,
            total_s=end - start,
            context=self._record.get("chunks"),
            memory_used=used,
        )

    def answer_batch(self, questions: list[str]) -> list[Answer]:
        return retrieve_and_answer(
            self._retriever, self.lift, questions, self._memory, self.settings, self._router
        )


class LlamaIndexRAGArm:
    """RAG as a LlamaIndex user builds it: ``VectorStoreIndex.from_documents`` and ``as_query_engine``.

    The defaults a user gets are kept (compact response mode, ``SentenceSplitter``), except for what the
    comparison fixes: the LLM is a :class:`~lift_integrations.llama_index.LIFTLLM` around the shared
    model, the embedder is all-MiniLM-L6-v2, chunk size and ``similarity_top_k`` are the tuned values,
    and the QA template is the shared answer prompt (unless ``llamaindex_stock_prompt``). Prompt tokens
    come from LlamaIndex's own ``TokenCountingHandler``, which reads the usage ``LIFTLLM`` reports.
    """

    def __init__(self, lift: LIFTModel, settings: HarnessSettings, name: str = "rag_llamaindex") -> None:
        self.name, self.lift, self.settings = name, lift, settings
        self._engine: Any = None
        self._counter: Any = None

    def prepare(self, resources: CaseResources) -> None:
        from llama_index.core import Document, PromptTemplate, VectorStoreIndex
        from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
        from llama_index.core.node_parser import SentenceSplitter

        from lift_integrations.llama_index import LIFTLLM, LIFTSentenceTransformerEmbedding

        if self.settings.llamaindex_embed_model is None:
            self.settings.llamaindex_embed_model = LIFTSentenceTransformerEmbedding()
        tokenize = partial(encode_text, self.lift.tokenizer)
        self._counter = TokenCountingHandler(tokenizer=tokenize)
        # Counting through LlamaIndex's own handler, as a user would with Settings.callback_manager; set
        # per object here so the run leaves LlamaIndex's global Settings untouched.
        callbacks = CallbackManager([self._counter])
        llm = LIFTLLM(self.lift, max_new_tokens=self.settings.max_new_tokens)
        splitter = SentenceSplitter(
            chunk_size=resources.chunk_size,
            chunk_overlap=min(resources.overlap, resources.chunk_size - 1),
            tokenizer=tokenize,
        )
        index = VectorStoreIndex.from_documents(
            [Document(text=resources.document.full_text)],
            embed_model=self.settings.llamaindex_embed_model,
            transformations=[splitter],
            callback_manager=callbacks,
        )
        kwargs: dict[str, Any] = {}
        if not self.settings.llamaindex_stock_prompt:
            kwargs["text_qa_template"] = PromptTemplate(qa_user_message("{query_str}", "{context_str}"))
        self._engine = index.as_query_engine(llm=llm, similarity_top_k=resources.k, streaming=True, **kwargs)
        llm.callback_manager = callbacks  # after: the response synthesizer set Settings.callback_manager

    def answer(self, question: str) -> Answer:
        self._counter.reset_counts()
        start = time.perf_counter()
        response = self._engine.query(question)
        first: float | None = None
        pieces = []
        for piece in response.response_gen:
            if first is None and piece:
                first = time.perf_counter()
            pieces.append(piece)
        end = time.perf_counter()
        counts = self._counter.llm_token_counts
        chunks = tuple(n.node.get_content() for n in response.source_nodes)
        return Answer(
            text="".join(pieces),
            prompt_tokens=counts[-1].prompt_token_count if counts else 0,
            ttft_s=(first if first is not None else end) - start,
            total_s=end - start,
            context=chunks,
        )


def _with_context(answer: Answer, context: tuple[str, ...]) -> Answer:
    return replace(answer, context=context)


def make_arm(name: str, lift: LIFTModel, settings: HarnessSettings) -> Arm:
    """Build a named arm from :data:`ALL_ARMS`."""
    factories: dict[str, Callable[[], Arm]] = {
        "closed_book": lambda: ClosedBookArm(lift, settings),
        "icl": lambda: ICLArm(lift, settings),
        "rag_langchain": lambda: LangChainRAGArm(lift, settings, "rag_langchain"),
        "rag_llamaindex": lambda: LlamaIndexRAGArm(lift, settings),
        "lift_only": lambda: LIFTArm(lift, settings, "lift_only", source="document", view=None),
        "lift_icl": lambda: LIFTArm(lift, settings, "lift_icl", source="document", view="truncated"),
        "hybrid": lambda: LangChainRAGArm(lift, settings, "hybrid", source="document"),
        "control": lambda: LIFTArm(lift, settings, "control", source="control", view=None),
        "control_icl": lambda: LIFTArm(lift, settings, "control_icl", source="control", view="truncated"),
        "control_hybrid": lambda: LangChainRAGArm(lift, settings, "control_hybrid", source="control"),
    }
    if name not in factories:
        raise ValueError(f"unknown arm {name!r}; expected one of {', '.join(ALL_ARMS)}")
    return factories[name]()
