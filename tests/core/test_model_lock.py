"""The model's lock counts its waiters, so an absorption pauses between steps only when a request waits;
and a step's training mode leaves the model's flags as they were."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
from tiny_models import build_tiny_model

from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb import target
from lift_integrations.absorb.fused import training_mode
from lift_integrations.locking import ModelLock


def test_the_lock_counts_the_threads_waiting_for_it() -> None:
    lock = ModelLock()
    with lock:
        with lock:  # reentrant
            assert lock.waiting == 0
        started = threading.Event()

        def wait() -> None:
            started.set()
            with lock:
                pass

        waiter = threading.Thread(target=wait)
        waiter.start()
        started.wait()
        deadline = time.monotonic() + 5
        while lock.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lock.waiting == 1
        assert not _acquired_elsewhere(lock, blocking=False)
        assert not _acquired_elsewhere(lock, timeout=0.01)
    waiter.join(timeout=5)
    assert lock.waiting == 0 and _acquired_elsewhere(lock, blocking=False)


def _acquired_elsewhere(lock: ModelLock, **options: Any) -> bool:
    result: list[bool] = []

    def take() -> None:
        got = lock.acquire(**options)
        if got:
            lock.release()
        result.append(got)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(timeout=5)
    return result[0]


@pytest.mark.parametrize("waiting", [0, 1])
def test_an_absorption_pauses_between_steps_only_when_a_request_waits(
    waiting: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    pauses: list[float] = []
    monkeypatch.setattr(target.time, "sleep", pauses.append)
    monkeypatch.setattr(ModelLock, "waiting", property(lambda self: waiting))
    config = LIFTConfig.fast(segment_length=32, segment_stride=24, qa_per_document=2, stage2_epochs=3)
    memory = lift.absorb("Tobias Renwick studied glass harps and river tides. " * 3, config=config)
    assert memory.stats["steps"] > 2
    assert len(pauses) == (memory.stats["steps"] if waiting else 0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_steps_training_mode_restores_each_modules_flag(checkpointing: bool) -> None:
    model, _ = build_tiny_model("llama")
    model.eval()
    odd = model.model.layers[1].mlp
    odd.train()  # a module left in another mode than the rest keeps it
    before = {name: module.training for name, module in model.named_modules()}
    with training_mode(model, checkpointing):
        assert all(module.training == checkpointing for module in model.modules())
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert {name: module.training for name, module in model.named_modules()} == before
