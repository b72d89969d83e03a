"""Gated Memory on every supported architecture: identity when detached, hooks, backends, dtypes."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import GatedMemoryConfig, LIFTModel
from lift_integrations.adapters.gated_memory import GatedMemoryBackend, GatedMemoryLayer

ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"]
PROMPT = "Who founded the Zorblat Institute in Vellhaven?"


def _logits(lift: LIFTModel, weights: torch.nn.Module | None) -> torch.Tensor:
    ids = lift.prompt_ids(PROMPT, memory=None)
    lift.backend.activate(weights)
    try:
        with torch.no_grad():
            return lift.logits(ids)
    finally:
        lift.backend.activate(None)


def _randomize(weights: torch.nn.Module, seed: int = 1) -> None:
    """Give an untrained memory large random weights so that it visibly changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in weights.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_detached_memory_gives_base_logits_exactly(arch: str) -> None:
    model, tokenizer = build_tiny_model(arch)
    lift = LIFTModel(model, tokenizer, name=arch)
    base = _logits(lift, None)
    weights = lift.backend.create()
    _randomize(weights)
    adapted = _logits(lift, weights)
    assert not torch.allclose(base, adapted, atol=1e-3), "an active memory must change the output"
    assert torch.equal(_logits(lift, None), base), "after deactivation the model must be exactly the base"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_untrained_memory_is_nearly_the_base_model(arch: str) -> None:
    model, tokenizer = build_tiny_model(arch)
    lift = LIFTModel(model, tokenizer, name=arch)
    base = _logits(lift, None)
    fresh = _logits(lift, lift.backend.create())
    # mem(q) starts at 0 and the gate at 0.05, so attention is only scaled by 0.95.
    assert (fresh - base).abs().max() < 0.1 * base.abs().max()
    assert not torch.equal(fresh, base)


def test_fresh_layer_has_zero_memory_and_the_configured_gate() -> None:
    config = GatedMemoryConfig(initial_gate=0.01)
    layer = GatedMemoryLayer(num_heads=3, head_dim=16, config=config, bias=False)
    layer.reset_parameters(config.initial_gate_bias)
    query = torch.randn(2, 5, 3, 16)
    memory, gate = layer(query)
    assert memory.shape == (2, 5, 3, 16) and gate.shape == (2, 5, 3, 1)
    assert torch.count_nonzero(memory) == 0
    torch.testing.assert_close(gate, torch.full_like(gate, 0.01))


def test_mix_follows_the_gate_equation() -> None:
    attention = torch.randn(2, 4, 3 * 8)
    memory = torch.randn(2, 4, 3, 8)
    gate = torch.rand(2, 4, 3, 1)
    mixed = GatedMemoryLayer.mix(attention, memory, gate)
    expected = ((1 - gate) * attention.view(2, 4, 3, 8) + gate * memory).reshape(2, 4, 24)
    torch.testing.assert_close(mixed, expected)


def test_eager_and_sdpa_attention_agree_with_a_memory() -> None:
    eager_model, tokenizer = build_tiny_model("llama", attn="eager")
    sdpa_model, _ = build_tiny_model("llama", attn="sdpa")
    sdpa_model.load_state_dict(eager_model.state_dict())
    eager, sdpa = LIFTModel(eager_model, tokenizer), LIFTModel(sdpa_model, tokenizer)
    weights = eager.backend.create()
    _randomize(weights)
    sdpa_weights = sdpa.backend.create()
    sdpa_weights.load_state_dict(weights.state_dict())
    torch.testing.assert_close(_logits(eager, weights), _logits(sdpa, sdpa_weights), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2"])
def test_kv_cache_generation_matches_full_recomputation(arch: str) -> None:
    model, tokenizer = build_tiny_model(arch)
    lift = LIFTModel(model, tokenizer)
    weights = lift.backend.create()
    _randomize(weights, seed=3)
    ids = torch.tensor([lift.prompt_ids(PROMPT, memory=None)])
    lift.backend.activate(weights)
    try:
        with torch.no_grad():
            cached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, min_new_tokens=8)
            uncached = model.generate(
                ids, max_new_tokens=8, do_sample=False, use_cache=False, min_new_tokens=8
            )
    finally:
        lift.backend.activate(None)
    assert torch.equal(cached, uncached)


def test_bf16_model_with_memory_runs_and_stays_close_to_fp32() -> None:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer)
    weights = lift.backend.create()
    _randomize(weights, seed=5)
    reference = _logits(lift, weights)
    model.to(torch.bfloat16)
    low = _logits(lift, weights)
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_unsupported_architecture_is_named_in_the_error() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="GPT2Attention"):
        GatedMemoryBackend(model)


def test_memory_adds_no_base_parameters_and_base_stays_frozen(tiny_lift: LIFTModel) -> None:
    before = {name: p.detach().clone() for name, p in tiny_lift.model.named_parameters()}
    from lift_integrations import LIFTConfig

    tiny_lift.absorb(
        "The Zorblat Institute was founded in 1874 by Mira Quenton.",
        config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2),
    )
    after = dict(tiny_lift.model.named_parameters())
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), f"base weight {name} changed"
        assert not after[name].requires_grad
