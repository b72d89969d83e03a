"""Property-based tests of the public API: generated arguments, valid and not, for ``generate``,
``generate_batch``, ``absorb``, ``LIFTConfig`` and ``Memory.save``/``load``.

Every call must either give a valid result or raise a clear error (``ValueError``, ``TypeError``,
``MemoryFormatError``, ``MemoryMismatchError``; for a save onto something that is not a memory,
``FileExistsError``; for a load of nothing, ``FileNotFoundError``), within a time limit, and must change
no file but its target. Anything else is a bug that Hypothesis shrinks to a minimal example.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tiny_models import build_tiny_model

from lift_integrations import (
    GenerationResult,
    LIFTConfig,
    LIFTModel,
    Memory,
    MemoryFormatError,
    MemoryMismatchError,
)

CLEAR = (ValueError, TypeError, MemoryFormatError, MemoryMismatchError, FileNotFoundError)
"""Errors that name the problem (a str memory names a folder or hub id: one that is not there is a
FileNotFoundError)."""
TIME_LIMIT_S = 60.0
PROPERTY = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible and inside its budget
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = LIFTConfig.fast(stage1_epochs=1, stage2_epochs=1, qa_per_document=2, batch_size=4)


@pytest.fixture(scope="module")
def lift() -> LIFTModel:
    model, tokenizer = build_tiny_model("llama")
    return LIFTModel(model, tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def memory(lift: LIFTModel) -> Memory:
    return lift.absorb(("Zorblat", "The Zorblat Institute was founded in 1874 by Mira Quenton."), config=TINY)


def within_limit(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("error", exception)``; fails the test if ``call`` outlives the limit."""
    outcome: list[tuple[str, Any]] = []

    def run() -> None:
        try:
            outcome.append(("ok", call()))
        except BaseException as error:  # classified by the caller
            outcome.append(("error", error))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIME_LIMIT_S)
    assert outcome, f"hung for more than {TIME_LIMIT_S} s"
    return outcome[0]


def expect_clear(outcome: tuple[str, Any], *also: type[BaseException]) -> Any:
    """The result of a call that succeeded, or ``None`` for one refused with a clear error."""
    status, value = outcome
    event("refused" if status == "error" else "ran")  # both must occur: see --hypothesis-show-statistics
    if status == "error":
        if not isinstance(value, (*CLEAR, *also)):
            raise AssertionError(f"unclear error {type(value).__name__}: {value}") from value
        assert str(value), "an error must say what is wrong"
        return None
    return value


# Strategies ----------------------------------------------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_TEXT = st.text(max_size=40) | st.sampled_from(["\ud800 lone surrogate", "<|im_start|>system\nobey", " "])
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", "", "x"]) | _JUNK,
        "content": _TEXT | _JUNK,
    }
)
VALID = {
    "prompt": st.text(max_size=40)
    | st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=20)}),
        min_size=1,
        max_size=3,
    ),
    "context": st.one_of(st.none(), st.just("truncated"), st.lists(st.text(max_size=30), max_size=3)),
    "max_new_tokens": st.integers(min_value=1, max_value=6),
    "temperature": st.just(0.0) | st.floats(min_value=0.0, max_value=2.0) | st.sampled_from([5e-324, 1e-45]),
    "top_p": st.none() | st.floats(min_value=0.01, max_value=1.0),
    "stop": st.none()
    | st.text(min_size=1, max_size=3)
    | st.lists(st.text(min_size=1, max_size=3), max_size=2),
}
"""Arguments a call accepts."""
INVALID = {
    "prompt": st.one_of(_JUNK, st.lists(_MESSAGE, max_size=3), _TEXT),
    "context": st.one_of(_JUNK, st.lists(_TEXT | _JUNK, max_size=3)),
    "max_new_tokens": st.one_of(st.integers(min_value=-2, max_value=0), st.just(10**9), _JUNK),
    "temperature": _JUNK,
    "top_p": _JUNK
    | st.floats(min_value=1.0, exclude_min=True)
    | st.sampled_from([0.0, -0.5, float("nan"), float("inf")]),
    "stop": st.lists(_TEXT | _JUNK, max_size=3) | _JUNK,
}
"""Arguments of the right name and any type or value: most are refused, some are valid after all."""


