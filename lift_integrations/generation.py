"""Text generation with the chat template, stop strings, streaming and token counts."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from lift_integrations.prompting import (
    SEPARATOR,
    Message,
    decode_text,
    encode_chat,
    encode_text,
    head_tail,
    normalize_messages,
    qa_user_message,
    stop_token_ids,
    tokenizer_lock,
)

if TYPE_CHECKING:
    import torch
    from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

    from lift_integrations.structured.grammar import Grammar

FinishReason = Literal["stop", "length"]
MIN_SAMPLING_TEMPERATURE = 1e-5
"""Temperatures below it decode greedily, the limit of sampling as the temperature goes to 0: dividing the
logits by a subnormal temperature (5e-324) overflows them and breaks the sampler."""
PromptInput = str | Sequence[Message | tuple[str, str]]


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation: the text and what the frameworks report about it."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: FinishReason

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __str__(self) -> str:
        return self.text


def to_messages(prompt_or_messages: PromptInput) -> list[Message]:
    """A prompt string becomes one user turn; messages may be dicts or ``(role, content)`` pairs."""
    if isinstance(prompt_or_messages, str):
        if not prompt_or_messages.strip():
            raise ValueError("the prompt is empty")
        return [{"role": "user", "content": prompt_or_messages}]
    if isinstance(prompt_or_messages, (bytes, bytearray)):
        raise TypeError("the prompt must be text (str), not bytes; decode it first")
    messages: list[Message] = []
    for index, item in enumerate(prompt_or_messages):
        if isinstance(item, tuple) and len(item) == 2:
            role, content = item
            messages.append(
                {"role": {"human": "user", "ai": "assistant"}.get(role, role), "content": content}
            )
        elif isinstance(item, dict):
            messages.append(item)
        else:
            raise TypeError(
                f"message {index} must be a dict or a (role, content) pair, got {type(item).__name__}"
            )
    return normalize_messages(messages)


def with_context(messages: list[Message], context: str | None) -> list[Message]:
    """Put ``context`` above the question in the last user turn, in the format QA training uses."""
    if not context:
        return messages
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "user":
            updated = dict(messages[index])
            updated["content"] = qa_user_message(updated["content"], context)
            return [*messages[:index], updated, *messages[index + 1 :]]
    return [*messages, {"role": "user", "content": qa_user_message("", context)}]


def build_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    context: str | None,
    budget: int,
) -> list[int]:
    """Prompt ids within ``budget`` tokens; a context too long for it is cut to its head and tail."""
    ids = encode_chat(tokenizer, with_context(messages, context), add_generation_prompt=True)
    if len(ids) <= budget or not context:
        if len(ids) > budget:
            raise ValueError(f"the prompt has {len(ids)} tokens, more than the {budget} the window leaves")
        return ids
    bare = len(encode_chat(tokenizer, with_context(messages, " "), add_generation_prompt=True))
    room = budget - bare
    if room <= 8:
        raise ValueError(f"the messages alone take {bare} tokens; no room is left for context in {budget}")
    context_ids = head_tail(encode_text(tokenizer, context), room, encode_text(tokenizer, SEPARATOR))
    ids = encode_chat(
        tokenizer, with_context(messages, decode_text(tokenizer, context_ids)), add_generation_prompt=True
    )
    while len(ids) > budget and room > 8:  # decoding and re-encoding can shift a few tokens
        room -= max(8, len(ids) - budget)
        context_ids = head_tail(encode_text(tokenizer, context), room, encode_text(tokenizer, SEPARATOR))
        ids = encode_chat(
            tokenizer, with_context(messages, decode_text(tokenizer, context_ids)), add_generation_prompt=True
        )
    return ids


def _truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Generator:
    """Runs ``model.generate`` for prompt ids; ``guard`` is entered around every call (lock + memory)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self._stop_cache: dict[tuple[str, ...], Any] = {}

    def _kwargs(
        self,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        top_p: float | None,
        grammars: Sequence[Grammar | None] = (),
    ) -> dict:
        """``model.generate``'s keywords; ``grammars``: one per batch row (``None``: unconstrained), or
        none at all. A grammar's processor applies temperature and top-p itself, after its mask."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids or None,
        )
        if temperature >= MIN_SAMPLING_TEMPERATURE:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=top_p if top_p else 1.0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if any(g is not None for g in grammars):
            from lift_integrations.structured.processor import grammar_processor

            sampling = temperature >= MIN_SAMPLING_TEMPERATURE
            processor = grammar_processor(
                grammars,
                self.tokenizer,
                self.eos_ids,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                max_new_tokens=max_new_tokens,
            )
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([processor])
            if sampling:
                kwargs.update(temperature=1.0, top_p=1.0)
        stops = [s for s in stop if s]
        if stops:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([self._stop_criteria(tuple(stops))])
        return kwargs

    def _stop_criteria(self, stops: tuple[str, ...]) -> Any:
        """``StopStringCriteria`` for ``stops``, built once: building it scans the whole vocabulary, which
        costs a few hundred milliseconds per call for a 49K-token vocabulary.

        Looked up and built under the tokenizer's lock (:func:`~lift_integrations.prompting.tokenizer_lock`):
        building it encodes text with the tokenizer's default ``split_special_tokens``, which would flip that
        shared switch under a concurrent encode of content; and neither this cache nor transformers'
        module-level one behind ``StopStringCriteria`` is safe against concurrent insertion and eviction."""
        from transformers import StopStringCriteria

        with tokenizer_lock(self.tokenizer):
            cached = self._stop_cache.get(stops)
            if cached is None:
                cached = self._stop_cache[stops] = StopStringCriteria(
                    tokenizer=self.tokenizer, stop_strings=list(stops)
                )
                if len(self._stop_cache) > 64:
                    self._stop_cache.pop(next(iter(self._stop_cache)))
            return cached

    def _finish(
        self, prompt_len: int, new_ids: list[int], max_new_tokens: int, stop: Sequence[str]
    ) -> GenerationResult:
        text = decode_text(self.tokenizer, new_ids, skip_special_tokens=True)
        text, stopped = _truncate_at_stop(text, stop)
        ended = bool(new_ids) and new_ids[-1] in self.eos_ids
        reason: FinishReason = "stop" if (stopped or ended or len(new_ids) < max_new_tokens) else "length"
        return GenerationResult(
            text=text, input_tokens=prompt_len, output_tokens=len(new_ids), finish_reason=reason
        )

    def generate(
        self,
        prompt_ids: list[int],
        guard: AbstractContextManager[Any],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        top_p: float | None = None,
        grammar: Grammar | None = None,
    ) -> GenerationResult:
        kwargs = self._kwargs(max_new_tokens, temperature, stop, top_p, [grammar])
        new_ids = self.new_token_ids(prompt_ids, guard, kwargs)
        return self._finish(len(prompt_ids), new_ids, max_new_tokens, stop)

    def new_token_ids(
        self, prompt_ids: list[int], guard: AbstractContextManager[Any], kwargs: dict[str, Any]
    ) -> list[int]:
        """Run ``model.generate`` inside ``guard`` (the lock and memory) and return the new token ids."""
        import torch

        device = next(self.model.parameters()).device
        input_ids = torch.tensor([prompt_ids], device=device)
        with guard, torch.inference_mode():
            output = self._generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        return output[0, len(prompt_ids) :].tolist()

    def generate_batch(
        self,
        prompts: Sequence[list[int]],
        guard: AbstractContextManager[Any],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        top_p: float | None = None,
        grammars: Sequence[Grammar | None] = (),
    ) -> list[GenerationResult]:
        """Generate for several prompts in one left-padded batch (one ``model.generate`` call).

        Decoding a small model is bound by per-step overhead, not arithmetic, so a batch of prompts costs
        about what one does. Each row stops at its own end-of-turn token; HF fills finished rows with the
        pad id, which is trimmed here. ``grammars``: one per prompt (``None``: unconstrained), or none.
        """
        import torch

        kwargs = self._kwargs(max_new_tokens, temperature, stop, top_p, grammars)
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        with guard, torch.inference_mode():
            output = self._generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
        return [
            self._finish(len(ids), self._trim(output[row, width:].tolist()), max_new_tokens, stop)
            for row, ids in enumerate(prompts)
        ]

    def _generate(self, **kwargs: Any) -> torch.Tensor:
        """``model.generate``: prompt and new token ids, a row per prompt (no ``return_dict_in_generate``)."""
        # A causal LM's class mixes in GenerationMixin, which the PreTrainedModel annotation leaves out.
        return cast("GenerationMixin", self.model).generate(**kwargs)

    def _trim(self, new_ids: list[int]) -> list[int]:
        """A batch row's own tokens: up to its first end-of-turn token, without the pads after it."""
        for index, token in enumerate(new_ids):
            if token in self.eos_ids:
                return new_ids[: index + 1]
        while new_ids and new_ids[-1] == self.pad_id:
            new_ids = new_ids[:-1]
        return new_ids

    def stream(
        self,
        prompt_ids: list[int],
        guard: AbstractContextManager[Any],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        top_p: float | None = None,
        grammar: Grammar | None = None,
    ) -> TextStream:
        return TextStream(
            self,
            prompt_ids,
            guard,
            self._kwargs(max_new_tokens, temperature, stop, top_p, [grammar]),
            max_new_tokens,
            stop,
        )


