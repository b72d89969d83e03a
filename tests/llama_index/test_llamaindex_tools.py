"""``LIFTLLM`` as a LlamaIndex ``FunctionCallingLLM`` (issue 18, item 1): tool calls and structured output
decoded under the core's grammars, so a tiny random model's calls and objects are always valid; agents
run their tool loop end to end."""

# No ``from __future__ import annotations``: FunctionTool reads the tools' annotations at run time.

import asyncio
from enum import Enum
from typing import Annotated, Any, Literal

import pytest
from llama_index.core import Document
from llama_index.core.agent.workflow import AgentStream, FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.response.schema import PydanticResponse
from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool

from lift_integrations.llama_index import LIFTLLM, LIFTIndex, react_grammar
from lift_integrations.llama_index._tools import to_core_messages
from lift_integrations.structured import render_tool_result

Small = Annotated[int, Field(ge=0, le=99)]


class AddArguments(BaseModel):
    """Bounded, so a random model's numbers end (FunctionTool drops ``Annotated`` bounds from signatures)."""

    a: Small
    b: Small


class WeatherArguments(BaseModel):
    city: str = Field(max_length=12)
    unit: Literal["C", "F"]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def weather(city: str, unit: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}, 20 {unit}"


def add_tool() -> FunctionTool:
    return FunctionTool.from_defaults(fn=add, fn_schema=AddArguments, description="add(a, b): a + b")


TOOLS = [
    add_tool(),
    FunctionTool.from_defaults(fn=weather, fn_schema=WeatherArguments, description="The weather in a city."),
]


class Color(str, Enum):
    red = "red"
    green = "green"


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: Small
    admin: bool


class Team(BaseModel):
    lead: Person
    colors: list[Color] = Field(min_length=1, max_length=3)
    motto: str | None = Field(default=None, max_length=10)


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    confidence: float = Field(ge=0, le=1)


@pytest.fixture
def tool_llm(tiny_smollm: Any) -> LIFTLLM:
    return LIFTLLM(tiny_smollm, max_new_tokens=96)


def tool_by_name(name: str) -> FunctionTool:
    return next(tool for tool in TOOLS if tool.metadata.name == name)


def test_is_a_function_calling_llm(tool_llm: LIFTLLM) -> None:
    assert isinstance(tool_llm, FunctionCallingLLM)
    assert tool_llm.metadata.is_function_calling_model


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_chat_with_tools_gives_valid_calls(tool_llm: LIFTLLM, temperature: float) -> None:
    for question in ("What is 2 plus 3?", "Weather in Paris?", "Hello"):
        response = tool_llm.chat_with_tools(TOOLS, question, tool_required=True, temperature=temperature)
        (call,) = tool_llm.get_tool_calls_from_response(response)
        tool = tool_by_name(call.tool_name)  # a real tool ...
        tool.metadata.fn_schema.model_validate(call.tool_kwargs)  # ... with arguments valid under its schema
        assert call.tool_id.startswith("call_") and response.message.content == ""
    forced = tool_llm.chat_with_tools(TOOLS, "Hi", tool_choice="weather", temperature=temperature)
    assert [c.tool_name for c in tool_llm.get_tool_calls_from_response(forced)] == ["weather"]


def test_no_tool_call(tool_llm: LIFTLLM) -> None:
    response = tool_llm.chat_with_tools(TOOLS, "Hello", tool_choice="none", max_new_tokens=8)
    assert tool_llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    assert (
        response.message.content
        == tool_llm.chat([ChatMessage(role="user", content="Hello")], max_new_tokens=8).message.content
    )
    with pytest.raises(ValueError, match="called no tool"):
        tool_llm.get_tool_calls_from_response(response)
    plain = tool_llm.chat_with_tools([], "Hello", max_new_tokens=8)  # no tools: a plain chat
    assert plain.message.content == response.message.content
    with pytest.raises(ValueError, match="tool"):
        tool_llm.chat_with_tools(TOOLS, "Hi", tool_choice="nope")


def test_predict_and_call_runs_the_tool(tool_llm: LIFTLLM) -> None:
    result = tool_llm.predict_and_call(TOOLS, "What is 2 plus 3?", tool_choice="add")
    (output,) = result.sources
    assert output.tool_name == "add" and not output.is_error
    arguments = AddArguments.model_validate(output.raw_input["kwargs"])
    assert result.response == str(arguments.a + arguments.b)


