"""Every example and benchmark script still runs: each shows its help, and the RAG comparison runs its
smallest case end to end on the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(  # a module whose name starts with "_" is a scripts' helper, not a script
    p for p in [*ROOT.glob("examples/*.py"), *ROOT.glob("benchmarks/*.py")] if not p.name.startswith("_")
)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_the_scripts_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"compare_rag.py", "langchain_chain.py", "fuzz_memory.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_shows_its_help(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


@pytest.mark.slow
def test_the_comparison_runs_its_smallest_case(tmp_path: Path) -> None:
    """One paragraph, two questions, a RAG arm and a memory arm: the whole harness path of `make demo`."""
    command = [
        sys.executable,
        "examples/compare_rag.py",
        "--quick",
        "--paragraphs", "1",
        "--questions", "2",
        "--arms", "closed_book,rag_langchain,lift_only",
        "--general", "0",
        "--settings", "single",
        "--config", '{"stage1_epochs": 1, "stage2_epochs": 1, "qa_per_document": 2}',
        "--no-plots",
        "--threads", "1",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (tmp_path / "run" / "report.md").is_file()
    text = json.dumps(report)
    for arm in ("closed_book", "rag_langchain", "lift_only"):
        assert arm in text
