"""The arms of the corpus setting (:mod:`lift_bench.corpus`): the same answer prompt and decoding as the
other settings, over a knowledge base of many articles.

* ``closed_book``: the base model, nothing in context.
* ``rag_langchain``, ``rag_llamaindex``: the single setting's RAG arms over one vector store (one index)
  of every article's chunks.
* ``lift_only``: per question, the memory the bank's router chooses (none: the base model), nothing in
  context; answered through ``generate_batch(memories=[...])``, each row with its own memory.
* ``lift_oracle``: each question with its own article's memory (what perfect routing would give).
* ``hybrid``: the routed memory plus the ``rag_langchain`` chunks.
* ``lift_whole``, ``hybrid_whole``: one memory absorbed from the whole corpus (composition), attached to
  the questions the router gave some memory, without and with the chunks.
* ``control``, ``control_hybrid``: another article's memory (the next article's), on the questions the
  router gave some memory, without and with the chunks (see :mod:`lift_bench.corpus`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lift_bench.arms import (
    Answer,
    ClosedBookArm,
    HarnessSettings,
    LangChainRAGArm,
    LlamaIndexRAGArm,
    answer_all,
    stream_answer,
)
from lift_bench.corpus import CorpusResources

if TYPE_CHECKING:
    from lift_integrations.memory import Memory
    from lift_integrations.model import LIFTModel

__all__ = [
    "BANK_ARMS",
    "CORPUS_ARMS",
    "CORPUS_ARM_DESCRIPTIONS",
    "RAG_BASELINES",
    "WHOLE_ARMS",
    "CorpusLlamaIndexArm",
    "CorpusMemoryArm",
    "answer_corpus",
    "answer_with_memories",
    "make_corpus_arm",
]

CORPUS_ARMS: tuple[str, ...] = (
    "closed_book",
    "rag_langchain",
    "rag_llamaindex",
    "lift_only",
    "lift_oracle",
    "hybrid",
    "lift_whole",
    "hybrid_whole",
    "control",
    "control_hybrid",
)

CORPUS_ARM_DESCRIPTIONS: dict[str, str] = {
    "closed_book": "base model, nothing in context",
    "rag_langchain": "LangChain LCEL chain over one InMemoryVectorStore of every article's chunks (MiniLM)",
    "rag_llamaindex": "LlamaIndex VectorStoreIndex of every article + MiniLM, default query engine",
    "lift_only": "the memory the bank's router chooses per question (none: base model), nothing in context",
    "lift_oracle": "the question's own article's memory (perfect routing), nothing in context",
    "hybrid": "the routed memory + the rag_langchain chunks",
    "lift_whole": "one memory of the whole corpus, on the questions the router gave a memory",
    "hybrid_whole": "the whole-corpus memory + the rag_langchain chunks, on the same questions",
    "control": "another article's memory (the next one's) on the questions the router gave a memory",
    "control_hybrid": "another article's memory + the rag_langchain chunks",
}

BANK_ARMS = frozenset({"lift_only", "lift_oracle", "hybrid", "control", "control_hybrid"})
"""Arms that use the bank's memories (absorbed with ``absorb_many``)."""

WHOLE_ARMS = frozenset({"lift_whole", "hybrid_whole"})
"""Arms that use the memory of the whole corpus (one long absorption: optional)."""

RAG_BASELINES = ("rag_langchain", "rag_llamaindex")
"""The arms every other arm's F1 is compared with (ratio and paired difference)."""


def answer_with_memories(
    lift: LIFTModel,
    prompts: Sequence[str],
    memories: Sequence[Memory | None],
    contexts: Sequence[list[str] | None],
    settings: HarnessSettings,
    overhead_s: float = 0.0,
) -> list[Answer]:
    """Answer each prompt with its own memory (or none) and context.

    With ``settings.answer_batch`` above 1, one ``generate_batch(memories=[...])`` call answers them all
    (rows of different memories share batches; each answer's latency is the call's time split evenly);
    else one question at a time, streamed. ``overhead_s`` (retrieval, routing) is added to each latency.
    """
    if not prompts:
        return []
    if settings.answer_batch > 1:
        start = time.perf_counter()
        results = lift.generate_batch(
            list(prompts),
            memories=list(memories),
            contexts=list(contexts),
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.answer_batch,
        )
        share = (time.perf_counter() - start) / len(results) + overhead_s
        return [
            Answer(r.text, r.input_tokens, share, share, memory_used=m is not None)
            for r, m in zip(results, memories, strict=True)
        ]
    answers = []
    for prompt, memory, context in zip(prompts, memories, contexts, strict=True):
        answer = stream_answer(
            lift, prompt, memory=memory, context=context, max_new_tokens=settings.max_new_tokens
        )
        answers.append(
            replace(
                answer,
                ttft_s=answer.ttft_s + overhead_s,
                total_s=answer.total_s + overhead_s,
                memory_used=memory is not None,
            )
        )
    return answers


