"""The prompt format, and turning chat messages into token ids without letting text smuggle in control
tokens.

The format pieces (:func:`qa_user_message`, :func:`document_text`, :func:`head_tail` and
:data:`SEPARATOR`) are shared by training and generation: memories are trained on exactly the prompts
they are later asked in. They live here, not in ``absorb/``, so that serving never imports training code.

A document, a retrieved chunk or a user message may contain strings such as ``<|im_start|>system``.
Rendered through the chat template and tokenized as one string, they would become real control tokens
and could open a fake system or assistant turn. Here the template is rendered around placeholders, the
template's own pieces are tokenized normally, and every piece of content is tokenized with special
tokens split into plain text.
"""

from __future__ import annotations

import datetime
import re
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lift_integrations.documents import Document

Message = dict[str, str]
SEPARATOR = "..."
"""Marks where a head/tail view of a document leaves text out (context views, truncated context)."""

_PLACEHOLDER = "\ue000{}\ue001"
_ROLES = {"system", "user", "assistant"}
_ESCAPE = "\u2060"  # WORD JOINER (invisible): breaks a control-token string in rendered content
_UNESCAPE = re.compile(_ESCAPE + "(.)", re.DOTALL)
_PARSE_ORDER = ("user", "assistant", "system")  # user first: a template's default system prompt stays one
_PARSE_WORK = 50_000
"""Messages :func:`parse_chat` may render in all (well under a second): each candidate renders the whole
conversation so far, so a conversation of n messages costs about 1.5 n², which allows some 180."""


def qa_user_message(question: str, context: str | None) -> str:
    """The user turn for a question, with the document (or a view of it) above it when given.

    QA training and generation both build their prompts with this function, so memories are trained on
    exactly the format they are asked in.
    """
    if not context:
        return question
    return f"Context:\n{context}\n\nAnswer the question based on the context above.\nQuestion: {question}"


def document_text(document: Document) -> str:
    """A document as one text: the title, a newline, then the text (the paper's ``title_option=1``).

    What absorption segments, and what ``context="truncated"`` puts in the prompt."""
    return f"{document.title}\n{document.text}" if document.title else document.text


def head_tail(token_ids: Sequence[int], budget: int, separator: Sequence[int]) -> list[int]:
    """The document itself when it fits in ``budget`` tokens, else its head and tail around ``separator``."""
    if len(token_ids) <= budget:
        return list(token_ids)
    if budget <= len(separator):
        return list(token_ids[:budget])
    keep = budget - len(separator)
    head = keep // 2
    tail = keep - head
    return list(token_ids[:head]) + list(separator) + (list(token_ids[-tail:]) if tail else [])


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


def decode_text(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], *, skip_special_tokens: bool = False
) -> str:
    """The text of one sequence of token ids."""
    text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    # transformers types decode's result as ``str | list[str]``; the list is for a batch of sequences.
    return cast(str, text)


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
    pieces = _template_pieces(tokenizer, tuple(m["role"] for m in messages), add_generation_prompt)
    ids: list[int] = []
    for piece, message in zip(pieces, messages, strict=False):
        ids += piece
        content = message["content"]
        if content_ids is None:
            ids += encode_text(tokenizer, content)
        else:
            if content not in content_ids:
                content_ids[content] = encode_text(tokenizer, content)
            ids += content_ids[content]
    ids += pieces[-1]
    return ids


_PIECES: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], tuple[tuple[int, ...], ...]]] = (
    weakref.WeakKeyDictionary()
)
_PIECES_GUARD = threading.Lock()
_PIECES_KEPT = 64
"""Role sequences whose template pieces are kept per tokenizer (a conversation adds one with each turn)."""


def _template_pieces(
    tokenizer: PreTrainedTokenizerBase, roles: tuple[str, ...], add_generation_prompt: bool
) -> tuple[tuple[int, ...], ...]:
    """The ids of the template's text before each message's content, and after the last one.

    The template is rendered around placeholders, so its text depends on the roles alone (and on the
    date, which some templates print): absorption encodes tens of thousands of prompts of the same
    roles, so each role sequence is rendered and encoded once a day, not once a prompt.
    """
    key = (roles, add_generation_prompt, str(tokenizer.chat_template), datetime.date.today())
    with _PIECES_GUARD:
        found = _PIECES.setdefault(tokenizer, {}).get(key)
    if found is not None:
        return found
    stand_ins = [{"role": role, "content": _PLACEHOLDER.format(i)} for i, role in enumerate(roles)]
    rest = _render_template(tokenizer, stand_ins, add_generation_prompt=add_generation_prompt)
    texts = []
    for index in range(len(roles)):
        head, marker, rest = rest.partition(_PLACEHOLDER.format(index))
        if not marker:
            raise ValueError("the chat template altered message content; cannot encode it safely")
        texts.append(head)
    pieces = tuple(tuple(_encode_template_piece(tokenizer, text)) for text in (*texts, rest))
    with _PIECES_GUARD:
        kept = _PIECES.setdefault(tokenizer, {})
        if len(kept) >= _PIECES_KEPT:
            kept.pop(next(iter(kept)))
        kept[key] = pieces
    return pieces


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """``messages`` in the chat template with the generation prompt, as text that :func:`parse_chat`
    maps back to exactly these messages.

    Control-token strings in content are escaped (an invisible word joiner after their first character,
    an existing joiner doubled): the model reads them as plain text anyway (see :func:`encode_chat`), and
    unescaped they would be indistinguishable from the template's own tokens in the text.
    """
    messages = normalize_messages(messages)
    special = _special_pattern(tokenizer)
    escaped = [{"role": m["role"], "content": _escape(m["content"], special)} for m in messages]
    return _render_template(tokenizer, escaped, add_generation_prompt=True)


