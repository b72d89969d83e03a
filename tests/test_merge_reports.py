"""benchmarks/merge_reports.py: pooling per-article compare_rag reports into one, on hand-built reports.

No model runs: the reports are built by hand with the fields ``summarize`` and ``markdown_report`` read,
two arms (``lift_only`` and its control) and known per-question scores, so the pooled numbers can be
checked against plain means over all rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from merge_reports import IncompatibleReports, load_report, main, merge_arms, merge_reports, merge_seeds

KV_PER_TOKEN = 46080


def _row(index: int, f1: float) -> dict[str, Any]:
    return {
        "question": f"question {index}?",
        "gold": f"gold {index}",
        "answer": f"answer {index}",
        "em": float(f1 == 1.0),
        "f1": f1,
        "contains": float(f1 > 0.5),
        "gold_in_context": None,
        "prompt_tokens": 30 + index,
        "ttft_s": 0.1,
        "total_s": 0.4,
    }


def _case(document: str, lift_f1: list[float], control_f1: list[float], tokens: int = 800) -> dict[str, Any]:
    return {
        "setting": "single",
        "document": document,
        "sources": [document],
        "document_tokens": tokens,
        "fits_window": True,
        "kv_cache_bytes_document": tokens * KV_PER_TOKEN,
        "control": f"control of {document}",
        "control_tokens": tokens,
        "rag": {"chunk_size": 256, "chunk_overlap": 32, "k": 4, "tuned": False},
        "absorption": {
            "document": {"wall_s": 10.0, "tokens_per_s": 500.0, "disk_bytes": 4096, "tensor_bytes": 4000}
        },
        "prepare_s": {},
        "questions": {
            "lift_only": [_row(i, f) for i, f in enumerate(lift_f1)],
            "control": [_row(i, f) for i, f in enumerate(control_f1)],
        },
        "memory_seeds": None,
        "general": None,
    }


def _meta(**overrides: Any) -> dict[str, Any]:
    meta = {
        "model": "fake-model",
        "device": "cpu",
        "dtype": "float32",
        "context_window": 2048,
        "kv_cache_bytes_per_token": KV_PER_TOKEN,
        "absorb_config": {"learning_rate": 0.001, "seed": 0},
        "arms": ["lift_only", "control"],
        "arm_descriptions": {"lift_only": "memory only", "control": "unrelated memory"},
        "max_new_tokens": 32,
        "seed": 0,
        "memory_seeds": 1,
        "bootstrap_resamples": 200,
        "wall_s": 100.0,
        "command": "examples/compare_rag.py --articles A",
    }
    return {**meta, **overrides}


def _save(folder: Path, meta: dict[str, Any], cases: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "cases": cases, "summary": {}}  # the summary is recomputed, never read
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return folder


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    first = _save(tmp_path / "a", _meta(), [_case("Alpha", [1.0, 0.5, 0.0], [0.0, 0.5, 0.0])])
    second = _save(
        tmp_path / "b",
        _meta(wall_s=50.0, command="examples/compare_rag.py --articles B"),
        [_case("Beta", [1.0, 1.0, 0.25, 0.75], [0.0, 0.25, 0.25, 0.0], tokens=1200)],
    )
    return [first, second]


def test_merge_pools_every_question(two_runs: list[Path]) -> None:
    loaded = [load_report(run) for run in two_runs]
    merged = merge_reports(loaded)
    summary = merged["summary"]["single"]
    assert summary["documents"] == 2
    assert summary["questions"] == 3 + 4
    rows = [row for _, report in loaded for case in report["cases"] for row in case["questions"]["lift_only"]]
    controls = [r for _, report in loaded for case in report["cases"] for r in case["questions"]["control"]]
    arms = summary["arms"]
    assert arms["lift_only"]["n"] == arms["control"]["n"] == 7
    assert arms["lift_only"]["f1"]["mean"] == pytest.approx(np.mean([r["f1"] for r in rows]))
    gain = summary["gains"]["lift_only"]
    assert gain["control"] == "control"
    expected = np.mean([a["f1"] - b["f1"] for a, b in zip(rows, controls, strict=True)])
    assert gain["f1"]["mean"] == pytest.approx(expected)
    assert gain["f1"]["low"] <= gain["f1"]["mean"] <= gain["f1"]["high"]
    assert summary["document_tokens_mean"] == pytest.approx(1000.0)
    assert summary["absorb_wall_s_mean"] == pytest.approx(10.0)

    meta = merged["meta"]
    assert meta["merged_from"] == [str(run / "report.json") for run in two_runs]
    assert meta["commands"] == [
        "examples/compare_rag.py --articles A",
        "examples/compare_rag.py --articles B",
    ]
    assert meta["wall_s"] == pytest.approx(150.0)
    assert meta["bootstrap_resamples"] == 200
    assert [c["document"] for c in merged["cases"]] == ["Alpha", "Beta"]
    assert merge_reports(loaded, bootstrap=50)["meta"]["bootstrap_resamples"] == 50


def test_cli_writes_and_prints(
    two_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"
    main([str(two_runs[0]), str(two_runs[1] / "report.json"), "--out", str(out), "--bootstrap", "100"])
    written = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert written["summary"]["single"]["questions"] == 7
    assert written["meta"]["bootstrap_resamples"] == 100
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "2 document(s), 7 questions" in markdown
    assert markdown in capsys.readouterr().out


def test_mismatched_recipe_is_refused(two_runs: list[Path], tmp_path: Path) -> None:
    other = _save(
        tmp_path / "c",
        _meta(absorb_config={"learning_rate": 0.01, "seed": 0}),
        [_case("Gamma", [1.0], [0.0])],
    )
    with pytest.raises(IncompatibleReports, match="absorb_config"):
        merge_reports([load_report(two_runs[0]), load_report(other)])
    with pytest.raises(SystemExit, match=r"absorb_config.*a/report\.json.*c/report\.json"):
        main([str(two_runs[0]), str(other), "--out", str(tmp_path / "merged")])
    assert not (tmp_path / "merged").exists()


def test_missing_memory_seeds_counts_as_one(two_runs: list[Path], tmp_path: Path) -> None:
    meta = _meta()
    del meta["memory_seeds"]  # reports written before the key existed
    old = _save(tmp_path / "old", meta, [_case("Gamma", [1.0], [0.0])])
    merged = merge_reports([load_report(two_runs[0]), load_report(old)])
    assert merged["summary"]["single"]["questions"] == 4


def test_recipe_fields_added_later_count_as_their_defaults(tmp_path: Path) -> None:
    """A report written before a ``LIFTConfig`` field existed ran with that field's default: it pools
    with a newer report whose recipe names the default, and not with one that changed it."""
    from lift_integrations import LIFTConfig

    recipe = LIFTConfig(learning_rate=0.001, seed=0).to_dict()
    older = {k: v for k, v in recipe.items() if k != "qa_per_1k_tokens"}
    old = _save(tmp_path / "old", _meta(absorb_config=older), [_case("Alpha", [1.0], [0.0])])
    new = _save(tmp_path / "new", _meta(absorb_config=recipe), [_case("Beta", [0.5], [0.0])])
    assert merge_reports([load_report(old), load_report(new)])["summary"]["single"]["questions"] == 2
    dense = _save(
        tmp_path / "dense",
        _meta(absorb_config={**recipe, "qa_per_1k_tokens": 60.0}),
        [_case("Beta", [0.5], [0.0])],
    )
    with pytest.raises(IncompatibleReports, match="absorb_config"):
        merge_reports([load_report(old), load_report(dense)])


def test_duplicate_document_is_refused(two_runs: list[Path], tmp_path: Path) -> None:
    again = _save(tmp_path / "again", _meta(), [_case("Alpha", [0.5], [0.5])])
    with pytest.raises(IncompatibleReports, match="'Alpha' appears twice in setting 'single'"):
        merge_reports([load_report(two_runs[0]), load_report(two_runs[1]), load_report(again)])
    with pytest.raises(SystemExit, match="Alpha"):
        main([str(two_runs[0]), str(again), "--out", str(tmp_path / "merged")])


def test_out_must_not_overwrite_an_input(two_runs: list[Path]) -> None:
    with pytest.raises(SystemExit, match="overwrite"):
        main([str(two_runs[0]), str(two_runs[1]), "--out", str(two_runs[1])])


def test_seeds_average_the_memory_arms_per_question(tmp_path: Path) -> None:
    """``--seeds``: the same case under two absorption seeds becomes one case whose memory arms score
    each question by the mean over the seeds, as ``--memory-seeds 2`` would; a closed-book arm, which no
    seed changes, keeps the first run's rows; runs that differ in more than the seed are refused."""
    arms = ["closed_book", "lift_only", "control"]

    def run(folder: str, seed: int, lift: list[float], control: list[float]) -> Path:
        case = _case("Alpha", lift, control)
        case["questions"]["closed_book"] = [_row(i, 0.0) for i in range(len(lift))]
        meta = _meta(arms=arms, absorb_config={"learning_rate": 0.001, "seed": seed})
        return _save(tmp_path / folder, meta, [case])

    first = run("s0", 0, [1.0, 0.0, 0.5], [0.0, 0.0, 0.5])
    second = run("s1", 1, [0.0, 0.0, 1.0], [0.5, 0.0, 0.0])
    merged = merge_seeds([load_report(first), load_report(second)])
    case = merged["cases"][0]
    assert [r["f1"] for r in case["questions"]["lift_only"]] == pytest.approx([0.5, 0.0, 0.75])
    assert [r["f1"] for r in case["questions"]["control"]] == pytest.approx([0.25, 0.0, 0.25])
    assert "answers" not in case["questions"]["closed_book"][0]
    assert case["memory_seeds"] == {
        "lift_only": pytest.approx([0.5, 1 / 3]),
        "control": pytest.approx([1 / 6, 1 / 6]),
    }
    assert set(case["absorption"]) == {"document", "document@seed1"}
    assert merged["meta"]["memory_seeds"] == 2
    gain = merged["summary"]["single"]["gains"]["lift_only"]["f1"]["mean"]
    assert gain == pytest.approx((0.25 + 0.0 + 0.5) / 3)
    with pytest.raises(IncompatibleReports, match="seed"):
        merge_seeds([load_report(first), load_report(first)])
    other = _save(tmp_path / "lr", _meta(arms=arms, absorb_config={"learning_rate": 0.01, "seed": 1}), [])
    with pytest.raises(IncompatibleReports, match="absorb_config"):
        merge_seeds([load_report(first), load_report(other)])