class CorpusMemoryArm:
    """Each question with the memory of a plan (:data:`~lift_bench.corpus.PLANS`), with the corpus RAG
    chunks in context when ``rag`` is set (the ``rag_langchain`` retriever, so the same chunks)."""

    def __init__(
        self, lift: LIFTModel, settings: HarnessSettings, name: str, *, plan: str, rag: bool
    ) -> None:
        self.name, self.lift, self.settings, self.plan, self.rag = name, lift, settings, plan, rag

    @property
    def uses_whole(self) -> bool:
        return self.plan == "whole"

    def answer_corpus(self, resources: CorpusResources) -> tuple[list[Answer], list[str | None]]:
        """Every corpus question's answer, and the memory each used (a bank name, the whole corpus's
        label, or ``None``). Routing time is shared out over the answers of routed plans."""
        questions = [q.question for q in resources.corpus.questions]
        labels = resources.plan(self.plan)
        memories = [resources.memory(label) for label in labels]
        overhead = 0.0
        if self.plan != "oracle" and self.settings.route_memories:
            overhead += float(resources.absorptions.get("route_s", 0.0)) / len(questions)
        chunks: list[tuple[str, ...]] | None = None
        if self.rag:
            store = resources.langchain_store()  # built before the clock: the arms share it
            start = time.perf_counter()
            found = store.as_retriever(search_kwargs={"k": resources.k}).batch(questions)
            chunks = [tuple(d.page_content for d in docs) for docs in found]
            overhead += (time.perf_counter() - start) / len(questions)
        contexts = [None] * len(questions) if chunks is None else [list(c) for c in chunks]
        answers = answer_with_memories(self.lift, questions, memories, contexts, self.settings, overhead)
        if chunks is not None:
            answers = [replace(a, context=c) for a, c in zip(answers, chunks, strict=True)]
        return answers, labels


class CorpusLlamaIndexArm(LlamaIndexRAGArm):
    """The LlamaIndex arm with one index of every article: ``VectorStoreIndex.from_documents`` of one
    ``Document`` per article (its title in the metadata), as a user indexes a folder of files; the rest
    (splitter, query engine, prompt, token counting) is the single setting's arm."""

    def prepare(self, resources: Any) -> None:
        from functools import partial

        from llama_index.core import Document, PromptTemplate, VectorStoreIndex
        from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
        from llama_index.core.node_parser import SentenceSplitter

        from lift_integrations.llama_index import LIFTLLM, LIFTSentenceTransformerEmbedding
        from lift_integrations.prompting import encode_text, qa_user_message

        if self.settings.llamaindex_embed_model is None:
            self.settings.llamaindex_embed_model = LIFTSentenceTransformerEmbedding()
        tokenize = partial(encode_text, self.lift.tokenizer)
        self._counter = TokenCountingHandler(tokenizer=tokenize)
        callbacks = CallbackManager([self._counter])
        llm = LIFTLLM(self.lift, max_new_tokens=self.settings.max_new_tokens)
        splitter = SentenceSplitter(
            chunk_size=resources.chunk_size,
            chunk_overlap=min(resources.overlap, resources.chunk_size - 1),
            tokenizer=tokenize,
        )
        documents = [
            Document(text=a.full_text, metadata={"title": a.title}, excluded_llm_metadata_keys=["title"])
            for a in resources.corpus.articles
        ]
        index = VectorStoreIndex.from_documents(
            documents,
            embed_model=self.settings.llamaindex_embed_model,
            transformations=[splitter],
            callback_manager=callbacks,
        )
        kwargs: dict[str, Any] = {}
        if not self.settings.llamaindex_stock_prompt:
            kwargs["text_qa_template"] = PromptTemplate(qa_user_message("{query_str}", "{context_str}"))
        self._engine = index.as_query_engine(llm=llm, similarity_top_k=resources.k, streaming=True, **kwargs)
        llm.callback_manager = callbacks


def make_corpus_arm(name: str, lift: LIFTModel, settings: HarnessSettings) -> Any:
    """Build a named arm of :data:`CORPUS_ARMS`."""
    memory_arms = {
        "lift_only": ("routed", False),
        "lift_oracle": ("oracle", False),
        "hybrid": ("routed", True),
        "lift_whole": ("whole", False),
        "hybrid_whole": ("whole", True),
        "control": ("control", False),
        "control_hybrid": ("control", True),
    }
    if name in memory_arms:
        plan, rag = memory_arms[name]
        return CorpusMemoryArm(lift, settings, name, plan=plan, rag=rag)
    if name == "closed_book":
        return ClosedBookArm(lift, settings)
    if name == "rag_langchain":
        return LangChainRAGArm(lift, settings, "rag_langchain")
    if name == "rag_llamaindex":
        return CorpusLlamaIndexArm(lift, settings)
    raise ValueError(f"unknown corpus arm {name!r}; expected one of {', '.join(CORPUS_ARMS)}")


def answer_corpus(arm: Any, resources: CorpusResources) -> tuple[list[Answer], list[str | None] | None]:
    """Every corpus question's answer from ``arm``, and the memory label of each (``None`` for an arm
    without memories): a memory arm plans its own memories; any other arm (the single setting's kind:
    ``prepare`` then ``answer``/``answer_batch``) answers the questions' text."""
    if isinstance(arm, CorpusMemoryArm):
        return arm.answer_corpus(resources)
    arm.prepare(resources)
    return answer_all(arm, [q.question for q in resources.corpus.questions], resources.settings), None
