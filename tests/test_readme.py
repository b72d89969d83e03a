"""Every ```python block of README.md runs as written, top to bottom, as a reader would run them.

The blocks build on each other (``lift``, ``memory``, ``quillon`` come from the first), so they run in
order in one namespace, from a scratch folder where ``examples/`` is the repository's (the files the
README opens) and where ``memories/`` and ``storage/`` are written. Only speed knobs are turned, by
fixtures: the training schedule (:func:`short_presets`: the presets' sample shapes, with one epoch per
stage and a few QA pairs) and the answers' length (:func:`short_answers`: at most
:data:`ANSWER_TOKENS` new tokens); the code the test runs is the README's text, unchanged. A block that
cannot run here (one that needs the network, such as ``push_to_hub``) opts out with a first line that
says why::

    # not run by tests/test_readme.py: needs the network (push_to_hub)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPT_OUT = "# not run by tests/test_readme.py:"


def python_blocks() -> list[CodeExample]:
    return [example for example in find_examples(str(README)) if example.prefix.startswith("py")]


def opt_out_reason(example: CodeExample) -> str | None:
    """The reason a block gives for not running (``None``: it runs)."""
    first = example.source.lstrip().splitlines()[0] if example.source.strip() else ""
    return first[len(OPT_OUT) :].strip() if first.startswith(OPT_OUT) else None


def test_the_readme_has_python_blocks_and_every_opt_out_gives_a_reason() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 4, "README.md lost its python examples (or find_examples stopped seeing them)"
    for example in blocks:
        reason = opt_out_reason(example)
        assert reason is None or len(reason) >= 10, f"{example}: an opt-out must say why the block cannot run"


@pytest.fixture
def short_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LIFTConfig.fast()`` (and so ``for_device`` and ``dense_qa``) with one epoch per stage and four QA
    pairs: the README's absorptions then take seconds, not minutes, on a CPU."""
    from lift_integrations import LIFTConfig

    original = LIFTConfig.fast.__func__  # type: ignore[attr-defined]

    def fast(cls: type[LIFTConfig], **overrides: Any) -> LIFTConfig:
        short = {"stage1_epochs": 1, "stage2_epochs": 1, "qa_per_document": 4, "qa_per_1k_tokens": 0.0}
        return original(cls, **{**overrides, **short})

    monkeypatch.setattr(LIFTConfig, "fast", classmethod(fast))


ANSWER_TOKENS = 12


@pytest.fixture
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generation (the core's, and so the bindings') stops after :data:`ANSWER_TOKENS` tokens,
    except one under a grammar (a tool call, a JSON answer), which must be able to finish to parse."""
    from lift_integrations import LIFTModel

    for name in ("generate", "generate_batch", "stream"):
        original = getattr(LIFTModel, name)

        def capped(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if kwargs.get("grammar") is None and not any(kwargs.get("grammars") or ()):
                kwargs["max_new_tokens"] = min(kwargs.get("max_new_tokens") or ANSWER_TOKENS, ANSWER_TOKENS)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(LIFTModel, name, capped)


@pytest.mark.slow
def test_every_readme_python_block_runs(
    eval_example: EvalExample,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    short_presets: None,
    short_answers: None,
) -> None:
    work = tmp_path / "reader"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("LIFT_PROGRESS", "0")
    namespace: dict[str, Any] = {}
    ran = 0
    for example in python_blocks():
        if opt_out_reason(example) is not None:
            continue
        result = eval_example.run(example, module_globals=namespace)
        namespace = {name: value for name, value in result.items() if not name.startswith("__")}
        ran += 1
    assert ran >= 4
    assert (work / "memories" / "quillon").is_dir()  # the first block's save really ran
    assert (work / "storage" / "kb").is_dir()  # and so did the last LlamaIndex block's persist