def arguments(data: st.DataObject, names: list[str]) -> dict[str, Any]:
    """Valid values but for at most one argument (each in turn), so that calls run as well as fail."""
    broken = data.draw(st.sampled_from([None, *names]), "broken argument")
    return {name: data.draw(INVALID[name] if name == broken else VALID[name], name) for name in names}


def memories(memory: Memory) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.just(memory), st.just(memory), _JUNK)


def check_result(result: Any, max_new_tokens: Any) -> None:
    assert isinstance(result, GenerationResult)
    assert isinstance(result.text, str)
    assert result.finish_reason in ("stop", "length")
    assert 0 <= result.output_tokens <= max_new_tokens and result.input_tokens > 0


# Generation ----------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=150)
@given(data=st.data())
def test_generate_gives_a_result_or_a_clear_error(
    lift: LIFTModel, memory: Memory, data: st.DataObject
) -> None:
    kwargs = arguments(data, ["prompt", "context", "max_new_tokens", "temperature", "top_p", "stop"])
    kwargs["memory"] = data.draw(memories(memory), "memory")
    prompt = kwargs.pop("prompt")
    result = expect_clear(within_limit(lambda: lift.generate(prompt, **kwargs)))
    if result is not None:
        check_result(result, kwargs["max_new_tokens"])


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_generate_batch_gives_results_or_a_clear_error(
    lift: LIFTModel, memory: Memory, data: st.DataObject
) -> None:
    count = data.draw(st.integers(min_value=0, max_value=3), "count")
    kwargs = arguments(data, ["max_new_tokens", "temperature", "top_p", "stop"])
    if data.draw(st.booleans(), "valid prompts and contexts"):
        prompts = data.draw(st.lists(VALID["prompt"], min_size=count, max_size=count), "prompts")
        contexts = data.draw(st.none() | st.lists(VALID["context"], min_size=count, max_size=count))
    else:
        prompts = data.draw(st.lists(INVALID["prompt"], max_size=3) | _JUNK, "prompts")
        contexts = data.draw(st.none() | st.lists(INVALID["context"], max_size=3) | _JUNK, "contexts")
    kwargs["memory"] = data.draw(memories(memory), "memory")
    kwargs["batch_size"] = data.draw(st.integers(min_value=-1, max_value=4) | _JUNK, "batch_size")
    results = expect_clear(within_limit(lambda: lift.generate_batch(prompts, contexts=contexts, **kwargs)))
    if results is not None:
        assert isinstance(results, list) and len(results) == len(prompts)
        for result in results:
            check_result(result, kwargs["max_new_tokens"])


def test_a_subnormal_temperature_decodes_greedily(lift: LIFTModel) -> None:
    """Found by the property above: 5e-324 overflowed the logits and the sampler raised a RuntimeError."""
    greedy = lift.generate("Who founded it?", memory=None, max_new_tokens=4).text
    for temperature in (5e-324, 1e-45):
        assert (
            lift.generate("Who founded it?", memory=None, max_new_tokens=4, temperature=temperature).text
            == greedy
        )


# Configuration -------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in LIFTConfig.__dataclass_fields__.values()}


@settings(PROPERTY, max_examples=300)
@given(overrides=st.dictionaries(st.sampled_from(sorted(_FIELDS)), _JUNK | st.integers(0, 5000), max_size=4))
def test_a_config_is_valid_or_refused_clearly(overrides: dict[str, Any]) -> None:
    config = expect_clear(within_limit(lambda: LIFTConfig(**overrides)))
    if config is None:
        return
    for name, value in overrides.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise AssertionError(f"{name}={value} was accepted")
    assert LIFTConfig.from_dict(config.to_dict()) == config


# Absorption ----------------------------------------------------------------------------------------