async def test_async_and_streamed_tool_calls(tool_llm: LIFTLLM) -> None:
    expected = tool_llm.chat_with_tools(TOOLS, "Hi", tool_choice="add")
    response = await tool_llm.achat_with_tools(TOOLS, "Hi", tool_choice="add")
    chunks = [chunk async for chunk in await tool_llm.astream_chat_with_tools(TOOLS, "Hi", tool_choice="add")]
    for answer in (response, chunks[-1]):
        (call,) = tool_llm.get_tool_calls_from_response(answer)
        (first,) = tool_llm.get_tool_calls_from_response(expected)
        assert (call.tool_name, call.tool_kwargs) == (first.tool_name, first.tool_kwargs)
    streamed = list(tool_llm.stream_chat_with_tools(TOOLS, "Hi", tool_choice="add"))
    assert len(streamed) == 1 and tool_llm.get_tool_calls_from_response(streamed[0])


def test_tool_history_is_rendered_for_the_model(tool_llm: LIFTLLM) -> None:
    """An agent's history (assistant call, tool result) reaches the model as the core renders it."""
    call = tool_llm.chat_with_tools(TOOLS, "Add 2 and 3", tool_choice="add")
    (selection,) = tool_llm.get_tool_calls_from_response(call)
    result = ChatMessage(
        role=MessageRole.TOOL, content="5", additional_kwargs={"tool_call_id": selection.tool_id}
    )
    turns = to_core_messages([ChatMessage(role="user", content="Add 2 and 3"), call.message, result])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"].startswith("<tool_call>")
    assert '"name":"add"' in turns[1]["content"].replace(" ", "")
    assert turns[2]["content"] == render_tool_result("5", "add")  # the name found from the call's id
    follow = tool_llm.chat_with_tools(
        TOOLS,
        chat_history=[ChatMessage(role="user", content="Add 2 and 3"), call.message, result],
        max_new_tokens=8,
    )
    assert follow.raw["usage"]["prompt_tokens"] > call.raw["usage"]["prompt_tokens"]


@pytest.mark.parametrize("output_cls", [Person, Team, Verdict])
def test_structured_predict_always_parses(tool_llm: LIFTLLM, output_cls: type[BaseModel]) -> None:
    prompt = PromptTemplate("Describe {topic} as data.")
    for temperature in (0.0, 1.0, 1.5):
        result = tool_llm.structured_predict(
            output_cls, prompt, llm_kwargs={"temperature": temperature}, topic="a team"
        )
        assert isinstance(result, output_cls)
        output_cls.model_validate(result.model_dump())


async def test_structured_variants(tool_llm: LIFTLLM, events: Any) -> None:
    prompt = PromptTemplate("Who is {name}?")
    expected = tool_llm.structured_predict(Person, prompt, name="Ada")
    assert {"LLMStructuredPredictStartEvent", "LLMStructuredPredictEndEvent", "LLMChatEndEvent"} <= set(
        events.names()
    )
    assert await tool_llm.astructured_predict(Person, prompt, name="Ada") == expected
    assert list(tool_llm.stream_structured_predict(Person, prompt, name="Ada")) == [expected]
    assert [p async for p in await tool_llm.astream_structured_predict(Person, prompt, name="Ada")] == [
        expected
    ]
    structured = tool_llm.as_structured_llm(Person)
    response = structured.chat([ChatMessage(role="user", content="Who is Ada?")])
    assert response.raw == expected and Person.model_validate_json(response.message.content) == expected
    with pytest.raises(ValueError, match="cut off at max_new_tokens"):
        tool_llm.structured_predict(Team, prompt, llm_kwargs={"max_new_tokens": 3}, name="Ada")


def test_query_engine_output_cls(tiny_smollm: Any, facts: Any, absorb_config: Any) -> None:
    """``as_query_engine(output_cls=...)`` answers with the object, in both modes, never "Empty Response"."""
    llm = LIFTLLM(tiny_smollm, max_new_tokens=96)
    index = LIFTIndex.from_documents(
        [Document(text=facts.zorbia)], llm=llm, mode="parametric", config=absorb_config
    )
    response = index.as_query_engine(output_cls=Verdict).query("Is Quillport the capital of Zorbia?")
    assert isinstance(response, PydanticResponse) and isinstance(response.response, Verdict)
    again = asyncio.run(
        index.as_query_engine(output_cls=Verdict).aquery("Is Quillport the capital of Zorbia?")
    )
    assert again.response == response.response
    with pytest.raises(ValueError, match="streaming=False"):
        index.as_query_engine(output_cls=Verdict, streaming=True)


def test_hybrid_query_engine_output_cls(tiny_smollm: Any, facts: Any, absorb_config: Any) -> None:
    """Hybrid: the chunks go in context; LlamaIndex's own synthesizers reach the grammar through
    ``structured_predict``."""
    from test_llamaindex_storage import BagOfWords

    llm = LIFTLLM(tiny_smollm, max_new_tokens=96)
    documents = [Document(text=facts.zorbia), Document(text=facts.velmora)]
    index = LIFTIndex.from_documents(
        documents, llm=llm, embed_model=BagOfWords(), config=absorb_config, chunk_size=32
    )
    for response_mode in (None, "compact", "refine"):
        engine = index.as_query_engine(output_cls=Verdict, similarity_top_k=2, response_mode=response_mode)
        response = engine.query("Is Quillport the capital of Zorbia?")
        assert isinstance(response, PydanticResponse) and isinstance(response.response, Verdict)
        assert len(response.source_nodes) == 2


