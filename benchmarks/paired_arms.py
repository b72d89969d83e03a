"""Paired F1 differences between any two arms of a finished comparison report.

    python benchmarks/paired_arms.py docs/runs/h200_sweep16_long_dense180 \
        --pairs lift_icl:icl hybrid:rag_langchain

A report gives each memory arm's gain over its control; a reader also asks how an arm compares with
another that is not its control (memory + truncated view against the truncated view alone, the memory
against RAG). This prints, per setting, the first arm minus the second per question over all the
setting's cases, with the paired bootstrap 95% interval the report uses for its gains (its resamples and
seed), and the ratio of the two arms' mean F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from merge_reports import load_report

from lift_bench.arms import HarnessSettings
from lift_bench.compare import paired_difference


def paired_arms(report: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Per setting and ``"mine:theirs"`` pair: both arms' mean F1, their ratio and the paired difference
    (``paired_difference``'s F1 mean and interval), pooled over the setting's cases."""
    meta = report["meta"]
    settings = HarnessSettings(bootstrap_resamples=meta["bootstrap_resamples"], seed=meta["seed"], log=None)
    result: dict[str, dict[str, Any]] = {}
    for setting in dict.fromkeys(case["setting"] for case in report["cases"]):
        cases = [case for case in report["cases"] if case["setting"] == setting]
        for mine, theirs in pairs:
            missing = [arm for arm in (mine, theirs) if any(arm not in c["questions"] for c in cases)]
            if missing:
                raise KeyError(f"the {setting} setting has no rows for {missing}")
            rows = {arm: [r for c in cases for r in c["questions"][arm]] for arm in (mine, theirs)}
            f1 = {arm: sum(r["f1"] for r in rows[arm]) / len(rows[arm]) for arm in rows}
            difference = paired_difference(rows[mine], rows[theirs], settings, f"{mine} and {theirs}")["f1"]
            result.setdefault(setting, {})[f"{mine}:{theirs}"] = {
                "n": len(rows[mine]),
                mine: f1[mine],
                theirs: f1[theirs],
                "ratio": f1[mine] / f1[theirs] if f1[theirs] else None,
                "difference": difference,
            }
    return result


def _pair(text: str) -> tuple[str, str]:
    mine, sep, theirs = text.partition(":")
    if not sep or not mine or not theirs:
        raise argparse.ArgumentTypeError(f"a pair is MINE:THEIRS (two arm names), got {text!r}")
    return mine, theirs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", help="a run folder (its report.json) or a report.json file")
    parser.add_argument("--pairs", type=_pair, nargs="+", required=True, help="MINE:THEIRS arm pairs")
    args = parser.parse_args(argv)
    try:
        _, report = load_report(args.report)
        result = paired_arms(report, args.pairs)
    except (OSError, json.JSONDecodeError, KeyError) as error:
        sys.exit(f"cannot compare: {error}")
    print("| setting | arms | n | F1 | ratio | paired difference |")
    print("|---|---|---|---|---|---|")
    for setting, rows in result.items():
        for name, row in rows.items():
            mine, theirs = name.split(":")
            d = row["difference"]
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            scores = f"{row[mine] * 100:.1f} vs {row[theirs] * 100:.1f}"
            interval = f"{d['mean'] * 100:+.1f} [{d['low'] * 100:+.1f}, {d['high'] * 100:+.1f}]"
            print(f"| {setting} | {mine} vs {theirs} | {row['n']} | {scores} | {ratio} | {interval} |")


if __name__ == "__main__":
    main()