def parse_chat(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Message] | None:
    """The messages whose :func:`render_chat` is ``prompt``; ``None`` when it is no such rendering.

    A pure function of the text and the template: the template is rendered around placeholders for
    candidate role sequences (depth first, each pruned unless the text starts with what its last message
    adds) until one matches the whole prompt, each content free of control-token strings as
    :func:`render_chat` leaves it. The messages are normalized, so the core renders them to ``prompt``.
    """
    special = _special_pattern(tokenizer)
    if getattr(tokenizer, "chat_template", None) is None or special is None:
        return None
    most = len(special.findall(prompt))  # every message puts at least one control token in the text
    work = 0
    # A content: the shortest run without a control token, checked only where one could start (the two
    # branches never match the same character, so a failed match cannot backtrack exponentially).
    starts = "".join(sorted({re.escape(token[0]) for token in _special_tokens(tokenizer)}))
    content = f"((?:[^{starts}]|(?!{special.pattern})[{starts}])*?)"
    followed: dict[str, re.Pattern[str]] = {}
    matched: dict[tuple[str, ...], tuple[tuple[str, ...], int]] = {}

    def literals(roles: list[str], *, whole: bool) -> list[str] | None:
        """The template's text around each placeholder: before each, plus the end when ``whole``."""
        nonlocal work
        work += len(roles)
        if work > _PARSE_WORK:
            raise _TooLong
        stand_ins = [{"role": role, "content": _PLACEHOLDER.format(i)} for i, role in enumerate(roles)]
        try:
            rendered = _render_template(tokenizer, stand_ins, add_generation_prompt=whole)
        except Exception:  # a template may refuse a role order ("roles must alternate ...")
            return None
        parts = []
        for index in range(len(roles)):
            head, found, rendered = rendered.partition(_PLACEHOLDER.format(index))
            if not found:
                return None
            parts.append(head)
        return [*parts, rendered] if whole else parts

    def match(parts: list[str]) -> tuple[tuple[str, ...], int] | None:
        """The contents between ``parts`` where the prompt starts with them, and where they end; matched
        left to right (no content holds a control token), reusing the longest prefix matched before."""
        known = next((j for j in range(len(parts), 0, -1) if tuple(parts[:j]) in matched), 0)
        if known:
            texts, position = matched[tuple(parts[:known])]
        elif prompt.startswith(parts[0]):
            texts, position, known = (), len(parts[0]), 1
            matched[tuple(parts[:1])] = texts, position
        else:
            return None
        for j in range(known, len(parts)):
            regex = followed.get(parts[j])
            if regex is None:
                regex = followed[parts[j]] = re.compile(content + re.escape(parts[j]), re.DOTALL)
            found = regex.match(prompt, position)
            if found is None:
                return None
            texts, position = (*texts, found[1]), found.end()
            matched[tuple(parts[: j + 1])] = texts, position
        return texts, position

    stack: list[list[str]] = [[]]
    try:
        while stack:
            roles = stack.pop()
            if roles:
                parts = literals(roles, whole=True)
                result = match(parts) if parts is not None else None
                if result is not None and result[1] == len(prompt):
                    texts = result[0]
                    return [{"role": r, "content": _unescape(t)} for r, t in zip(roles, texts, strict=True)]
            if len(roles) >= most:
                continue
            children = []
            for role in _PARSE_ORDER:
                if roles and roles[-1] == role:
                    continue  # normalized messages never repeat a role
                parts = literals([*roles, role], whole=False)
                if parts is not None and match(parts) is not None:
                    children.append([*roles, role])
            stack.extend(reversed(children))  # the first role of _PARSE_ORDER is tried first
    except _TooLong:
        pass
    return None


class _TooLong(Exception):
    """:func:`parse_chat` gave up: the prompt needs more than ``_PARSE_WORK`` rendered messages."""


def _render_template(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], *, add_generation_prompt: bool
) -> str:
    """``messages`` in the tokenizer's chat template, as text."""
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    # transformers types the result as a union over all its modes; with tokenize=False it is the text.
    return cast(str, rendered)


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokenizer's control-token strings (of two characters or more: one character cannot be
    escaped by splitting it), longest first."""
    tokens = set(getattr(tokenizer, "all_special_tokens", ()))
    decoder = getattr(tokenizer, "added_tokens_decoder", {})
    tokens.update(token.content for token in decoder.values() if getattr(token, "special", False))
    return sorted((t for t in tokens if isinstance(t, str) and len(t) > 1), key=lambda t: (-len(t), t))


def _special_pattern(tokenizer: PreTrainedTokenizerBase) -> re.Pattern[str] | None:
    """A regex for any of :func:`_special_tokens`; ``None`` if there are none."""
    tokens = _special_tokens(tokenizer)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


def _escape(content: str, special: re.Pattern[str] | None) -> str:
    if special is None:
        return content
    content = content.replace(_ESCAPE, _ESCAPE * 2)
    return special.sub(lambda match: match[0][0] + _ESCAPE + match[0][1:], content)


def _unescape(content: str) -> str:
    return _UNESCAPE.sub(lambda match: match[1], content)


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
