"""The logits processor that keeps every batch row inside its grammar, step by step.

Imported lazily (it needs torch and transformers) by :mod:`lift_integrations.generation` when a call
passes ``grammar=``. Each row has its own matcher (or none: that row decodes freely), so one batch can mix
grammars and rows that finish at different steps.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

from lift_integrations.structured.grammar import Grammar, ll_tokenizer, matcher_for

if TYPE_CHECKING:
    from llguidance import LLMatcher
    from transformers import PreTrainedTokenizerBase

_BITS = torch.arange(32, dtype=torch.int32)
CLOSING_RESERVE = 48
"""At most this many final steps of the budget prefer closing tokens."""
CLOSING_BONUS = 1e4
"""Added to the allowed closing tokens' logits near the end of the budget: more than any logit gap."""
_closers: weakref.WeakKeyDictionary[Any, torch.Tensor] = weakref.WeakKeyDictionary()
_closers_lock = threading.Lock()


def closing_tokens(
    tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int], vocab_size: int
) -> torch.Tensor:
    """Per token, how much it closes: 4 for the end of the turn, 3 for a token made of ``"``, ``}`` and
    ``]`` (blanks aside) that starts with a quote (it ends the string being written), 2 for other such
    tokens, 1 for a lone ``,`` (the next required key), else 0; computed once per tokenizer."""
    with _closers_lock:
        cached = _closers.get(tokenizer)
        if cached is None or cached.shape[0] != vocab_size:
            ranks = torch.zeros(vocab_size)
            texts = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
            for index, piece in enumerate(texts):
                text = tokenizer.convert_tokens_to_string([piece]).strip() if piece else ""
                if text and set(text) <= {'"', "}", "]"}:
                    ranks[index] = 3.0 if text.startswith('"') else 2.0
                elif text == ",":
                    ranks[index] = 1.0
            ranks[[i for i in eos_ids if i < vocab_size]] = 4.0
            cached = _closers[tokenizer] = ranks
        return cached


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks each row's next-token logits to what its grammar allows, then applies the sampling warpers.

    Temperature and top-p are applied here, after the mask, and not by ``generate`` (which would run its
    own warpers before any custom processor): top-p first could drop every token the grammar allows.
    A row whose matcher has accepted its end-of-turn token is left alone (``generate`` pads it).

    In the last ``reserve`` steps of the budget, allowed tokens that close the JSON (``closers``: quotes,
    brackets, braces, the end of the turn; then commas) are preferred over all others, so that strings
    end and objects close before ``max_new_tokens`` cuts the answer off: a small model can otherwise write
    digits or a string forever. The answer still follows the grammar; only its length is steered."""

    def __init__(
        self,
        matchers: Sequence[LLMatcher | None],
        vocab_size: int,
        warpers: Sequence[Any] = (),
        *,
        closers: torch.Tensor | None = None,
        budget: int | None = None,
        reserve: int = 0,
    ) -> None:
        self.matchers = list(matchers)
        self.vocab_size = vocab_size
        self.warpers = list(warpers)
        self.closers = closers
        self.budget = budget
        self.reserve = reserve
        self._step = 0
        self._width: int | None = None
        self._done = [m is None for m in self.matchers]
        self._words = (vocab_size + 31) // 32

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.matchers)
        if input_ids.shape[0] != rows:
            raise ValueError(f"the grammar processor has {rows} rows, the batch {input_ids.shape[0]}")
        if self._width is None:
            self._width = input_ids.shape[1]
        elif input_ids.shape[1] > self._width:
            self._width = input_ids.shape[1]
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, token)
        bitmask = torch.full((rows, self._words), -1, dtype=torch.int32)
        for row, matcher in enumerate(self.matchers):
            if matcher is not None and not self._done[row]:
                matcher.unsafe_compute_mask_ptr(bitmask[row].data_ptr(), self._words * 4)
        allowed = ((bitmask.unsqueeze(-1) >> _BITS) & 1).bool().view(rows, -1)[:, : self.vocab_size]
        allowed[~allowed.any(dim=1)] = True  # defensive: a broken matcher must not leave no token at all
        width = scores.shape[-1]
        if allowed.shape[1] < width:  # logits wider than the tokenizer: padding rows the grammar never allows
            extra = torch.zeros((rows, width - allowed.shape[1]), dtype=torch.bool)
            extra[torch.tensor(self._done)] = True
            allowed = torch.cat([allowed, extra], dim=1)
        allowed = allowed[:, :width].to(scores.device)
        masked = scores.masked_fill(~allowed, float("-inf"))
        self._step += 1
        if self.closers is not None and self.budget is not None and self.budget - self._step < self.reserve:
            closers = self.closers.to(scores.device)[:width]
            rows_on = ~torch.tensor(self._done, device=scores.device)
            bonus = torch.zeros_like(masked)
            bonus[:, : closers.shape[0]] = closers * CLOSING_BONUS
            masked = torch.where(rows_on[:, None] & allowed, masked + bonus, masked)
        for warper in self.warpers:
            masked = warper(input_ids, masked)
        return masked  # type: ignore[return-value]

    def _advance(self, row: int, token: int) -> None:
        matcher = self.matchers[row]
        if matcher is None or self._done[row]:
            return
        # Stopped before this token: the token is the end-of-turn (or a pad after it); a refused token
        # (defensive: the mask allows none) leaves the row to decode freely rather than fail the batch.
        if matcher.is_stopped() or not matcher.consume_token(token) or matcher.is_error():
            self._done[row] = True

    @property
    def accepting(self) -> list[bool]:
        """Per row: whether what was generated so far is a complete match (rows without a grammar: True)."""
        return [m is None or m.is_accepting() or m.is_stopped() for m in self.matchers]


def grammar_processor(
    grammars: Sequence[Grammar | None],
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: Sequence[int],
    *,
    temperature: float | None,
    top_p: float | None,
    max_new_tokens: int | None = None,
) -> GrammarLogitsProcessor:
    """A processor for a batch whose row ``i`` follows ``grammars[i]`` (``None``: unconstrained).

    ``temperature``/``top_p``: the sampling warpers to apply after the mask (``None``: greedy, none).
    ``max_new_tokens``: the budget whose last quarter (at most :data:`CLOSING_RESERVE` steps) prefers
    closing tokens."""
    matchers = [None if g is None else matcher_for(g, tokenizer, eos_ids) for g in grammars]
    vocab = ll_tokenizer(tokenizer, eos_ids).vocab_size
    warpers: list[Any] = []
    if temperature is not None:
        warpers.append(TemperatureLogitsWarper(temperature))
        if top_p is not None and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    if max_new_tokens is None:
        return GrammarLogitsProcessor(matchers, vocab, warpers)
    return GrammarLogitsProcessor(
        matchers,
        vocab,
        warpers,
        closers=closing_tokens(tokenizer, eos_ids, vocab),
        budget=max_new_tokens,
        reserve=min(CLOSING_RESERVE, max_new_tokens // 4),
    )
