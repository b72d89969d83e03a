"""Constrained decoding (issue #18, item 1): ``grammar=`` makes every answer match its JSON schema or
tool-call grammar, greedy or sampled, alone, in batches, streamed, and with a memory."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import build_tiny_model, one_torch_thread

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.microbatch import MicroBatcher
from lift_integrations.structured import (
    TOOL_CALL_MARKER,
    Grammar,
    ToolSpec,
    close_objects,
    parse_tool_calls,
    prepare_structured,
    prepare_tools,
    render_tool_call,
    to_tool_specs,
)

SCHEMAS: list[dict[str, Any]] = [
    {  # nested object, enum, required
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "role": {"enum": ["admin", "user", "guest"]},
                },
                "required": ["name", "role"],
            },
            "active": {"type": "boolean"},
        },
        "required": ["person", "active"],
    },
    {  # arrays of numbers with bounds
        "type": "object",
        "properties": {
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 100},
                "minItems": 1,
                "maxItems": 4,
            },
            "mean": {"type": "number", "minimum": -5, "maximum": 5, "multipleOf": 0.01},
        },
        "required": ["scores", "mean"],
    },
    {  # array of objects, nullable field, string pattern
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                        "note": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "null"}]},
                    },
                    "required": ["sku", "note"],
                },
            }
        },
        "required": ["items"],
    },
    {"enum": ["red", "green", "blue"]},  # not an object at all
    {  # $defs and $ref, as pydantic writes them
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            }
        },
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Point"}, "b": {"$ref": "#/$defs/Point"}},
        "required": ["a", "b"],
    },
]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "unit": {"enum": ["C", "F"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "name": "add",
    "description": "Add two integers.",
    "parameters": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": -999, "maximum": 999},
            "b": {"type": "integer", "minimum": -999, "maximum": 999},
        },
        "required": ["a", "b"],
    },
}
MAX_NEW = 160


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


_LIFT: list[LIFTModel] = []


def _lift() -> LIFTModel:
    """One tiny random Llama for the module (the llguidance tokenizer is built once per tokenizer)."""
    if not _LIFT:
        model, tokenizer = build_tiny_model("llama")
        _LIFT.append(LIFTModel(model, tokenizer, name="tiny-structured"))
    return _LIFT[0]


def _valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


@pytest.mark.parametrize("schema", SCHEMAS, ids=["nested", "numbers", "objects", "enum", "refs"])
def test_every_answer_parses_and_validates_greedy_and_sampled(schema: dict[str, Any]) -> None:
    lift = _lift()
    answers = [lift.generate("Give me the data.", memory=None, grammar=schema, max_new_tokens=MAX_NEW)]
    for seed in range(3):
        torch.manual_seed(seed)
        answers.append(
            lift.generate(
                "Give me the data.", grammar=schema, max_new_tokens=MAX_NEW, temperature=1.0, top_p=0.5
            )
        )
    for answer in answers:
        assert answer.finish_reason == "stop", answer
        _valid(answer.text, schema)


def test_unconstrained_tiny_model_output_is_not_json() -> None:
    """The guarantee comes from the grammar: the same random model does not write JSON by itself."""
    text = _lift().generate("Give me the data.", max_new_tokens=20).text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_batch_rows_follow_their_own_grammars_and_equal_single_calls() -> None:
    lift = _lift()
    prompts = ["Give me the data.", "Another, longer request for some data please.", "Free text", "Last"]
    grammars = [SCHEMAS[0], SCHEMAS[1], None, Grammar.from_json_schema(SCHEMAS[3])]
    batch = lift.generate_batch(prompts, grammars=grammars, max_new_tokens=MAX_NEW)
    for prompt, grammar, answer in zip(prompts, grammars, batch, strict=True):
        single = lift.generate(prompt, grammar=grammar, max_new_tokens=MAX_NEW)
        assert answer.text == single.text
    _valid(batch[0].text, SCHEMAS[0])
    _valid(batch[1].text, SCHEMAS[1])
    _valid(batch[3].text, SCHEMAS[3])
    same = lift.generate_batch(prompts[:2], grammar=SCHEMAS[2], max_new_tokens=MAX_NEW)
    assert all(_valid(a.text, SCHEMAS[2]) is not None for a in same)


def test_stream_yields_the_constrained_answer() -> None:
    lift = _lift()
    stream = lift.stream("Give me the data.", grammar=SCHEMAS[0], max_new_tokens=MAX_NEW)
    text = "".join(stream)
    assert text == lift.generate("Give me the data.", grammar=SCHEMAS[0], max_new_tokens=MAX_NEW).text
    _valid(text, SCHEMAS[0])
    assert stream.result is not None and stream.result.finish_reason == "stop"


def test_constrained_decoding_runs_with_a_memory() -> None:
    """A memory stays applied under a grammar: its answers are valid, differ from the base model's, and
    equal the same rows of a mixed batch."""
    model, tokenizer = build_tiny_model("llama", seed=1)
    lift = LIFTModel(model, tokenizer, name="tiny-structured-memory")
    config = LIFTConfig.fast(
        segment_length=32,
        segment_stride=24,
        context_view_length=16,
        qa_per_document=4,
        stage1_epochs=1,
        stage2_epochs=1,
        max_seq_length=128,
    )
    memory = lift.absorb("Tobias Renwick studied glass harps. " * 3, config=config)
    with torch.no_grad():
        for name, tensor in memory.tensors.items():
            if name.endswith("gate_bias"):
                tensor.add_(6.0)  # open the gate: a tiny model learns little in a few steps
    schema = {
        "type": "object",
        "properties": {"who": {"type": "string", "maxLength": 30}},
        "required": ["who"],
    }
    with_memory = lift.generate("Who studied harps?", memory=memory, grammar=schema, max_new_tokens=MAX_NEW)
    without = lift.generate("Who studied harps?", memory=None, grammar=schema, max_new_tokens=MAX_NEW)
    _valid(with_memory.text, schema)
    _valid(without.text, schema)
    assert with_memory.text != without.text
    mixed = lift.generate_batch(
        ["Who studied harps?"] * 2, memories=[memory, None], grammar=schema, max_new_tokens=MAX_NEW
    )
    assert [a.text for a in mixed] == [with_memory.text, without.text]


def test_forcing_a_named_tool_always_calls_it() -> None:
    lift = _lift()
    questions = ["What is 2 + 3?", "Weather in Paris?", "Hello!", "Add 40 and 2 please."]
    for name in ("add", "get_weather"):
        request = prepare_tools([{"role": "user", "content": "x"}], [WEATHER, ADD], name)
        for index, question in enumerate(questions):
            request = prepare_tools([{"role": "user", "content": question}], [WEATHER, ADD], name)
            torch.manual_seed(index)
            answer = lift.generate(
                request.messages, grammar=request.grammar, max_new_tokens=MAX_NEW, temperature=1.0
            )
            content, calls = request.parse(answer.text)
            assert answer.text.startswith(TOOL_CALL_MARKER)
            assert [call.name for call in calls] == [name] and content == ""
            spec = {"add": ADD, "get_weather": WEATHER["function"]}[name]
            jsonschema.validate(calls[0].arguments, spec["parameters"])  # type: ignore[index]


def test_required_calls_some_tool_and_auto_gives_text_or_a_valid_call() -> None:
    lift = _lift()
    required = prepare_tools([{"role": "user", "content": "Add 1 and 2."}], [WEATHER, ADD], "any")
    _, calls = required.parse(lift.generate(required.messages, grammar=required.grammar).text)
    assert len(calls) == 1 and calls[0].name in {"add", "get_weather"}
    assert calls[0].id.startswith("call_")
    auto = prepare_tools([{"role": "user", "content": "Hi"}], [WEATHER, ADD], "auto")
    for seed in range(4):
        torch.manual_seed(seed)
        text = lift.generate(auto.messages, grammar=auto.grammar, max_new_tokens=30, temperature=1.5).text
        content, calls = auto.parse(text)
        if text.lstrip().startswith(TOOL_CALL_MARKER):
            assert len(calls) == 1
        else:
            assert calls == [] and content == text
    none = prepare_tools([{"role": "user", "content": "Hi"}], [WEATHER], "none")
    assert none.grammar is None and none.messages == [{"role": "user", "content": "Hi"}]


def test_the_tool_prompt_shows_every_tool_and_keeps_the_system_turn() -> None:
    request = prepare_tools(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], [WEATHER, ADD]
    )
    system = request.messages[0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert "get_weather" in system["content"] and "add" in system["content"]
    assert len(request.messages) == 2


def test_rendered_calls_parse_back() -> None:
    text = render_tool_call("add", {"a": 1, "b": 2}) + render_tool_call("get_weather", {"city": "Oslo"})
    content, calls = parse_tool_calls(text, to_tool_specs([WEATHER, ADD]))
    assert content == ""
    assert [(c.name, c.arguments) for c in calls] == [
        ("add", {"a": 1, "b": 2}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert len({c.id for c in calls}) == 2
    assert parse_tool_calls("plain answer") == ("plain answer", [])
    assert (
        parse_tool_calls(TOOL_CALL_MARKER + '{"name": "nope", "arguments": {}}', to_tool_specs([ADD]))[1]
        == []
    )


def test_structured_prompt_asks_for_the_schema() -> None:
    turns, grammar = prepare_structured([{"role": "user", "content": "Hi"}], SCHEMAS[0])
    assert turns[0]["role"] == "system" and '"person"' in turns[0]["content"]
    assert isinstance(grammar, Grammar)
    _, any_object = prepare_structured([{"role": "user", "content": "Hi"}], None)
    text = _lift().generate(turns[1:], grammar=any_object, max_new_tokens=MAX_NEW).text
    assert isinstance(json.loads(text), dict)


def test_bad_grammars_and_tools_are_refused_with_clear_errors() -> None:
    lift = _lift()
    with pytest.raises(TypeError, match="grammar must be None, a Grammar or a JSON schema"):
        lift.generate("Hi", grammar="{}")
    with pytest.raises(ValueError, match="JSON schema"):
        Grammar.from_json_schema({"type": "object", "properties": {"a": {"type": "no-such-type"}}})
    with pytest.raises(ValueError, match="not valid JSON"):
        Grammar.from_json_schema("{nope")
    with pytest.raises(ValueError, match="one of the tools"):
        prepare_tools([{"role": "user", "content": "Hi"}], [ADD], "get_weather")
    with pytest.raises(ValueError, match="not a function tool schema"):
        to_tool_specs([{"type": "function", "function": {"description": "no name"}}])
    with pytest.raises(ValueError, match="tool name"):
        ToolSpec("bad name!")
    with pytest.raises(ValueError, match="grammars= needs"):
        lift.generate_batch(["a", "b"], grammars=[None])
    with pytest.raises(TypeError, match="not both"):
        lift.generate_batch(["a"], grammar=SCHEMAS[0], grammars=[None])


def test_closing_objects_keeps_valid_outputs_valid() -> None:
    closed = close_objects(SCHEMAS[4])
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Point"]["additionalProperties"] is False
    assert "additionalProperties" not in SCHEMAS[4]  # the original is untouched
    both = {
        "allOf": [{"type": "object", "properties": {"a": {}}}, {"type": "object", "properties": {"b": {}}}]
    }
    assert "additionalProperties" not in close_objects(both)["allOf"][0]


def test_the_micro_batcher_merges_requests_with_different_grammars() -> None:
    lift = _lift()
    batcher = MicroBatcher(lift, window_s=0.2)
    schemas = [SCHEMAS[0], SCHEMAS[1], SCHEMAS[3]]
    results: dict[int, str] = {}

    def call(index: int) -> None:
        results[index] = batcher.generate(
            "Give me the data.", memory=None, grammar=schemas[index], max_new_tokens=MAX_NEW
        ).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batcher.batches_run < 3  # at least two requests shared a batch
    for index, schema in enumerate(schemas):
        _valid(results[index], schema)


_LEAVES = st.sampled_from(
    [
        {"type": "integer", "minimum": -50, "maximum": 50},
        {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.125},
        {"type": "boolean"},
        {"type": "string", "maxLength": 8},
        {"enum": ["a", "b", 3, None]},
        {"type": "null"},
    ]
)
_SCHEMAS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.builds(
            lambda props, required: {
                "type": "object",
                "properties": props,
                "required": sorted(k for k in props if k in required),
            },
            st.dictionaries(st.sampled_from(["id", "name", "tags", "x", "meta"]), inner, max_size=3),
            st.sets(st.sampled_from(["id", "name", "tags", "x", "meta"])),
        ),
        st.builds(lambda item: {"type": "array", "items": item, "maxItems": 3}, inner),
    ),
    max_leaves=5,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_SCHEMAS, seed=st.integers(0, 1000))
def test_random_schemas_always_give_valid_json(schema: dict[str, Any], seed: int) -> None:
    torch.manual_seed(seed)
    with one_torch_thread():
        answer = _lift().generate("Data?", grammar=schema, max_new_tokens=160, temperature=1.0)
    assert answer.finish_reason == "stop", answer
    _valid(answer.text, schema)


def test_the_end_of_the_budget_closes_unbounded_values() -> None:
    """Unbounded integers and strings, where a random model writes digits or text forever, still end
    within a small budget: its last steps prefer the tokens that close the JSON."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "s": {"type": "string"}, "f": {"type": "number"}},
        "required": ["n", "s", "f"],
    }
    lift = _lift()
    for seed in range(4):
        torch.manual_seed(seed)
        answer = lift.generate(
            "Data?", grammar=schema, max_new_tokens=100, temperature=0.0 if seed == 0 else 1.0
        )
        assert answer.finish_reason == "stop", answer
        _valid(answer.text, schema)
