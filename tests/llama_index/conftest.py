"""Fixtures for the LlamaIndex parity suite: a tiny random Llama with the real SmolLM2 tokenizer.

The tokenizer is real so that the chat template, its control tokens and the stop tokens are the ones the
embedded model uses; the weights are random and tiny so that every endpoint runs in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from llama_index.core import Document
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from tiny_models import one_torch_thread

from lift_integrations.llama_index import LIFTLLM, LIFTSentenceTransformerEmbedding

ZORBIA = (
    "Zorbia is a small island nation in the Quiet Sea. The capital of Zorbia is Quillport. "
    "The national animal of Zorbia is the glass otter. Zorbia's currency is the zorb mark. "
    "The tallest mountain on Zorbia is Mount Fennick, which is 2,314 metres high."
)
VELMORA = (
    "Velmora is a river city famous for its copper bridges. The mayor of Velmora is Ada Brisk. "
    "Every spring Velmora holds the Lantern Regatta on the river Sell."
)


class Facts(NamedTuple):
    """Made-up facts no model has seen, and a question whose answer is in them."""

    zorbia: str = ZORBIA
    velmora: str = VELMORA
    question: str = "What is the capital of Zorbia?"
    gold: str = "Quillport"


@pytest.fixture(scope="session")
def facts() -> Facts:
    return Facts()


@pytest.fixture(scope="session")
def absorb_config() -> Any:
    """A few optimizer steps: enough to move the tiny model, quick enough for a unit test."""
    from lift_integrations import LIFTConfig

    return LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=4, learning_rate=3e-2)


@pytest.fixture(scope="session")
def tiny_smollm() -> Any:
    """A 2-layer random Llama with the embedded model's tokenizer and chat template (built once).

    Its gate starts half-open: from the default start a gate takes more steps to open than a unit test
    can afford, and half-open, a few steps show the memory learning.
    """
    from tiny_models import build_tiny_smollm

    return build_tiny_smollm(name="tiny", adapter_config={"initial_gate": 0.5})


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread in these tests (see ``tiny_models.one_torch_thread``)."""
    with one_torch_thread():
        yield


@pytest.fixture
def llm(tiny_smollm: Any) -> LIFTLLM:
    return LIFTLLM(tiny_smollm, max_new_tokens=8)


@pytest.fixture(scope="session")
def embed_model() -> LIFTSentenceTransformerEmbedding:
    return LIFTSentenceTransformerEmbedding()


@pytest.fixture
def documents(facts: Facts) -> list[Document]:
    return [
        Document(text=facts.zorbia, metadata={"title": "Zorbia"}),
        Document(text=facts.velmora, metadata={"title": "Velmora"}),
    ]


class EventCollector(BaseEventHandler):
    """Records every instrumentation event (registered on the root dispatcher)."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventCollector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [event.class_name() for event in self.events]

    def of(self, name: str) -> list[Any]:
        return [event for event in self.events if event.class_name() == name]


@pytest.fixture
def events() -> Iterator[EventCollector]:
    collector = EventCollector()
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        yield collector
    finally:
        root.event_handlers.remove(collector)
