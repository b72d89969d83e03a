"""Turning chat messages into token ids without letting text smuggle in control tokens.

A document, a retrieved chunk or a user message may contain strings such as ``<|im_start|>system``.
Rendered through the chat template and tokenized as one string, they would become real control tokens
and could open a fake system or assistant turn. Here the template is rendered around placeholders, the
template's own pieces are tokenized normally, and every piece of content is tokenized with special
tokens split into plain text.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]

_PLACEHOLDER = "\ue000{}\ue001"
_ROLES = {"system", "user", "assistant"}


_TOKENIZER_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def tokenizer_lock(tokenizer: PreTrainedTokenizerBase) -> threading.Lock:
    """One lock per tokenizer object.

    ``split_special_tokens`` is a switch on the whole fast tokenizer in transformers 5, not a per-call
    option, so two threads encoding at once can see each other's setting: template tokens turn into text,
    or a document's ``<|im_start|>`` into a real control token. Every encode here holds this lock.
    """
    with _LOCKS_GUARD:
        lock = _TOKENIZER_LOCKS.get(tokenizer)
        if lock is None:
            lock = _TOKENIZER_LOCKS[tokenizer] = threading.Lock()
        return lock


def normalize_messages(messages: Sequence[Message]) -> list[Message]:
    """Validate roles and merge consecutive messages of one role (strict templates reject repeats)."""
    merged: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TypeError(f"message {index} must be a dict with 'role' and 'content', got {message!r}")
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise ValueError(f"message {index} has role {role!r}; expected one of {sorted(_ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"message {index} content must be a str, got {type(content).__name__}")
        if merged and merged[-1]["role"] == role:
            merged[-1] = {"role": role, "content": merged[-1]["content"] + "\n\n" + content}
        else:
            merged.append({"role": role, "content": content})
    if not merged:
        raise ValueError("at least one message is needed")
    return merged


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of untrusted text: control-token strings stay plain text, no BOS/EOS is added."""
    return encode_texts(tokenizer, [text])[0] if text else []


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """:func:`encode_text` of many texts in one tokenizer call, which a fast tokenizer spreads over the
    CPU's cores (the same ids as one call per text)."""
    if not texts:
        return []
    with tokenizer_lock(tokenizer):
        encoded = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [list(ids) for ids in encoded]


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool,
    content_ids: dict[str, list[int]] | None = None,
) -> list[int]:
    """Token ids of ``messages`` in the tokenizer's chat template, content kept as plain text.

    ``content_ids`` memoises the encoding of message contents across calls that share them (a long
    context encoded once, not once per call)."""
    messages = normalize_messages(messages)
    if getattr(tokenizer, "chat_template", None) is None:
        return _encode_without_template(tokenizer, messages, add_generation_prompt)
    stand_ins = [{"role": m["role"], "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
    rendered: str = tokenizer.apply_chat_template(
        stand_ins, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    ids: list[int] = []
    rest = rendered
    for index, message in enumerate(messages):
        marker = _PLACEHOLDER.format(index)
        head, found, rest = rest.partition(marker)
        if not found:
            raise ValueError("the chat template altered message content; cannot encode it safely")
        ids += _encode_template_piece(tokenizer, head)
        content = message["content"]
        if content_ids is None:
            ids += encode_text(tokenizer, content)
        else:
            if content not in content_ids:
                content_ids[content] = encode_text(tokenizer, content)
            ids += content_ids[content]
    ids += _encode_template_piece(tokenizer, rest)
    return ids


def _encode_template_piece(tokenizer: PreTrainedTokenizerBase, piece: str) -> list[int]:
    if not piece:
        return []
    with tokenizer_lock(tokenizer):
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"])


def _encode_without_template(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], add_generation_prompt: bool
) -> list[int]:
    ids: list[int] = []
    if tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
    for message in messages:
        ids += encode_text(tokenizer, f"{message['role']}: ")
        ids += encode_text(tokenizer, message["content"])
        ids += encode_text(tokenizer, "\n")
    if add_generation_prompt:
        ids += encode_text(tokenizer, "assistant: ")
    return ids


def encode_chat_with_answer(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    answer: str,
    *,
    content_ids: dict[str, list[int]] | None = None,
) -> tuple[list[int], int]:
    """Ids of ``messages`` followed by an assistant turn ``answer``, and where the answer starts.

    The answer's span includes the template's end-of-turn token, so training teaches the model to stop.
    ``content_ids``: a memo of encoded message contents shared across calls (see :func:`encode_chat`).
    """
    encoded: dict[str, list[int]] = {} if content_ids is None else content_ids
    prompt = encode_chat(tokenizer, messages, add_generation_prompt=True, content_ids=encoded)
    full = encode_chat(
        tokenizer,
        [*messages, {"role": "assistant", "content": answer}],
        add_generation_prompt=False,
        content_ids=encoded,
    )
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return full, len(prompt)
    tail = encode_text(tokenizer, answer)
    if tokenizer.eos_token_id is not None:
        tail.append(tokenizer.eos_token_id)
    return prompt + tail, len(prompt)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_config: Any = None) -> list[int]:
    """End-of-turn ids: the model's EOS ids plus the chat template's end-of-turn token when it has one."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(ids)
