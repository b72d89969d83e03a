"""The ``lift`` command: ``absorb`` (lift-absorb's arguments, refusing to replace a memory without
--force), ``ask`` (the core's answer on stdout) and ``serve``'s argument checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from server_helpers import QUESTION, ROOT, Saved, reference_model

from lift_integrations import Memory
from lift_integrations.commands import main

OVERRIDES = {"stage1_epochs": 1, "stage2_epochs": 1, "qa_per_document": 2, "precision": "fp32"}

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    return err


def test_the_scripts_are_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["lift"] == "lift_integrations.commands:main"
    assert scripts["lift-absorb"] == "lift_integrations.cli:main"  # kept as an alias


def test_absorb_replaces_a_memory_only_with_force(saved: Saved, tmp_path: Path, capsys) -> None:
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("The Zorblat Institute was founded in 1874 by Mira Quenton.", encoding="utf-8")
    second.write_text("Its first director was Tobias Renwick.", encoding="utf-8")
    out = tmp_path / "memory"
    argv = ["absorb", "--model", str(saved.model_dir), "--output", str(out), "--quiet"]
    argv += ["--config-json", json.dumps(OVERRIDES)]
    assert main([*argv, str(first)]) == 0
    kept = Memory.load(out)
    assert [d.title for d in kept.documents] == ["first"]
    err = _fails([*argv, str(second)], capsys, "holds a memory already; pass --force to replace it")
    assert err.splitlines()[-1].startswith("lift absorb: error:")
    assert Memory.load(out).id == kept.id  # refused before any work
    assert main([*argv, "--force", str(second)]) == 0
    assert [d.title for d in Memory.load(out).documents] == ["second"]


def test_ask_prints_the_answer(saved: Saved, tmp_path: Path, capsys) -> None:
    lift = reference_model(saved)
    alpha = Memory.load(saved.memories["alpha"])
    common = ["ask", "--model", str(saved.model_dir), "--device", "cpu", "--max-new-tokens", "8"]
    assert main([*common, str(saved.memories["alpha"]), QUESTION]) == 0
    assert capsys.readouterr().out == lift.generate(QUESTION, memory=alpha, max_new_tokens=8).text + "\n"
    assert main([*common, QUESTION]) == 0  # no MEMORY: the base model
    assert capsys.readouterr().out == lift.generate(QUESTION, memory=None, max_new_tokens=8).text + "\n"
    chunk = tmp_path / "chunk.txt"
    chunk.write_text("Mira Quenton founded it in Vellhaven.", encoding="utf-8")
    assert main([*common, "--context-file", str(chunk), str(saved.memories["beta"]), QUESTION]) == 0
    beta = Memory.load(saved.memories["beta"])
    hybrid = lift.generate(QUESTION, memory=beta, context=[chunk.read_text()], max_new_tokens=8).text
    assert capsys.readouterr().out == hybrid + "\n"


def test_ask_and_serve_check_arguments_before_loading(tmp_path: Path, capsys) -> None:
    missing_model = ["--model", str(tmp_path / "no-such-model")]
    _fails(["ask", *missing_model, str(tmp_path / "nowhere"), QUESTION], capsys, "MEMORY: no memory at")
    _fails(["ask", *missing_model, "a", "b", "c"], capsys, "one argument (quote it)")
    _fails(["ask", *missing_model, "--truncated", QUESTION], capsys, "--truncated needs a MEMORY")
    _fails(["ask", *missing_model, "--max-new-tokens", "0", QUESTION], capsys, "--max-new-tokens")
    _fails(["ask", *missing_model, "--dtype", "float33", QUESTION], capsys, "--dtype: unknown dtype")
    _fails(["serve", *missing_model, "--memory", "alpha"], capsys, "--memory takes NAME=PATH")
    _fails(["serve", *missing_model, "--memory", "a=x", "--memory", "a=y"], capsys, "names 'a' twice")
    _fails(["serve", *missing_model, "--memory", f"a={tmp_path / 'none'}"], capsys, "--memory a: no memory")
    _fails(["serve", *missing_model, "--bank", str(tmp_path)], capsys, "--bank:")
    _fails(["serve", *missing_model, "--port", "70000"], capsys, "--port must be in")


def test_serve_refuses_repeated_model_ids(saved: Saved, capsys) -> None:
    argv = ["serve", "--model", str(saved.model_dir), "--memory", f"model={saved.memories['alpha']}"]
    _fails(argv, capsys, "model ids must be unique; repeated: ['model']")


def test_the_command_and_the_server_core_import_light() -> None:
    """``lift --help`` and the server's plain modules load neither torch nor FastAPI (the server extra
    is imported only by ``lift serve``)."""
    import subprocess

    from server_helpers import command_env

    code = (
        "import sys, lift_integrations.commands, lift_integrations.server.engine, "
        "lift_integrations.server.catalog; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=command_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
