"""Absorb a real document with LlamaIndex and query it in hybrid and parametric mode.

The document is the first paragraphs of the SQuAD v1.1 article "Normans" (examples/data/normans.json,
CC BY-SA 4.0, see examples/data/NOTICE.md), joined into one text. It is absorbed into a memory of the
embedded SmolLM2-135M-Instruct, then each question is answered twice: in hybrid mode (memory plus the
retrieved chunk in context) and in parametric mode (memory alone). The last answer is streamed.

    HF_HUB_OFFLINE=1 .venv/bin/python examples/llamaindex_query_engine.py [--paragraphs 3] [--questions 3]

Sized for a 2-core CPU: a few paragraphs and a short absorption (LIFTConfig.fast with one epoch per
stage). A 135M model answers from its memory alone only sometimes; the hybrid answers show the chunks
doing the work, and the parametric ones what the memory holds after a few optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from llama_index.core import Document
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler

from lift_integrations import LIFTConfig
from lift_integrations.llama_index import LIFTLLM, LIFTAbsorbProgressEvent, LIFTIndex

DATA = Path(__file__).parent / "data" / "normans.json"


class AbsorbLogger(BaseEventHandler):
    """Prints the LIFT absorb progress events (any instrumentation handler receives them)."""

    @classmethod
    def class_name(cls) -> str:
        return "AbsorbLogger"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, LIFTAbsorbProgressEvent):
            print(
                f"  step {event.step}/{event.total_steps} (stage {event.stage}) "
                f"loss {event.loss:.3f}, {event.tokens_seen} tokens, {event.elapsed_s:.1f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=3, help="paragraphs of the article to absorb")
    parser.add_argument("--questions", type=int, default=3, help="questions to ask (from those paragraphs)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    paragraphs = json.loads(DATA.read_text(encoding="utf-8"))[: args.paragraphs]
    text = "\n\n".join(p["context"] for p in paragraphs)
    questions = [q for p in paragraphs for q in p["questions"]][: args.questions]
    document = Document(text=text, metadata={"title": "Normans"})
    get_dispatcher().add_event_handler(AbsorbLogger())

    start = time.perf_counter()
    llm = LIFTLLM(max_new_tokens=args.max_new_tokens)  # None: the embedded SmolLM2-135M-Instruct
    print(
        f"model {llm.metadata.model_name}, window {llm.metadata.context_window} tokens, "
        f"loaded in {time.perf_counter() - start:.1f} s"
    )

    start = time.perf_counter()
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=8)
    print(f"absorbing {len(paragraphs)} paragraphs ({llm.lift_model.count_tokens(text)} tokens)...")
    index = LIFTIndex.from_documents([document], llm=llm, mode="hybrid", config=config, chunk_size=128)
    print(f"absorbed in {time.perf_counter() - start:.1f} s: {index}")

    engines = {
        "hybrid": index.as_query_engine(similarity_top_k=1),
        "parametric": index.as_query_engine(mode="parametric"),
    }
    for question in questions:
        print(f"\nQ: {question['question']}  (gold: {question['answer']})")
        for mode, engine in engines.items():
            start = time.perf_counter()
            response = engine.query(question["question"])
            answer = " ".join(str(response).split())
            print(f"  {mode:>10} ({time.perf_counter() - start:4.1f} s): {answer}")

    question = questions[-1]["question"]
    print(f"\nStreaming (parametric): {question}\n  ", end="", flush=True)
    start = time.perf_counter()
    streaming = index.as_query_engine(mode="parametric", streaming=True).query(question)
    for piece in streaming.response_gen:
        print(piece, end="", flush=True)
    print(f"\n  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
