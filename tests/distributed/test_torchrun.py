"""Two gloo processes launched by torchrun give the memories a single process gives.

``--mode shard``: one document, each step's samples split over the two processes and the gradients
summed; ``--mode each``: three documents dealt out to two processes by length, one memory each. Every
memory is compared, tensor by tensor, with a single-process absorption of the same document and config. A run
with one sample per step leaves one process idle in every step, and a run resumes a checkpoint. All CLI
runs share one torchrun launch (``cli_runs.py``): starting the processes is most of the time.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import COUNTED, counting
from distributed_helpers import (
    LONG_DOCUMENT,
    NORMANS,
    OVERRIDES,
    SHORT_DOCUMENTS,
    assert_same_memory,
    plan_digest,
    plan_of,
    reference_memory,
    save_tiny_model,
)
from tiny_models import Interrupt, stop_at

from lift_integrations import LIFTConfig, LIFTModel, Memory
from lift_integrations.absorb.segmentation import STREAM_CHUNK_CHARS
from lift_integrations.distributed import deal_by_length

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun is tested on POSIX only")

HERE = Path(__file__).resolve().parent
# QA pairs with a view of the document (most sharing one view, the longest with shorter ones of their own)
# and with passages: every step of building QA samples that the ranks split.
PLAN_OVERRIDES = {
    "qa_per_document": 30,
    "qa_context_length": 300,
    "max_seq_length": 600,
    "qa_passage_fraction": 0.4,
    "qa_passages": 2,
}


def plan_documents(root: Path) -> Path:
    """Two documents for the plan-only run: the long test document, and the Normans article repeated
    past the tokenizer's piece length (so that the ranks tokenize different pieces of it)."""
    repeats = STREAM_CHUNK_CHARS // len(NORMANS) + 2
    path = root / "plan-documents.json"
    path.write_text(json.dumps([["zorblat", LONG_DOCUMENT], ["normans", "\n\n".join([NORMANS] * repeats)]]))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def launched(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """One ``torchrun --nproc_per_node 2`` on gloo running the CLI four times (shard, each, one sample per
    step, resume from a checkpoint); the output folder and the JSON lines the processes printed."""
    root = tmp_path_factory.mktemp("torchrun")
    (root / "zorblat.txt").write_text(LONG_DOCUMENT, encoding="utf-8")
    for name, text in SHORT_DOCUMENTS.items():
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    common = ["--model", str(model_dir), "--preset", "fast", "--config-json", json.dumps(OVERRIDES)]
    # A single-process absorption interrupted after step 3 leaves a checkpoint; the two processes resume it.
    with_checkpoints = {**OVERRIDES, "checkpoint_dir": str(root / "checkpoints"), "checkpoint_every": 3}
    with pytest.raises(Interrupt):
        LIFTModel.from_pretrained(model_dir, device="cpu").absorb(
            ("zorblat", LONG_DOCUMENT),
            config=LIFTConfig.fast(**with_checkpoints),
            callback=stop_at(3),
            distributed=False,
        )
    runs = [
        [*common, "--output", str(root / "memory"), "--mode", "shard", str(root / "zorblat.txt")],
        [*common, "--output", str(root / "memories"), "--mode", "each"]
        + [str(root / f"{name}.txt") for name in SHORT_DOCUMENTS],
        [  # one sample per step: rank 1 has nothing to train on and contributes zero gradients
            *common[:-1],
            json.dumps({**OVERRIDES, "batch_size": 1}),
            "--output",
            str(root / "one-sample-steps"),
            str(root / "alpha.txt"),
        ],
        [
            *common[:-1],
            json.dumps(with_checkpoints),
            "--output",
            str(root / "resumed"),
            str(root / "zorblat.txt"),
        ],
        {"fail_rank": 1, "argv": [*common, "--output", str(root / "failed"), str(root / "zorblat.txt")]},
        {"rank_dependent_qa": [*common, "--output", str(root / "rank-qa"), str(root / "zorblat.txt")]},
        {
            "plan": {
                "model": str(model_dir),
                "documents": str(plan_documents(root)),
                "overrides": PLAN_OVERRIDES,
            }
        },
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port on localhost
        "--nproc_per_node",
        "2",
        str(HERE / "cli_runs.py"),
        json.dumps(runs),
    ]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_two_processes_shard_one_document_into_the_single_process_memory(
    launched: tuple[Path, list[dict]], model_dir: Path
) -> None:
    root, lines = launched
    summaries = [line for line in lines if "processes" in line]
    assert len(summaries) == 4 and {s["processes"] for s in summaries} == {2}  # rank 0 alone reports
    saved = Memory.load(root / "memory")
    assert saved.stats["processes"] == 2
    assert saved.stats["steps"] == 7 and saved.stats["segment_samples"] == 10
    assert_same_memory(saved, reference_memory(model_dir, "zorblat", LONG_DOCUMENT))


def test_two_processes_absorb_three_documents_one_memory_each(
    launched: tuple[Path, list[dict]], model_dir: Path
) -> None:
    root, lines = launched
    written = sorted((line["rank"], Path(line["memory"]).name) for line in lines if "rank" in line)
    # Dealt by length (characters, titles included): gamma (91) alone, alpha (88) and beta (83) together;
    # round robin would have given rank 0 alpha and gamma.
    sizes = [len(name) + len(text) for name, text in SHORT_DOCUMENTS.items()]
    assert sizes == [88, 83, 91] and deal_by_length(sizes, 2) == [[2], [0, 1]]
    assert written == [(0, "gamma"), (1, "alpha"), (1, "beta")]
    saved = sorted(p.name for p in (root / "memories").iterdir() if not p.name.endswith(".lock"))
    assert saved == ["alpha", "beta", "gamma"]
    for name, text in SHORT_DOCUMENTS.items():
        saved = Memory.load(root / "memories" / name)
        assert "processes" not in saved.stats
        assert_same_memory(saved, reference_memory(model_dir, name, text))


def test_steps_with_fewer_samples_than_processes(launched: tuple[Path, list[dict]], model_dir: Path) -> None:
    root, _ = launched
    saved = Memory.load(root / "one-sample-steps")
    assert saved.stats["processes"] == 2 and saved.config.batch_size == 1
    config = LIFTConfig.fast(**{**OVERRIDES, "batch_size": 1})
    assert_same_memory(saved, reference_memory(model_dir, "alpha", SHORT_DOCUMENTS["alpha"], config))


def test_two_processes_resume_a_checkpoint_to_the_uninterrupted_memory(
    launched: tuple[Path, list[dict]], model_dir: Path
) -> None:
    root, _ = launched
    saved = Memory.load(root / "resumed")
    assert saved.stats["processes"] == 2 and saved.stats["resumed_from_step"] == 3
    assert_same_memory(saved, reference_memory(model_dir, "zorblat", LONG_DOCUMENT))
    assert [p for p in (root / "checkpoints").rglob("*") if p.is_file()] == []  # rank 0 cleared them


def test_qa_pairs_come_from_rank_0(launched: tuple[Path, list[dict]], model_dir: Path) -> None:
    root, _ = launched
    saved = Memory.load(root / "rank-qa")
    assert saved.stats["processes"] == 2
    assert_same_memory(saved, reference_memory(model_dir, "zorblat", LONG_DOCUMENT))


def test_two_processes_build_the_single_process_plan_each_doing_part(
    launched: tuple[Path, list[dict]], model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process extracts the questions of part of the sentences, tokenizes part of the long document's
    pieces and part of the QA prompts; both end with the plan one process builds, sample for sample."""
    from transformers import AutoTokenizer

    root, lines = launched
    ranks = sorted((line for line in lines if "plan_rank" in line), key=lambda line: line["plan_rank"])
    assert [line["plan_rank"] for line in ranks] == [0, 1]
    documents = json.loads((root / "plan-documents.json").read_text())
    assert len(documents[1][1]) > STREAM_CHUNK_CHARS
    alone_calls = dict.fromkeys(COUNTED, 0)
    for key, (module_name, name) in COUNTED.items():
        module = importlib.import_module(module_name)
        monkeypatch.setattr(module, name, counting(alone_calls, key, getattr(module, name)))
    alone = plan_of(AutoTokenizer.from_pretrained(model_dir), documents, PLAN_OVERRIDES)
    assert alone.sample_counts()["qa_samples"] > 30
    assert [line["digest"] for line in ranks] == [plan_digest(alone)] * 2
    for key, alone_made in alone_calls.items():
        made = [line["counts"][key] for line in ranks]
        assert all(0 < calls < alone_made for calls in made), (key, made, alone_made)
        both = 1 if key == "pieces" else 0  # the short document is one piece: both processes tokenize it
        assert sum(made) == alone_made + both, (key, made, alone_made)


def test_a_failure_on_one_process_stops_every_process(launched: tuple[Path, list[dict]]) -> None:
    root, lines = launched
    failures = sorted((line["failed_rank"], line["error"]) for line in lines if "failed_rank" in line)
    assert [rank for rank, _ in failures] == [0, 1]  # both raised; neither waits in the all-reduce
    assert re.fullmatch(r"another process failed at step \d+; see its error", failures[0][1])
    assert failures[1][1] == "injected failure"
    assert not (root / "failed").exists()
