"""Grammars that generation's output must match, compiled for a tokenizer by llguidance.

A :class:`Grammar` is tokenizer-free (an llguidance grammar definition) and can be shared by every model;
:func:`matcher_for` turns it into a per-generation ``LLMatcher`` for one Hugging Face tokenizer, and
:mod:`lift_integrations.structured.processor` masks every decoding step's logits to the tokens the
matcher allows, so the output always matches the grammar (unless ``max_new_tokens`` cuts it short).

llguidance was chosen over xgrammar: it is one abi3 wheel without dependencies (xgrammar pulls triton and
apache-tvm-ffi into a CPU install), builds grammars from JSON schema and Lark directly, and works from any
fast Hugging Face tokenizer. It is imported only when a grammar is built.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llguidance import LLMatcher, LLTokenizer
    from transformers import PreTrainedTokenizerBase

JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
"""Compact JSON (no free whitespace between tokens): a small model cannot loop on newlines forever."""

__all__ = ["JSON_OPTIONS", "Grammar", "as_grammar", "close_objects", "ll_tokenizer", "matcher_for"]


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as error:  # pragma: no cover - a dependency of the package
        raise ImportError("constrained decoding needs llguidance: pip install llguidance") from error
    return llguidance


_SUBSCHEMA_KEYS = frozenset(
    (
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "anyOf",
        "oneOf",
        "prefixItems",
    )
)


def close_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema that says nothing about ``additionalProperties``
    forbids extra keys (``allOf`` branches excepted: each would forbid the others' keys).

    Every output of the closed schema is valid under the original one; without it a small model adds
    made-up keys until ``max_new_tokens`` runs out."""
    schema = copy.deepcopy(schema)

    def close(node: Any, in_all_of: bool = False) -> None:
        if isinstance(node, list):
            for item in node:
                close(item, in_all_of)
            return
        if not isinstance(node, dict):
            return
        is_object = node.get("type") == "object" or "properties" in node
        if is_object and "additionalProperties" not in node and not in_all_of:
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions", "patternProperties"):
                if isinstance(value, dict):
                    for child in value.values():
                        close(child)
            elif key in _SUBSCHEMA_KEYS:
                close(value)
            elif key == "allOf":
                close(value, in_all_of=True)

    close(schema)
    return schema


