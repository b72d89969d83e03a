"""LangChain: absorb a document into the embedded SmolLM2's memory, then answer with the canonical LCEL
RAG chain in parametric and hybrid modes, streaming the answers.

The chain is the usual one; only the retriever differs between the modes:

    {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()

* parametric: the retriever returns no passages; the model answers from what it absorbed;
* hybrid: the retriever also returns the passages of the absorbed document closest to the question.

Data: the first paragraphs of the "Normans" article from the SQuAD v1.1 dev set (CC BY-SA 4.0, see
examples/data/NOTICE.md). Runs offline in under a minute on a 2-core CPU; most of it is the absorption:
three training steps, each a forward and backward pass of the 135M model over about 1,500 tokens. On a
machine busy with other work, ``OMP_NUM_THREADS=1`` avoids torch threads waiting on each other (measured
on such a machine: 45 s in all, 19 s absorbing, with one thread; 134 s with two). After three steps a
135M-parameter model answers roughly, not reliably; more paragraphs, QA pairs and epochs (see the
options) cost proportionally more time.

    python examples/langchain_chain.py [--paragraphs 2] [--questions 2] [--epochs 1] [--qa 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from lift_integrations import LIFTConfig
from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever

DATA = Path(__file__).resolve().parent / "data" / "normans.json"

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in a few words.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


class PrintAbsorbProgress(BaseCallbackHandler):
    """Shows the ``lift_absorb_*`` custom events that LIFTChatModel.absorb emits."""

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == "lift_absorb_start":
            print(f"  absorbing {data['num_documents']} document(s): {data['titles']}")
        elif name == "lift_absorb_progress":
            print(
                f"  step {data['step']}/{data['total_steps']} (stage {data['stage']}) "
                f"loss {data['loss']:.3f}  {data['elapsed_s']:.1f}s"
            )
        elif name == "lift_absorb_end":
            print(
                f"  memory {data['memory_id']}: {data['num_parameters']:,} parameters, {data['seconds']:.1f}s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=2, help="paragraphs of the article to absorb")
    parser.add_argument("--questions", type=int, default=2, help="questions to ask per mode")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the segment + QA stage")
    parser.add_argument("--qa", type=int, default=4, help="auxiliary QA pairs generated per document")
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    paragraphs = json.loads(DATA.read_text(encoding="utf-8"))[: args.paragraphs]
    text = "\n\n".join(paragraph["context"] for paragraph in paragraphs)
    questions = [q for paragraph in paragraphs for q in paragraph["questions"]][: args.questions]
    document = Document(
        page_content=text, metadata={"title": "Normans", "source": "SQuAD v1.1 dev (CC BY-SA 4.0)"}
    )

    started = time.perf_counter()
    llm = LIFTChatModel(device="cpu", max_tokens=args.max_tokens)
    llm.lift  # noqa: B018 - load the weights now, to time it separately
    print(f"Loaded {llm.model_name} in {time.perf_counter() - started:.1f}s")

    started = time.perf_counter()
    print(f"Absorbing {len(paragraphs)} paragraphs ({llm.get_num_tokens(text)} tokens):")
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=args.epochs, qa_per_document=args.qa)
    parametric = LIFTMemoryRetriever.from_documents(
        [document],
        llm=llm,
        mode="parametric",
        absorb_kwargs={"lift_config": config, "callbacks": [PrintAbsorbProgress()]},
    )
    print(f"Absorbed in {time.perf_counter() - started:.1f}s")
    # A hybrid retriever over the same memory: it indexes the memory's document (chunks + MiniLM).
    started = time.perf_counter()
    hybrid = LIFTMemoryRetriever(llm=llm, mode="hybrid", k=2, chunk_size=400, chunk_overlap=60)
    hybrid.invoke("warm-up")  # loads all-MiniLM-L6-v2 and embeds the chunks
    print(f"Hybrid index built in {time.perf_counter() - started:.1f}s")

    for mode, retriever in (("parametric", parametric), ("hybrid", hybrid)):
        llm.mode = mode  # only reported in response_metadata["lift_mode"]
        chain = (
            {"context": retriever | format_docs, "question": RunnablePassthrough()}
            | PROMPT
            | llm
            | StrOutputParser()
        )
        print(f"\n=== {mode} ===")
        for item in questions:
            print(f"Q: {item['question']}\nA: ", end="", flush=True)
            started = time.perf_counter()
            first: float | None = None
            for piece in chain.stream(item["question"]):
                if piece and first is None:
                    first = time.perf_counter() - started
                print(piece, end="", flush=True)
            total = time.perf_counter() - started
            print(f"\n   gold: {item['answer']}   (first token {first or total:.2f}s, total {total:.2f}s)")


if __name__ == "__main__":
    main()
