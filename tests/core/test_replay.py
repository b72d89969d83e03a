"""General replay (LIFTConfig.general_replay): unrelated prompts trained with the base model's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb.batching import collate
from lift_integrations.absorb.losses import mean_gate_per_sample, replay_losses
from lift_integrations.absorb.replay import (
    ReplayPrompt,
    load_replay_prompts,
    pick_replay_prompts,
    replay_samples,
)
from lift_integrations.absorb.samples import IGNORE_INDEX
from lift_integrations.absorb.target import AdapterTarget
from lift_integrations.adapters.gated_memory import GatedMemoryConfig

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
    generate_batch = tiny_lift.generate_batch

    def counting(prompts, **kwargs):
        calls.append((len(prompts), kwargs.get("memory", "attached")))
        return generate_batch(prompts, **kwargs)

    monkeypatch.setattr(tiny_lift, "generate_batch", counting)
    answers = tiny_lift._base_answers(prompts)
    assert calls == [(3, None)]  # one batch; memory=None: the base model, whatever memory is attached
    for prompt, answer in zip(prompts, answers, strict=True):
        context = [prompt.context] if prompt.context else None
        result = tiny_lift.generate(prompt.question, memory=None, context=context, max_new_tokens=64)
        assert answer == (result.text.strip() if result.finish_reason == "stop" else None)
    assert tiny_lift._base_answers(prompts) == answers and len(calls) == 1  # remembered


def test_absorb_trains_the_replay_samples(tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tiny random model rarely ends its answers, so its replies are fixed here to test the wiring.
    monkeypatch.setattr(tiny_lift, "_base_answers", lambda prompts: ["Fine, thanks."] * len(prompts))
    config = LIFTConfig.fast(general_replay=5, stage1_epochs=0, stage2_epochs=1, qa_per_document=2)
    memory = tiny_lift.absorb(FACTS, config=config)
    assert memory.stats["replay_samples"] == 5
    assert LIFTConfig.fast().general_replay == 0 or memory.config.general_replay == 5
    with pytest.raises(ValueError, match="general_replay"):
        LIFTConfig(general_replay=-1)


def _replay_batch(lift: LIFTModel, prompts: list[ReplayPrompt]) -> dict[str, torch.Tensor]:
    samples = replay_samples(lift.tokenizer, prompts, ["Fine, thanks."] * len(prompts), 512)
    return collate(samples, lift.tokenizer.pad_token_id, torch.device("cpu"))


def _mean_gate_on(lift: LIFTModel, memory, prompts: list[ReplayPrompt]) -> float:
    """The memory's gate averaged over layers, heads and tokens of ``prompts`` as replay samples."""
    batch = _replay_batch(lift, prompts)
    lift.backend.activate(lift._live.weights_for(memory))
    try:
        with torch.no_grad(), lift.backend.recording_gates() as gates:
            lift.model(input_ids=batch["input_ids"])
    finally:
        lift.backend.activate(None)
    return float(mean_gate_per_sample(gates, batch["attention_mask"]).mean())


def _mean_divergence_on(lift: LIFTModel, memory, prompts: list[ReplayPrompt]) -> float:
    """Mean KL(base || with the memory) of the next-token distributions over ``prompts``' tokens."""
    batch = _replay_batch(lift, prompts)
    only_kl = LIFTConfig(general_replay=1, replay_weight=0.0, replay_kl_weight=1.0)
    weights = lift._live.weights_for(memory)
    target = AdapterTarget(lift.model, lift.backend, weights, lift.lock, only_kl, lift.tokenizer.pad_token_id)
    lift.backend.activate(weights)
    try:
        with torch.no_grad():
            losses = replay_losses(
                lift.model,
                batch,
                only_kl,
                record_gates=target.recording_gates,
                without_memory=target.without_memory,
            )
    finally:
        lift.backend.activate(None)
    return float(losses.mean())


def _absorb_with_replay(monkeypatch: pytest.MonkeyPatch, **replay: float):
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    monkeypatch.setattr(lift, "_base_answers", lambda prompts: ["Fine, thanks."] * len(prompts))
    config = LIFTConfig.fast(
        general_replay=8,
        replay_weight=0.0,  # the regulariser alone: any change comes from it
        stage1_epochs=0,
        stage2_epochs=3,
        qa_per_document=2,
        learning_rate=3e-2,  # Adam moves each parameter by about lr per step: enough to show in 9 steps
        precision="fp32",
        **replay,
    )
    return lift, lift.absorb(FACTS, config=config)


def test_the_gate_penalty_closes_the_gate_on_replay_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = list(load_replay_prompts()[:8])
    gates = {}
    for weight in (0.0, 50.0):
        lift, memory = _absorb_with_replay(monkeypatch, replay_gate_weight=weight)
        gates[weight] = _mean_gate_on(lift, memory, prompts)
    assert gates[0.0] > 0.5 * GatedMemoryConfig().initial_gate  # unpenalised, it stays near its start
    assert gates[50.0] < 0.5 * gates[0.0]


def test_the_kl_term_keeps_replay_prompts_close_to_the_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = list(load_replay_prompts())
    lift, free = _absorb_with_replay(monkeypatch)
    lift_kl, held = _absorb_with_replay(monkeypatch, replay_kl_weight=10.0)
    assert free.stats["replay_samples"] == held.stats["replay_samples"] == 8
    away = _mean_divergence_on(lift, free, prompts)
    assert away > 0
    assert _mean_divergence_on(lift_kl, held, prompts) < 0.75 * away


def test_the_replay_regularisers_need_replay_prompts_and_the_right_adapter(tiny_lift: LIFTModel) -> None:
    for name in ("replay_gate_weight", "replay_kl_weight"):
        with pytest.raises(ValueError, match="general_replay"):
            LIFTConfig(**{name: 1.0})
    with pytest.raises(ValueError, match="replay_weight"):
        LIFTConfig(general_replay=4, replay_weight=-1.0)
    model, tokenizer = build_tiny_model("llama")
    lora = LIFTModel(model, tokenizer, name="tiny-llama", adapter="lora")
    with pytest.raises(ValueError, match="Gated Memory"):
        lora.absorb(FACTS, config=LIFTConfig.fast(general_replay=4, replay_gate_weight=1.0))
