"""General replay: prompts unrelated to the document, trained with the base model's own answers.

A memory trained on one document pulls every answer towards that document: the comparison's general probe
(``lift_bench``, the harness in the source tree) measured the base model answering unrelated questions
worse once a memory was attached. Replay adds prompts from the package's own set
(``data/replay_prompts.json``, written for this purpose and disjoint from the probe's questions), each
trained with the answer the base model gives without the memory. The memory thereby learns to leave
requests the document does not concern as it found them, which is what the gate is for.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample
from lift_integrations.prompting import encode_chat_with_answer, qa_user_message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPLAY_PROMPTS_FILE = Path(__file__).resolve().parents[1] / "data" / "replay_prompts.json"
REPLAY_MAX_NEW_TOKENS = 64
"""Longest base answer kept; an answer cut at this length is left out rather than taught as complete."""


@dataclass(frozen=True)
class ReplayPrompt:
    """A question, with a short passage to read it from or none (answered from general knowledge)."""

    question: str
    context: str | None = None


@functools.cache
def load_replay_prompts() -> tuple[ReplayPrompt, ...]:
    """The package's replay set."""
    entries = json.loads(REPLAY_PROMPTS_FILE.read_text(encoding="utf-8"))
    return tuple(ReplayPrompt(entry["question"], entry.get("context")) for entry in entries)


def pick_replay_prompts(count: int, rng: np.random.Generator) -> list[ReplayPrompt]:
    """``count`` prompts drawn without replacement (all of them when ``count`` exceeds the set)."""
    prompts = load_replay_prompts()
    chosen = rng.choice(len(prompts), size=min(count, len(prompts)), replace=False)
    return [prompts[int(i)] for i in chosen]


def replay_samples(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[ReplayPrompt],
    answers: Sequence[str | None],
    max_seq_length: int,
) -> list[TrainingSample]:
    """Chat-formatted samples in the format generation uses, loss on the base model's answer (and the
    end-of-turn token). Prompts without an answer (``None``: cut off, or empty) are left out."""
    samples = []
    for prompt, answer in zip(prompts, answers, strict=True):
        if not answer:
            continue
        user = qa_user_message(prompt.question, prompt.context)
        ids, answer_start = encode_chat_with_answer(tokenizer, [{"role": "user", "content": user}], answer)
        if len(ids) <= max_seq_length:
            samples.append(TrainingSample(ids, [IGNORE_INDEX] * answer_start + ids[answer_start:], "replay"))
    return samples