@dataclass(frozen=True)
class Grammar:
    """What the model's answer must match: an llguidance grammar definition (``definition``, JSON text).

    Build one with :meth:`from_json_schema` (a JSON schema: the answer is one JSON value valid under
    it), :meth:`json_object` (any JSON object), :meth:`from_lark` (a Lark grammar, which may embed JSON
    schemas with ``%json {...}``) or :meth:`from_regex`. Hashable: equal grammars share compiled
    matchers and may share a batch."""

    definition: str
    description: str = "grammar"

    @classmethod
    def from_json_schema(cls, schema: Mapping[str, Any] | str, *, closed: bool = True) -> Grammar:
        """The answer is one JSON value valid under ``schema`` (a dict, or its JSON text).

        ``closed`` (default) forbids keys a schema's objects do not declare unless they say otherwise
        (:func:`close_objects`); the output is valid under ``schema`` either way."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as error:
                raise ValueError(f"the JSON schema is not valid JSON: {error}") from error
        if not isinstance(schema, Mapping):
            raise TypeError(f"a JSON schema must be a dict (or its JSON text), got {type(schema).__name__}")
        try:
            text = json.dumps(close_objects(dict(schema)) if closed else dict(schema))
        except (TypeError, ValueError) as error:
            raise ValueError(f"the JSON schema is not JSON-serialisable: {error}") from error
        matcher = _llguidance().LLMatcher
        try:
            definition = matcher.grammar_from_json_schema(text, overrides=dict(JSON_OPTIONS))
        except ValueError as error:
            raise ValueError(f"the JSON schema cannot be used: {error}") from error
        return cls._checked(definition, f"JSON schema {schema.get('title') or ''}".strip())

    @classmethod
    def json_object(cls) -> Grammar:
        """Any JSON object (OpenAI's ``response_format={"type": "json_object"}``)."""
        return cls.from_json_schema({"type": "object"}, closed=False)

    @classmethod
    def from_lark(cls, lark: str) -> Grammar:
        """A Lark grammar in llguidance's dialect (``start`` is the answer; ``%json {schema}`` embeds a
        JSON schema; lexemes support ``&`` and ``~``)."""
        if not isinstance(lark, str) or not lark.strip():
            raise ValueError("a Lark grammar must be a non-empty str")
        return cls._checked(_llguidance().LLMatcher.grammar_from_lark(lark), "Lark grammar")

    @classmethod
    def from_regex(cls, regex: str) -> Grammar:
        """The answer matches ``regex`` as a whole."""
        if not isinstance(regex, str) or not regex:
            raise ValueError("a regex must be a non-empty str")
        return cls._checked(_llguidance().LLMatcher.grammar_from_regex(regex), "regex")

    @classmethod
    def _checked(cls, definition: str, description: str) -> Grammar:
        problem = _llguidance().LLMatcher.validate_grammar(definition)
        if problem and not problem.startswith("WARNING"):
            raise ValueError(f"the {description} cannot be compiled into a grammar: {problem}")
        return cls(definition, description)

    @property
    def key(self) -> str:
        """A short content hash: equal grammars have equal keys."""
        return hashlib.sha256(self.definition.encode()).hexdigest()[:16]


def as_grammar(value: Any, name: str = "grammar") -> Grammar | None:
    """``grammar=`` of the generation methods: ``None``, a :class:`Grammar`, or a JSON schema (a dict)."""
    if value is None or isinstance(value, Grammar):
        return value
    if isinstance(value, Mapping):
        return Grammar.from_json_schema(value)
    raise TypeError(f"{name} must be None, a Grammar or a JSON schema (a dict), got {type(value).__name__}")


@dataclass
class _Compiled:
    """llguidance's tokenizer for one Hugging Face tokenizer and its matchers, compiled once each."""

    tokenizer: LLTokenizer
    templates: dict[str, LLMatcher]


_compiled: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], _Compiled]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
MAX_CACHED_MATCHERS = 64
"""Compiled grammars kept per tokenizer."""


def _compiled_for(tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int]) -> _Compiled:
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(
            f"constrained decoding needs a fast Hugging Face tokenizer, got {type(tokenizer).__name__}"
        )
    eos = tuple(int(i) for i in eos_ids) or (
        (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
    )
    if not eos:
        raise ValueError("constrained decoding needs an end-of-turn token; the tokenizer has none")
    with _lock:
        per_eos = _compiled.setdefault(tokenizer, {})
        compiled = per_eos.get(eos)
        if compiled is None:
            import llguidance.hf

            compiled = per_eos[eos] = _Compiled(
                llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos)), {}
            )
        return compiled


def ll_tokenizer(tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int]) -> LLTokenizer:
    """llguidance's view of a fast Hugging Face tokenizer whose end-of-turn tokens are ``eos_ids``,
    built once per tokenizer (about half a second for a 49K vocabulary)."""
    return _compiled_for(tokenizer, eos_ids).tokenizer


def matcher_for(grammar: Grammar, tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int]) -> LLMatcher:
    """A fresh matcher of ``grammar`` for ``tokenizer``, at the start of the answer (a copy of one
    compiled once per grammar and tokenizer)."""
    compiled = _compiled_for(tokenizer, eos_ids)
    with _lock:
        template = compiled.templates.get(grammar.definition)
    if template is None:
        template = _llguidance().LLMatcher(compiled.tokenizer, grammar.definition, log_level=0)
        if template.is_error():
            raise ValueError(f"the {grammar.description} cannot be compiled: {template.get_error()}")
        with _lock:
            compiled.templates[grammar.definition] = template
            while len(compiled.templates) > MAX_CACHED_MATCHERS:
                compiled.templates.pop(next(iter(compiled.templates)))
    return template.deep_copy()
