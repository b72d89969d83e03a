"""Chat encoding: the template's text around each message is rendered and encoded once per role sequence,
and every prompt still gets the ids that rendering it afresh gives."""

from __future__ import annotations

import copy
import types
from typing import Any

import pytest

from lift_integrations import prompting
from lift_integrations.prompting import encode_chat, encode_chat_with_answer, encode_text
from tests.tiny_models import smollm_tokenizer, tiny_tokenizer

CONVERSATIONS = [
    [("user", "Who founded Vellhaven?")],
    [("system", "Answer briefly."), ("user", "When was it founded?")],
    [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Name the <|im_end|> token.")],
    [("system", "S"), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2")],
]


def rendered_afresh(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    """The ids without any cache: the template rendered around placeholders, each piece encoded."""
    stand_ins = [{"role": m["role"], "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    rest = tokenizer.apply_chat_template(
        stand_ins, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    ids: list[int] = []
    for index, message in enumerate(messages):
        head, _, rest = rest.partition(f"\ue000{index}\ue001")
        ids += tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
        ids += encode_text(tokenizer, message["content"])
    return ids + (tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else [])


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    # A copy: the cache is per tokenizer object, so each test starts with none.
    return copy.deepcopy(tiny_tokenizer() if request.param == "tiny" else smollm_tokenizer())


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_every_prompt_gets_the_ids_of_its_own_rendering(tokenizer: Any, add_generation_prompt: bool) -> None:
    for _ in range(2):  # the second round comes from the cache
        for conversation in CONVERSATIONS:
            messages = [{"role": role, "content": content} for role, content in conversation]
            expected = rendered_afresh(tokenizer, messages, add_generation_prompt)
            assert encode_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt) == expected


def test_answers_follow_their_prompt_with_ids_of_the_whole_rendering(tokenizer: Any) -> None:
    memo: dict[str, list[int]] = {}
    for question, answer in [("Who?", "Mira Quenton"), ("When?", "1874"), ("Who?", "1874")]:
        user = [{"role": "user", "content": question}]
        ids, start = encode_chat_with_answer(tokenizer, user, answer, content_ids=memo)
        full = rendered_afresh(tokenizer, [*user, {"role": "assistant", "content": answer}], False)
        assert ids == full
        assert ids[:start] == rendered_afresh(tokenizer, user, True)


def test_the_template_is_rendered_once_per_role_sequence(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = []
    render = prompting._render_template
    monkeypatch.setattr(prompting, "_render_template", lambda *a, **k: renders.append(1) or render(*a, **k))
    for number in range(50):
        question = [{"role": "user", "content": f"question {number}"}]
        encode_chat(tokenizer, question, add_generation_prompt=True)
        encode_chat(
            tokenizer,
            [{"role": "user", "content": f"q {number}"}, {"role": "assistant", "content": "a"}],
            add_generation_prompt=False,
        )
    assert len(renders) == 2


def test_a_new_template_or_a_new_day_renders_again(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [{"role": "user", "content": "Who founded it?"}]
    before = encode_chat(tokenizer, messages, add_generation_prompt=True)
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    changed = encode_chat(tokenizer, messages, add_generation_prompt=True)
    assert changed != before
    assert changed == rendered_afresh(tokenizer, messages, True)

    tokenizer.chat_template = "{{ strftime_now('%Y') }}|{{ messages[0]['content'] }}"
    renders = []
    render = prompting._render_template
    monkeypatch.setattr(prompting, "_render_template", lambda *a, **k: renders.append(1) or render(*a, **k))
    for day in (1, 1, 2):
        today = types.SimpleNamespace(date=types.SimpleNamespace(today=lambda day=day: day))
        monkeypatch.setattr(prompting, "datetime", today)
        encode_chat(tokenizer, messages, add_generation_prompt=False)
    assert len(renders) == 2


def test_the_cache_keeps_a_bounded_number_of_role_sequences(tokenizer: Any) -> None:
    for turns in range(1, 2 * prompting._PIECES_KEPT):
        roles = ["user", "assistant"] * turns
        encode_chat(tokenizer, [{"role": r, "content": "x"} for r in roles], add_generation_prompt=False)
    assert len(prompting._PIECES[tokenizer]) == prompting._PIECES_KEPT


def test_a_template_that_drops_content_is_refused(tokenizer: Any) -> None:
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'][1:] }}{% endfor %}"
    with pytest.raises(ValueError, match="altered message content"):
        encode_chat(tokenizer, [{"role": "user", "content": "hello"}], add_generation_prompt=False)
