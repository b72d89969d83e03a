"""A start shared by several samples of a step runs once (LIFTConfig.share_prefixes), and training computes
exactly what it computes with every sample whole."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb.batching import (
    MIN_SHARED_PREFIX,
    collate,
    collate_packed,
    packs_shared_prefixes,
    plan_forward_passes,
    shared_prefix_groups,
    suffix,
)
from lift_integrations.absorb.losses import per_sample_loss
from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample

FACTS = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. "
)


def _sample(prefix: list[int], question: list[int], answer: list[int]) -> TrainingSample:
    ids = prefix + question + answer
    return TrainingSample(ids, [IGNORE_INDEX] * (len(prefix) + len(question)) + answer, "qa")


def _random_ids(generator: torch.Generator, n: int, vocab: int) -> list[int]:
    return torch.randint(5, vocab, (n,), generator=generator).tolist()


@pytest.mark.parametrize(
    ("arch", "attn", "packed"),
    [
        ("llama", "sdpa", True),
        ("llama", "eager", True),
        ("qwen3", "sdpa", True),
        ("gemma2", "eager", False),  # sliding-window layers: the key/value-cache path
        ("gemma3", "sdpa", False),
    ],
)
def test_a_shared_prefix_gives_the_losses_and_gradients_of_whole_samples(
    arch: str, attn: str, packed: bool
) -> None:
    # Gemma's sliding window (256) is shorter than the prefix, so its cached window is exercised too.
    model, tokenizer = build_tiny_model(arch, attn=attn)
    model.float()
    assert packs_shared_prefixes(model) == packed
    vocab = len(tokenizer)
    generator = torch.Generator().manual_seed(0)
    prefix = _random_ids(generator, 300, vocab)
    samples = [
        _sample(prefix, _random_ids(generator, q, vocab), _random_ids(generator, a, vocab))
        for q, a in [(9, 4), (14, 7), (5, 2)]
    ]
    weights = [p for n, p in model.named_parameters() if "q_proj" in n or "v_proj" in n]
    for weight in weights:
        weight.requires_grad_(True)
    cpu = torch.device("cpu")

    whole = per_sample_loss(model, collate(samples, tokenizer.pad_token_id, cpu))
    whole_grads = torch.autograd.grad(whole.sum(), weights)
    suffixes = [suffix(s, len(prefix)) for s in samples]
    if packed:
        additive = torch.float32 if attn == "eager" else None
        shared = per_sample_loss(model, collate_packed(prefix, suffixes, cpu, additive))
    else:
        batch = collate(suffixes, tokenizer.pad_token_id, cpu)
        shared = per_sample_loss(model, batch, torch.tensor([prefix]))
    shared_grads = torch.autograd.grad(shared.sum(), weights)

    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)
    for got, expected in zip(shared_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_samples_are_grouped_by_their_common_unsupervised_start() -> None:
    common = list(range(10, 10 + MIN_SHARED_PREFIX + 40))
    other = list(range(1000, 1000 + MIN_SHARED_PREFIX + 40))
    samples = [
        _sample(common, [1, 2, 3], [7, 8]),
        _sample(other, [1, 2], [9]),  # a different start: alone
        _sample(common, [1, 2, 4, 5], [6]),
        _sample(common[:100], [3], [4]),  # too short to share anything
        _sample(common, [1, 2, 3, 3], [5]),
    ]
    groups, alone = shared_prefix_groups(samples)
    assert alone == [1, 3]
    assert len(groups) == 1 and groups[0].indices == [0, 2, 4]
    # Shared up to the end of the common ids ([..., 1, 2]), which precede every supervised token.
    assert groups[0].shared == len(common) + 2


def test_the_shared_part_stops_before_the_first_position_that_predicts_a_supervised_token() -> None:
    ids = list(range(10, 10 + MIN_SHARED_PREFIX + 50))
    supervised_from = MIN_SHARED_PREFIX + 20
    labels = [IGNORE_INDEX] * supervised_from + ids[supervised_from:]
    samples = [TrainingSample(ids, labels, "segment"), TrainingSample([*ids, 3], [*labels, 3], "segment")]
    (group,), alone = shared_prefix_groups(samples)
    assert alone == [] and group.shared == supervised_from - 1


def test_the_plan_covers_every_sample_once_and_respects_the_token_budget() -> None:
    common = list(range(10, 10 + MIN_SHARED_PREFIX + 10))
    samples = [_sample(common, [1] * (i + 1), [2, 3]) for i in range(6)]
    samples += [TrainingSample([4] * 50, [4] * 50, "segment") for _ in range(3)]
    passes = plan_forward_passes(samples, max_samples=4, max_tokens=40, share_prefixes=True)
    assert sorted(i for p in passes for i in p.indices) == list(range(len(samples)))
    for forward in passes:
        widths = [len(samples[i].input_ids) - forward.shared for i in forward.indices]
        assert len(forward.indices) <= 4
        assert len(forward.indices) == 1 or max(widths) * len(forward.indices) <= 40
        assert forward.shared in (0, len(common))  # the first answer token follows common + [1]
    unshared = plan_forward_passes(samples, max_samples=4, max_tokens=10**6, share_prefixes=False)
    assert all(p.shared == 0 for p in unshared)


def _absorb(lift: LIFTModel, share: bool) -> tuple[dict[str, torch.Tensor], dict]:
    config = LIFTConfig(
        segment_length=64,
        segment_stride=32,
        context_view_length=32,
        qa_context_length=400,
        qa_per_document=4,
        stage1_epochs=1,
        stage2_epochs=2,
        max_seq_length=480,
        precision="fp32",
        share_prefixes=share,
    )
    memory = lift.absorb(FACTS * 12, config=config)
    tensors = {name: t.clone() for name, t in memory.tensors.items()}
    stats = dict(memory.stats)
    lift.release(memory)
    return tensors, stats


def test_absorbing_with_shared_prefixes_gives_the_memory_of_whole_samples(tiny_lift: LIFTModel) -> None:
    shared, shared_stats = _absorb(tiny_lift, share=True)
    whole, whole_stats = _absorb(tiny_lift, share=False)
    assert shared_stats["qa_samples"] >= 2
    assert shared_stats["tokens_trained"] == whole_stats["tokens_trained"]
    assert whole_stats["tokens_computed"] == whole_stats["tokens_trained"]
    assert shared_stats["tokens_computed"] < whole_stats["tokens_computed"] - 1000
    for name, tensor in whole.items():
        torch.testing.assert_close(shared[name], tensor, rtol=1e-4, atol=1e-5)