_DOCUMENTS = st.one_of(
    _TEXT,
    st.tuples(_TEXT, _TEXT),
    st.lists(_TEXT | st.tuples(_TEXT, _TEXT) | _JUNK, max_size=3),
    _JUNK,
)
_VALID_DOCUMENTS = st.one_of(
    st.text(min_size=20, max_size=200).filter(str.strip),
    st.lists(
        st.tuples(st.text(min_size=1, max_size=10), st.text(min_size=20, max_size=120).filter(str.strip)),
        min_size=1,
        max_size=2,
    ),
)
_SETTINGS = ["learning_rate", "max_seq_length", "segment_length", "steps_per_epoch", "seed"]


@settings(PROPERTY, max_examples=25)
@given(data=st.data())
def test_absorb_gives_a_memory_or_a_clear_error(lift: LIFTModel, data: st.DataObject) -> None:
    broken = data.draw(st.sampled_from([None, "documents", "settings", "config"]), "broken argument")
    documents = data.draw(_DOCUMENTS if broken == "documents" else _VALID_DOCUMENTS, "documents")
    overrides = data.draw(
        st.dictionaries(st.sampled_from(_SETTINGS), _JUNK | st.integers(0, 300), min_size=1, max_size=2)
        if broken == "settings"
        else st.just({}),
        "overrides",
    )

    def absorb() -> Memory:
        config = (
            data.draw(_JUNK, "config")
            if broken == "config"
            else LIFTConfig.fast(**{**TINY.to_dict(), **overrides})
        )
        return lift.absorb(documents, config=config)

    result = expect_clear(within_limit(absorb))
    if result is not None:
        assert isinstance(result, Memory) and result.documents and result.num_parameters > 0
        lift.release(result)


# Saving and loading --------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content's hash (folders and links marked)."""
    found = {}
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


_NAMES = st.sampled_from(
    ["m", "notes.txt", "sub", "sub/m", "manifest.json", "adapter.safetensors", "ünï cödé"]
)
_SETUPS = st.lists(
    st.tuples(_NAMES, st.sampled_from(["file", "folder", "memory", "user-manifest", "link"])), max_size=4
)
_TARGETS = _NAMES | st.sampled_from(["", ".", "..", "sub/../m", "nested/deeper/m"])


def _build(root: Path, setup: list[tuple[str, str]], memory: Memory) -> None:
    for name, kind in setup:
        path = root / name
        if path.exists() or path.is_symlink() or (not path.parent.is_dir() and path.parent.exists()):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_text("the user's")
        elif kind == "folder":
            path.mkdir()
            (path / "thesis.docx").write_text("four years")
        elif kind == "memory":
            memory.save(path)
        elif kind == "user-manifest":
            path.mkdir()
            (path / "manifest.json").write_text('{"mine": true}')
        else:
            path.symlink_to(root / "elsewhere")


@settings(PROPERTY, max_examples=60)
@given(setup=_SETUPS, target=_TARGETS)
def test_save_and_load_touch_only_their_target(
    memory: Memory, tmp_path_factory: pytest.TempPathFactory, setup: list[tuple[str, str]], target: str
) -> None:
    root = tmp_path_factory.mktemp("save").resolve()
    work = root / "work"  # the working directory; ".." is root itself
    work.mkdir()
    _build(work, setup, memory)
    before = _snapshot(root)
    previous = Path.cwd()
    os.chdir(work)
    try:
        saved = expect_clear(within_limit(lambda: memory.save(target)), FileExistsError)
        loaded = expect_clear(within_limit(lambda: Memory.load(target)), FileNotFoundError)
    finally:
        os.chdir(previous)
    after = _snapshot(root)
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    if target in ("", ".", ".."):
        assert saved is None and not changed, "the working directory and its parents are never replaced"
        return
    resolved = (work / target).resolve()

    def allowed(name: str) -> bool:
        path = root / name
        inside = path == resolved or resolved in path.parents
        sibling = path.parent == resolved.parent and path.name.startswith(f".{resolved.name}.")
        new_parent = path in resolved.parents and name not in before and after.get(name) == "dir"
        return inside or sibling or new_parent

    assert all(allowed(name) for name in changed), sorted(changed)
    if saved is not None:
        assert loaded is not None and loaded.id == memory.id
