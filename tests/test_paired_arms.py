"""benchmarks/paired_arms.py: paired differences between any two arms of a report, on a hand-built one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from paired_arms import main, paired_arms


def _rows(f1s: list[float]) -> list[dict[str, Any]]:
    return [
        {"question": f"q{i}?", "f1": f, "em": float(f == 1.0), "contains": float(f > 0.5)}
        for i, f in enumerate(f1s)
    ]


def _case(setting: str, lift_only: list[float], rag: list[float]) -> dict[str, Any]:
    return {"setting": setting, "questions": {"lift_only": _rows(lift_only), "rag_langchain": _rows(rag)}}


def _report() -> dict[str, Any]:
    cases = [
        _case("single", [1.0, 0.5], [0.5, 0.5]),
        _case("single", [0.0], [0.25]),
        _case("long", [0.5], [0.0]),
    ]
    return {"meta": {"bootstrap_resamples": 200, "seed": 0}, "cases": cases}


def test_differences_pool_each_settings_cases_per_question() -> None:
    result = paired_arms(_report(), [("lift_only", "rag_langchain")])
    single = result["single"]["lift_only:rag_langchain"]
    assert single["n"] == 3
    assert single["lift_only"] == pytest.approx(1.5 / 3)
    assert single["rag_langchain"] == pytest.approx(1.25 / 3)
    assert single["ratio"] == pytest.approx(1.5 / 1.25)
    difference = single["difference"]
    assert difference["mean"] == pytest.approx((0.5 + 0.0 - 0.25) / 3)
    assert difference["low"] <= difference["mean"] <= difference["high"]
    long = result["long"]["lift_only:rag_langchain"]
    assert long["ratio"] is None and long["difference"]["mean"] == pytest.approx(0.5)


def test_unknown_arms_and_bad_pairs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    with pytest.raises(KeyError, match="hybrid"):
        paired_arms(_report(), [("hybrid", "rag_langchain")])
    (tmp_path / "report.json").write_text(json.dumps(_report()), encoding="utf-8")
    with pytest.raises(SystemExit, match="hybrid"):
        main([str(tmp_path), "--pairs", "hybrid:rag_langchain"])
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--pairs", "lift_only"])
    assert "MINE:THEIRS" in capsys.readouterr().err
    main([str(tmp_path), "--pairs", "lift_only:rag_langchain"])
    assert "| long | lift_only vs rag_langchain | 1 | 50.0 vs 0.0 | - | +50.0" in capsys.readouterr().out