class _Closed(Exception):
    """Raised inside the worker of a stream closed while it waited for the model: nothing to generate."""


class TextStream(Iterator[str]):
    """Text pieces as the model produces them; :attr:`result` holds the totals once it is exhausted.

    Generation runs in a worker thread. Pieces that could be the start of a stop string are held back
    until it is clear they are not, so a stop string never reaches the caller. Empty pieces (a partial
    UTF-8 character) are never yielded. A consumer that stops early should call :meth:`close` (or
    :meth:`cancel`), which ends generation at the next token and releases the model.
    """

    def __init__(
        self,
        generator: Generator,
        prompt_ids: list[int],
        guard: AbstractContextManager[Any],
        kwargs: dict[str, Any],
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancelled = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancelled.is_set()

        self._cancelled = cancelled
        self._state = threading.Lock()  # orders close() against the worker taking the model
        self._generating = False
        criteria = StoppingCriteriaList([*kwargs.get("stopping_criteria", []), _Cancelled()])
        kwargs = {**kwargs, "stopping_criteria": criteria}
        self.result: GenerationResult | None = None
        self._generator = generator
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._streamer = TextIteratorStreamer(generator.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._error: BaseException | None = None
        self._new_ids: list[int] = []
        self._prompt_len = len(prompt_ids)
        self._max_new_tokens = max_new_tokens
        self._pieces = self._iterate()
        self._thread = threading.Thread(target=self._run, args=(prompt_ids, guard, kwargs), daemon=True)
        self._thread.start()

    def _run(self, prompt_ids: list[int], guard: AbstractContextManager[Any], kwargs: dict[str, Any]) -> None:
        try:
            self._new_ids = self._generator.new_token_ids(
                prompt_ids, self._entered(guard), {**kwargs, "streamer": self._streamer}
            )
        except _Closed:
            self._streamer.end()
        except BaseException as error:  # re-raised in the consumer's thread
            self._error = error
            self._streamer.end()

    @contextlib.contextmanager
    def _entered(self, guard: AbstractContextManager[Any]) -> Iterator[None]:
        """``guard`` (the model lock and memory), noting that generation has begun; a stream closed while
        its worker waited for the lock generates nothing."""
        with guard:
            with self._state:
                if self._cancelled.is_set():
                    raise _Closed
                self._generating = True
            yield

    def _iterate(self) -> Iterator[str]:
        emitted = ""
        buffer = ""
        stopped = False
        for piece in self._streamer:
            if stopped or not piece:
                continue
            buffer += piece
            cut, hit = _truncate_at_stop(buffer, self._stop)
            if hit:
                stopped = True
                if cut:
                    emitted += cut
                    yield cut
                buffer = ""
                continue
            ready = buffer[: len(buffer) - self._hold] if self._hold else buffer
            if ready:
                emitted += ready
                buffer = buffer[len(ready) :]
                yield ready
        self._thread.join()
        if self._error is not None:
            raise self._error
        if buffer and not stopped:
            emitted += buffer
            yield buffer
        final = self._generator._finish(self._prompt_len, self._new_ids, self._max_new_tokens, self._stop)
        self.result = GenerationResult(
            text=emitted,
            input_tokens=final.input_tokens,
            output_tokens=final.output_tokens,
            finish_reason=final.finish_reason,
        )

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """End generation at the next token without waiting for it (never blocks)."""
        self._cancelled.set()

    def close(self) -> None:
        """Stop generating now (frees the model for other calls) if the caller stops reading early.

        Waits for the token in progress, so the model lock is free when it returns; but only for a worker
        that holds the model: one still queued for the lock generates nothing once it gets it, and waiting
        for it could deadlock a caller that holds the lock (a finalizer run in another request's thread).
        """
        with self._state:
            self._cancelled.set()
            generating = self._generating
        if generating and threading.current_thread() is not self._thread:
            self._thread.join()

    def __del__(self) -> None:
        cancelled = getattr(self, "_cancelled", None)
        if cancelled is not None:
            cancelled.set()

    def text(self) -> str:
        """Consume the rest of the stream and return the whole text."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result.text