def test_arms_join_reports_that_ran_different_arms(tmp_path: Path) -> None:
    """``--arms``: the document's arms from one run and the control's from another become one case with
    both, whose gain over the control is recomputed from the joined rows; the probe and absorptions of
    both runs are kept; an arm in two reports, or runs of different questions, are refused."""

    def run(folder: str, arm: str, f1: list[float], probe: dict[str, Any] | None) -> Path:
        case = _case("Alpha", f1, f1)
        case["questions"] = {arm: [_row(i, f) for i, f in enumerate(f1)]}
        key = "document" if arm == "lift_only" else "control"
        case["absorption"] = {key: case["absorption"]["document"]}
        case["general"] = probe
        meta = _meta(arms=[arm], arm_descriptions={arm: f"the {arm} arm"})
        return _save(tmp_path / folder, meta, [case])

    base, memory = ({**_row(0, f1), "kind": "knowledge"} for f1 in (0.5, 0.0))
    probe = {"kinds": {}, "questions": {"base": [base], "memory": [memory]}, "wall_s": 2.0}
    control = run("ctl", "control", [0.0, 0.5, 0.0], None)
    document = run("doc", "lift_only", [1.0, 0.5, 0.5], probe)
    merged = merge_arms([load_report(control), load_report(document)])
    case = merged["cases"][0]
    assert list(case["questions"]) == ["lift_only", "control"]
    assert merged["meta"]["arms"] == ["lift_only", "control"]
    assert set(case["absorption"]) == {"document", "control"}
    assert case["general"] == probe
    assert merged["summary"]["single"]["general"]["kinds"]["knowledge"]["n"] == 1
    gain = merged["summary"]["single"]["gains"]["lift_only"]["f1"]["mean"]
    assert gain == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    with pytest.raises(IncompatibleReports, match="arm 'control' ran in both"):
        merge_arms([load_report(control), load_report(control)])
    shorter = run("short", "closed_book", [0.0, 0.0], None)
    with pytest.raises(IncompatibleReports, match="different cases or questions"):
        merge_arms([load_report(document), load_report(shorter)])
    # The same memory absorbed by two runs: their arms answered with different memories.
    again = run("again", "control", [0.0, 0.5, 0.0], None)
    twice = _save(tmp_path / "twice", _meta(arms=["closed_book"]), [_case("Alpha", [0.0] * 3, [0.0] * 3)])
    report = json.loads((twice / "report.json").read_text())
    report["cases"][0]["questions"] = {"closed_book": report["cases"][0]["questions"]["lift_only"]}
    report["cases"][0]["absorption"] = load_report(again)[1]["cases"][0]["absorption"]
    (twice / "report.json").write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(IncompatibleReports, match="'control' memory of case 'Alpha' was absorbed in two"):
        merge_arms([load_report(again), load_report(twice)])


