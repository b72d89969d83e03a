"""End to end on the real embedded SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (slow: ~20-30 s on 2 cores)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document

from lift_integrations import registry
from lift_integrations.llama_index import LIFTLLM, LIFTIndex

pytestmark = pytest.mark.slow


def test_embedded_model_end_to_end(
    facts: Any, embed_model: Any, events: Any, embedded_lift: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lift_integrations import LIFTConfig

    # LIFTLLM() loads the embedded default into the shared cache; seed it with the session's copy (the
    # same model) so the suite loads it once.
    monkeypatch.setitem(registry._CACHE, (None, None, None), embedded_lift)
    llm = LIFTLLM(max_new_tokens=24)
    assert llm.lift_model is embedded_lift
    assert llm.metadata.model_name == "SmolLM2-135M-Instruct"
    assert llm.metadata.context_window >= 2048
    docs = [Document(text=facts.zorbia, metadata={"title": "Zorbia"}), Document(text=facts.velmora)]
    config = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=4)
    index = LIFTIndex.from_documents(docs, llm=llm, embed_model=embed_model, config=config, chunk_size=48)
    assert len(events.of("LIFTAbsorbProgressEvent")) == index.memory.stats["steps"] > 0

    hybrid = index.as_query_engine(similarity_top_k=1).query(facts.question)
    assert hybrid.response.strip()
    (chunk,) = [n.node.get_content() for n in hybrid.source_nodes]
    assert facts.gold in chunk  # the embedding retrieved the chunk that holds the answer
    parametric = index.as_query_engine(mode="parametric", streaming=True).query(facts.question)
    answer = "".join(parametric.response_gen)
    assert answer.strip() and answer != "Empty Response"

    # Generated text from a 135M model after four optimizer steps is a weak signal; the likelihood of the
    # gold answer is a strong one. The memory raises it, alone and next to the retrieved chunk.
    lift = llm.lift_model

    def logprob(memory: Any, context: Any) -> float:
        return lift.answer_logprob(facts.question, facts.gold, memory=memory, context=context)

    assert logprob(index.memory, None) > logprob(None, None) + 5
    assert logprob(index.memory, [chunk]) > logprob(None, [chunk]) + 2