def test_function_agent_runs_a_tool_loop(tool_llm: LIFTLLM, events: Any) -> None:
    """The agent's first step must call ``add`` (``initial_tool_choice``); the loop runs the tool, feeds
    the result back and ends when the model answers in text (or the tool returns directly)."""
    agent = FunctionAgent(tools=[add_tool()], llm=tool_llm, initial_tool_choice="add", streaming=False)

    async def run() -> Any:
        handler = agent.run("What is 2 plus 3?", max_iterations=4)
        calls = []
        async for event in handler.stream_events():
            if type(event).__name__ == "ToolCallResult":
                calls.append(event)
        return await handler, calls

    result, calls = asyncio.run(run())
    assert calls and all(call.tool_name == "add" for call in calls)
    for call in calls:
        arguments = AddArguments.model_validate(call.tool_kwargs)
        assert call.tool_output.content == str(arguments.a + arguments.b)
    assert [c.tool_id for c in result.tool_calls] == [c.tool_id for c in calls]
    assert not result.response.additional_kwargs.get("tool_calls")  # it ended in text, not in a call
    # The loop fed the tool's result back: the last LLM call saw it as a tool message.
    last = events.of("LLMChatStartEvent")[-1].messages
    assert [m.content for m in last if m.role == MessageRole.TOOL] == [c.tool_output.content for c in calls]


def run_agent(agent: Any, question: str, max_iterations: int) -> tuple[Any, list[Any], list[Any]]:
    """The run's result, its tool results and its streamed steps (``AgentStream``, text as it grew)."""

    async def run() -> tuple[Any, list[Any], list[Any]]:
        handler = agent.run(question, max_iterations=max_iterations)
        events = [event async for event in handler.stream_events()]
        calls = [event for event in events if isinstance(event, ToolCallResult)]
        return await handler, calls, [event for event in events if isinstance(event, AgentStream)]

    return asyncio.run(run())


def test_react_agent_runs_a_tool_loop(tool_llm: LIFTLLM) -> None:
    """ReActAgent parses plain text: under ``react_grammar`` every step parses and every call is valid.
    Here every step must act, and the tool returns directly: call, run, end."""
    tool = FunctionTool.from_defaults(
        fn=add, fn_schema=AddArguments, description="add(a, b): a + b", return_direct=True
    )
    llm = tool_llm.with_grammar(react_grammar([tool], allow_answer=False))
    agent = ReActAgent(tools=[tool], llm=llm, streaming=False)
    result, calls, _ = run_agent(agent, "What is 2 plus 3?", 3)
    (call,) = calls
    arguments = AddArguments.model_validate(call.tool_kwargs)
    assert call.tool_output.content == str(arguments.a + arguments.b) == result.response.content


def test_react_agent_answers_in_its_format(tool_llm: LIFTLLM) -> None:
    """With answers allowed, each step is a valid call or an answer, and the run ends with an answer."""
    tools = [add_tool()]
    llm = tool_llm.with_grammar(react_grammar(tools))
    result, calls, streamed = run_agent(ReActAgent(tools=tools, llm=llm), "What is 2 plus 3?", 6)
    for call in calls:
        arguments = AddArguments.model_validate(call.tool_kwargs)
        assert call.tool_output.content == str(arguments.a + arguments.b)
    steps = [event.response for event in streamed]
    assert steps and all(step.startswith("Thought: ") or "Thought: ".startswith(step) for step in steps)
    assert steps[-1].split("\nAnswer: ", 1)[1] == result.response.content  # the last step answered
    assert tool_llm._grammar is None  # with_grammar made a copy
    with pytest.raises(ValueError, match="at least one tool"):
        react_grammar([])


@pytest.mark.slow
def test_embedded_model_calls_the_tool_it_is_asked_for(embedded_lift: Any) -> None:
    """The real SmolLM2 under the tool grammar reads the numbers from the question into the call."""
    llm = LIFTLLM(embedded_lift, max_new_tokens=32)
    result = llm.predict_and_call([add_tool()], "What is 2 plus 3?", tool_choice="add")
    (output,) = result.sources
    assert output.raw_input["kwargs"] == {"a": 2, "b": 3} and result.response == "5"
    verdict = llm.structured_predict(Verdict, PromptTemplate("Is {city} in France?"), city="Paris")
    assert isinstance(verdict, Verdict)
