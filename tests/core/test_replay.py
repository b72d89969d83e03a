"""General replay (LIFTConfig.general_replay): unrelated prompts trained with the base model's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb.replay import (
    ReplayPrompt,
    load_replay_prompts,
    pick_replay_prompts,
    replay_samples,
)
from lift_integrations.absorb.samples import IGNORE_INDEX

PROBE = Path(__file__).resolve().parents[2] / "examples" / "data" / "general_questions.json"
FACTS = "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. " * 8


def test_the_replay_set_is_disjoint_from_the_general_probe() -> None:
    prompts = load_replay_prompts()
    assert len(prompts) >= 40
    assert any(p.context for p in prompts) and any(p.context is None for p in prompts)
    probe = {entry["question"].strip().lower() for entry in json.loads(PROBE.read_text())}
    assert not probe & {p.question.strip().lower() for p in prompts}


def test_picks_are_distinct_and_reproducible() -> None:
    first = pick_replay_prompts(10, np.random.default_rng(3))
    assert len(set(first)) == 10 and first == pick_replay_prompts(10, np.random.default_rng(3))
    assert len(pick_replay_prompts(10**6, np.random.default_rng(0))) == len(load_replay_prompts())


def test_samples_supervise_the_answer_and_skip_missing_or_overlong_ones(tiny_lift: LIFTModel) -> None:
    prompts = [
        ReplayPrompt("Name a colour.", None),
        ReplayPrompt("Who runs the shop?", "The shop on Elm Road is run by Ada Pell."),
        ReplayPrompt("What is two plus two?", None),
        ReplayPrompt("Why?", "word " * 500),
    ]
    samples = replay_samples(tiny_lift.tokenizer, prompts, ["Blue.", "Ada Pell.", None, "Because."], 300)
    assert len(samples) == 2 and all(s.kind == "replay" for s in samples)
    for sample, answer in zip(samples, ["Blue.", "Ada Pell."], strict=True):
        supervised = [t for t in sample.labels if t != IGNORE_INDEX]
        assert answer in tiny_lift.tokenizer.decode(supervised)
    assert "Elm Road" in tiny_lift.tokenizer.decode(samples[1].input_ids)


def test_base_answers_come_from_the_base_model_once(
    tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = pick_replay_prompts(3, np.random.default_rng(0))
    calls = []
    generate = tiny_lift.generate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("memory", "attached"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(tiny_lift, "generate", counting)
    answers = tiny_lift._base_answers(prompts)
    assert calls == [None, None, None]  # memory=None: the base model, whatever memory is attached
    for prompt, answer in zip(prompts, answers, strict=True):
        context = [prompt.context] if prompt.context else None
        result = generate(prompt.question, memory=None, context=context, max_new_tokens=64)
        assert answer == (result.text.strip() if result.finish_reason == "stop" else None)
    assert tiny_lift._base_answers(prompts) == answers and len(calls) == 3  # remembered


def test_absorb_trains_the_replay_samples(tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tiny random model rarely ends its answers, so its replies are fixed here to test the wiring.
    monkeypatch.setattr(tiny_lift, "_base_answers", lambda prompts: ["Fine, thanks."] * len(prompts))
    config = LIFTConfig.fast(general_replay=5, stage1_epochs=0, stage2_epochs=1, qa_per_document=2)
    memory = tiny_lift.absorb(FACTS, config=config)
    assert memory.stats["replay_samples"] == 5
    assert LIFTConfig.fast().general_replay == 0 or memory.config.general_replay == 5
    with pytest.raises(ValueError, match="general_replay"):
        LIFTConfig(general_replay=-1)