def test_arms_take_the_rag_settings_of_the_run_that_ran_rag(tmp_path: Path) -> None:
    """A joined case's RAG settings are those its RAG arms ran with, whichever report comes first;
    RAG arms run with different chunks in two reports are refused."""

    def run(folder: str, arm: str, rag: dict[str, Any]) -> Path:
        case = _case("Alpha", [0.5, 0.0], [0.0, 0.0])
        case["questions"] = {arm: [_row(i, f) for i, f in enumerate([0.5, 0.0])]}
        memory = arm not in ("rag_langchain", "closed_book")
        case["absorption"] = {arm: case["absorption"]["document"]} if memory else {}
        case["rag"] = rag
        return _save(tmp_path / folder, _meta(arms=[arm]), [case])

    tuned = {"chunk_size": 128, "chunk_overlap": 16, "k": 3, "tuned": True}
    untuned = {"chunk_size": 256, "chunk_overlap": 32, "k": 4, "tuned": False}
    closed = run("closed", "closed_book", untuned)
    rag = run("rag", "rag_langchain", tuned)
    merged = merge_arms([load_report(closed), load_report(rag)])
    assert merged["cases"][0]["rag"] == tuned
    other = run("hybrid", "hybrid", untuned)
    with pytest.raises(IncompatibleReports, match="different chunks"):
        merge_arms([load_report(rag), load_report(other)])
