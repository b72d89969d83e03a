"""The fast training paths compute what the plain ones do: no attention mask on right-padded batches,
chunked output projection + loss, and QA samples that fit the sequence budget."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel, QAPair
from lift_integrations.absorb import losses
from lift_integrations.absorb.batching import collate, shared_prefix_groups
from lift_integrations.absorb.losses import per_sample_loss
from lift_integrations.absorb.samples import IGNORE_INDEX, TrainingSample, qa_samples

FACTS = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. "
)


def _reference_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample mean loss the plain way: attention mask, full logits, HF-style shift."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none", ignore_index=IGNORE_INDEX
    )
    supervised = (targets != IGNORE_INDEX).float()
    return (token_loss * supervised).sum(1) / supervised.sum(1).clamp(min=1)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "gemma3"])
@pytest.mark.parametrize("chunk_rows", [4096, 7])
def test_per_sample_loss_matches_the_plain_masked_loss(
    arch: str, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(losses, "LOSS_CHUNK_ROWS", chunk_rows)
    model, tokenizer = build_tiny_model(arch)
    model.float()
    lengths = [40, 23, 31]  # right-padded to 40
    generator = torch.Generator().manual_seed(0)
    samples = []
    for n in lengths:
        ids = torch.randint(5, len(tokenizer), (n,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]
        samples.append(TrainingSample(ids, labels, "segment"))
    batch = collate(samples, tokenizer.pad_token_id, torch.device("cpu"))
    weight = next(p for n, p in model.named_parameters() if "q_proj" in n)
    weight.requires_grad_(True)

    fast = per_sample_loss(model, batch)
    (fast_grad,) = torch.autograd.grad(fast.sum(), weight)
    plain = _reference_loss(model, batch)
    (plain_grad,) = torch.autograd.grad(plain.sum(), weight)

    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-6)


def test_qa_samples_fit_the_sequence_budget_and_share_one_document_view(tiny_lift: LIFTModel) -> None:
    tokenizer = tiny_lift.tokenizer
    ids = tokenizer(FACTS * 20, add_special_tokens=False)["input_ids"]
    config = LIFTConfig(qa_context_length=400, max_seq_length=400)
    pairs = [
        QAPair("Who founded it?", "Mira Quenton"),
        QAPair("Who was the first director of the institute, and what did he study?", "Tobias Renwick"),
    ]
    samples = qa_samples(tokenizer, ids, pairs, config)
    assert len(samples) == len(pairs)  # none dropped although the view alone fills the budget
    for sample, pair in zip(samples, pairs, strict=True):
        assert 330 < len(sample.input_ids) <= config.max_seq_length
        text = tokenizer.decode(sample.input_ids)
        assert pair.question in text and "..." in text  # head and tail of the document around "..."
    # The same view for both questions, token for token, so training computes it once.
    (group,), alone = shared_prefix_groups(samples)
    assert alone == [] and group.shared > 330


def test_the_paper_preset_trains_its_qa_pairs_on_a_long_document(tiny_lift: LIFTModel) -> None:
    config = LIFTConfig.paper().fit_to_window(tiny_lift.context_window)
    ids = tiny_lift.tokenizer(FACTS * 60, add_special_tokens=False)["input_ids"]
    assert len(ids) > config.qa_context_length
    samples = qa_samples(tiny_lift.tokenizer, ids, [QAPair("Who founded it?", "Mira Quenton")], config)
    assert len(samples) == 1 and len(samples[0].input_ids) <= config.max_seq_length
