"""What another bank routing rule would change in a corpus comparison report (``examples/compare_rag.py
--settings corpus``), without the GPU.

    python benchmarks/route_corpus_report.py docs/runs/h100_corpus24 --data ../shared/data/squad-dev.json \\
        --calibration bank --quantile 0.9 0.95 --lexical-weight 0.25 --json rerouted.json

A router reads only text, so the run's bank router is rebuilt from the articles' text exactly as the run
built it (:func:`lift_bench.corpus.corpus_router` with the run's LangChain embeddings, all-MiniLM-L6-v2 on
the CPU). The run's own rule (``BankRouting()``, the defaults) re-routes the report's questions and probe
questions first: every decision must match the report's, or the script stops, since figures re-routed by
a router other than the run's would mean nothing. Then each candidate rule (the product of the values of
``--calibration``, ``--quantile``, ``--lexical-weight`` and ``--margin``) re-routes them, and every answer
is one the run generated:

* the rule picks the memory the run used: the memory arm's answer;
* it picks none: the answer of the arm without memory (``lift_only`` -> ``closed_book``, ``hybrid`` ->
  ``rag_langchain``, the controls likewise; the probe's base answer);
* it picks a memory the run did not use for that question (another one, or one where the run used none):
  that answer was never generated. Such questions are counted, and every figure is given twice: with
  them scored as the answer without memory, and with them left out of every arm.

The controls follow the run's design (the report's ``control_design``): the next article's memory, on the
questions the rule gives some memory; so a control's answer is known wherever the rule and the run both
gave some memory, or both gave none.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from merge_reports import load_report
from route_reports import WITHOUT_MEMORY
from routing_accuracy import cached

from lift_bench.arms import CONTROL_OF, default_langchain_embeddings
from lift_bench.cases import article_document
from lift_bench.corpus import Corpus, build_corpus, corpus_router
from lift_bench.corpus_run import routing_accuracy
from lift_bench.squad import bootstrap_ci, load_squad_articles
from lift_integrations.bank_router import CALIBRATIONS, BankRouting
from lift_integrations.routing import CALIBRATION_QUANTILE, LEXICAL_WEIGHT, Embedder, document_embedder

Row = dict[str, Any]

LEGACY_RULE = BankRouting(
    calibration="per_memory", quantile=CALIBRATION_QUANTILE, lexical_weight=LEXICAL_WEIGHT
)
"""The rule of corpus runs whose report does not name one (``meta["bank_routing"]``): the bank's default
until ``calibration="bank"`` became it."""


def run_rule(report: dict[str, Any]) -> BankRouting:
    """The rule the corpus run routed with, its options resolved."""
    recorded = report["meta"].get("bank_routing")
    return (LEGACY_RULE if recorded is None else BankRouting.of(recorded)).resolved()


@dataclass(frozen=True)
class Decisions:
    """A rule's memory (a bank name, or ``None``: the base model) per corpus question and probe question."""

    questions: list[str | None]
    probe: list[str | None]


def _options(rule: BankRouting, keys: Sequence[str]) -> str:
    values = rule.to_dict()
    return ", ".join(
        f"{key}={values[key]}" if key == "calibration" else f"{key}={values[key]:g}" for key in keys
    )


def rule_name(rule: BankRouting, run_rule: BankRouting = LEGACY_RULE) -> str:
    """The options that differ from the run's rule; the run's rule with its options."""
    rule = rule.resolved()
    run = run_rule.resolved().to_dict()
    changed = [key for key, value in rule.to_dict().items() if value != run[key]]
    if changed:
        return _options(rule, changed)
    return f"run's rule ({_options(rule, ['calibration', 'quantile', 'lexical_weight'])})"


def rebuild_corpus(report: dict[str, Any], data: str | Path) -> Corpus:
    """The run's corpus: its articles from the data file, questions drawn as the run drew them (checked
    against the report's rows, and the bank names against the report's)."""
    case = report["cases"][0]
    articles = {a.title: a for a in load_squad_articles(data)}
    missing = [title for title in case["sources"] if title not in articles]
    if missing:
        raise ValueError(f"articles {missing} of the report are not in {data}")
    per_article = report["corpus"]["articles"][0]["questions"]
    corpus = build_corpus(
        [article_document(articles[title]) for title in case["sources"]], per_article, report["meta"]["seed"]
    )
    asked = [(q.question, q.source) for q in corpus.questions]
    if asked != [(r["question"], r["source"]) for r in next(iter(case["questions"].values()))]:
        raise ValueError("the rebuilt corpus asks other questions than the report (another data file?)")
    if list(corpus.names) != [a["name"] for a in report["corpus"]["articles"]]:
        raise ValueError("the rebuilt bank's memory names differ from the report's")
    return corpus


def run_decisions(case: dict[str, Any]) -> Decisions:
    """The run's routing, as its rows record it: ``lift_only``'s memory per question, the probe's."""
    return Decisions(
        [r["memory"] for r in case["questions"]["lift_only"]],
        [r["memory"] for r in case["general"]["questions"]["memory"]],
    )


def route(corpus: Corpus, case: dict[str, Any], embed: Embedder, rule: BankRouting) -> Decisions:
    """``rule``'s decisions, made as the run made them (one call for the questions, one for the probe)."""
    router = corpus_router(corpus, embed, rule)
    return Decisions(
        list(router.route_many([q.question for q in corpus.questions])),
        list(router.route_many([r["question"] for r in case["general"]["questions"]["base"]])),
    )


def reroute(arm: Sequence[Row], plain: Sequence[Row], labels: Sequence[str | None]) -> list[Row | None]:
    """Per question, the row answering it under a rule that gives it the memory ``labels`` names: the arm's
    row where the run used that memory too (its ``memory``), the arm without memory's where the rule gives
    none, ``None`` where the answer was never generated."""
    if [r["question"] for r in arm] != [r["question"] for r in plain] or len(arm) != len(labels):
        raise ValueError("the memory arm, the arm without memory and the decisions differ in questions")
    return [
        row if label == row.get("memory") else (free if label is None else None)
        for row, free, label in zip(arm, plain, labels, strict=True)
    ]


def rerouted_rows(
    case: dict[str, Any], corpus: Corpus, decisions: Decisions
) -> tuple[dict[str, list[Row | None]], list[Row | None]]:
    """Every arm's rows under ``decisions`` (arms without a routed memory as they are), and the probe's
    rows with the routed memory; ``None`` marks an answer never generated."""
    rows = case["questions"]
    controls = [
        None if label is None else corpus.control_name(q.source)
        for q, label in zip(corpus.questions, decisions.questions, strict=True)
    ]
    result: dict[str, list[Row | None]] = {arm: list(arm_rows) for arm, arm_rows in rows.items()}
    for arm, plain in WITHOUT_MEMORY.items():
        if arm in rows and plain in rows:
            labels = controls if arm in CONTROL_OF.values() else decisions.questions
            result[arm] = reroute(rows[arm], rows[plain], labels)
    probe = case["general"]["questions"]
    return result, reroute(probe["memory"], probe["base"], decisions.probe)


def _ci(values: Sequence[float], resamples: int, seed: int) -> list[float]:
    mean, low, high = bootstrap_ci(list(values), n_resamples=resamples, seed=seed)
    return [mean, low, high]


def figures(
    rows: dict[str, list[Row]], base: Sequence[Row], probe: Sequence[Row], resamples: int, seed: int
) -> dict[str, Any]:
    """F1 per arm, the memory arms' ratios to ``rag_langchain`` and gains over their controls (paired),
    and the probe's contains-gold and F1, base and routed: means with bootstrap intervals as the harness
    computes them (``[mean, low, high]``)."""
    f1 = {arm: [r["f1"] for r in arm_rows] for arm, arm_rows in rows.items()}
    result: dict[str, Any] = {
        "n": len(next(iter(rows.values()))),
        "f1": {arm: _ci(values, resamples, seed) for arm, values in f1.items()},
        "ratio_to_rag_langchain": {
            arm: float(np.mean(f1[arm]) / np.mean(f1["rag_langchain"]))
            for arm in ("lift_only", "hybrid")
            if arm in f1 and "rag_langchain" in f1 and np.mean(f1["rag_langchain"])
        },
        "gain_over_control": {
            arm: _ci([a - b for a, b in zip(f1[arm], f1[control], strict=True)], resamples, seed)
            for arm, control in CONTROL_OF.items()
            if arm in f1 and control in f1
        },
    }
    result["probe"] = {
        "n": len(base),
        "answered_with_memory": sum(r.get("memory") is not None for r in probe),
        "contains": {
            "base": float(np.mean([r["contains"] for r in base])),
            "routed": float(np.mean([r["contains"] for r in probe])),
        },
        "f1": {
            "base": _ci([r["f1"] for r in base], resamples, seed),
            "routed": _ci([r["f1"] for r in probe], resamples, seed),
            "routed_minus_base": _ci(
                [a["f1"] - b["f1"] for a, b in zip(probe, base, strict=True)], resamples, seed
            ),
        },
    }
    return result


def rule_figures(
    case: dict[str, Any], corpus: Corpus, decisions: Decisions, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """What the report's figures become under ``decisions``: routing accuracy, the questions whose answer
    was never generated, and :func:`figures` both with those scored as the answer without memory
    (``"as_without_memory"``) and with those questions left out of every arm (``"excluded"``)."""
    rows, probe = rerouted_rows(case, corpus, decisions)
    plain = {arm: case["questions"][WITHOUT_MEMORY.get(arm, arm)] for arm in rows}
    unknown = sorted({i for arm_rows in rows.values() for i, r in enumerate(arm_rows) if r is None})
    probe_unknown = [i for i, r in enumerate(probe) if r is None]
    base = case["general"]["questions"]["base"]
    filled = {
        arm: [plain[arm][i] if r is None else r for i, r in enumerate(arm_rows)]
        for arm, arm_rows in rows.items()
    }
    probe_filled = [base[i] if r is None else r for i, r in enumerate(probe)]
    accuracy = routing_accuracy(
        [corpus.name_of(q.source) for q in corpus.questions],
        decisions.questions,
        [q.source for q in corpus.questions],
    )
    result = {
        "decisions": {"questions": decisions.questions, "probe": decisions.probe},
        "routing": {key: accuracy[key] for key in ("n", "correct", "none", "wrong", "confusions")},
        "unknown": len(unknown),
        "probe_n": len(decisions.probe),
        "probe_routed": sum(d is not None for d in decisions.probe),
        "probe_unknown": len(probe_unknown),
        "as_without_memory": figures(filled, base, probe_filled, resamples, seed),
    }
    if unknown or probe_unknown:
        keep = [i for i in range(len(corpus.questions)) if i not in unknown]
        probe_keep = [i for i in range(len(probe)) if i not in probe_unknown]
        kept = {arm: [arm_rows[i] for i in keep] for arm, arm_rows in filled.items()}
        result["excluded"] = figures(
            kept, [base[i] for i in probe_keep], [probe_filled[i] for i in probe_keep], resamples, seed
        )
    return result


def agreement(mine: Decisions, theirs: Decisions) -> dict[str, Any]:
    """How many decisions agree, and the questions where they do not."""
    result: dict[str, Any] = {}
    for what in ("questions", "probe"):
        pairs = list(zip(getattr(mine, what), getattr(theirs, what), strict=True))
        result[what] = {
            "agree": sum(a == b for a, b in pairs),
            "n": len(pairs),
            "differ": [{"index": i, "rerouted": a, "run": b} for i, (a, b) in enumerate(pairs) if a != b],
        }
    return result


def _pct(values: Sequence[float]) -> str:
    return f"{values[0] * 100:.1f} [{values[1] * 100:.1f}, {values[2] * 100:.1f}]"


def _gain(values: Sequence[float]) -> str:
    return f"{values[0] * 100:+.1f} [{values[1] * 100:+.1f}, {values[2] * 100:+.1f}]"


def markdown(rules: dict[str, dict[str, Any]]) -> str:
    """One column per rule and way of scoring the answers never generated, one row per figure."""
    columns: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for name, result in rules.items():
        if "excluded" in result:
            columns.append((f"{name}: unknown as without memory", result, result["as_without_memory"]))
            n = result["excluded"]["n"]
            columns.append((f"{name}: unknown left out ({n} questions)", result, result["excluded"]))
        else:
            columns.append((name, result, result["as_without_memory"]))
    lines = ["| | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]

    def add(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r, f) for _, r, f in columns) + " |")

    add(
        "routing: own memory / none / another",
        lambda r, f: (
            f"{r['routing']['correct']:.1%} / {r['routing']['none']:.1%} / {r['routing']['wrong']:.1%}"
        ),
    )
    add("answers never generated (questions, probe)", lambda r, f: f"{r['unknown']}, {r['probe_unknown']}")
    for arm in columns[0][2]["f1"]:
        add(f"{arm} F1", lambda r, f, arm=arm: _pct(f["f1"][arm]))
    for arm in columns[0][2]["ratio_to_rag_langchain"]:
        add(f"{arm} / rag_langchain", lambda r, f, arm=arm: f"{f['ratio_to_rag_langchain'][arm]:.2f}x")
    for arm in columns[0][2]["gain_over_control"]:
        add(f"{arm} F1 gain over {CONTROL_OF[arm]}", lambda r, f, arm=arm: _gain(f["gain_over_control"][arm]))
    add("probe questions routed", lambda r, f: f"{r['probe_routed']}/{r['probe_n']}")
    add(
        "probe contains-gold: base -> routed",
        lambda r, f: f"{f['probe']['contains']['base']:.1%} -> {f['probe']['contains']['routed']:.1%}",
    )
    add(
        "probe F1: base -> routed",
        lambda r, f: f"{f['probe']['f1']['base'][0] * 100:.1f} -> {f['probe']['f1']['routed'][0] * 100:.1f}",
    )
    add("probe F1: routed minus base", lambda r, f: _gain(f["probe"]["f1"]["routed_minus_base"]))
    return "\n".join(lines) + "\n"


def candidate_rules(args: argparse.Namespace, run: BankRouting) -> list[BankRouting]:
    """Every combination of the options given (an option not given: the run's), the run's rule left out
    (it is always measured)."""
    rules = [
        BankRouting(calibration=c, quantile=q, lexical_weight=w, margin=m).resolved()
        for c, q, w, m in itertools.product(
            args.calibration or [run.calibration],
            args.quantile or [run.quantile],
            args.lexical_weight or [run.lexical_weight],
            args.margin or [run.margin],
        )
    ]
    return [rule for rule in dict.fromkeys(rules) if rule != run]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", help="a corpus run's folder (its report.json) or report.json file")
    parser.add_argument("--data", required=True, help="the SQuAD file the run read (to rebuild the articles)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    option = "the candidate rules' BankRouting option (several values: one rule each; default: the run's"
    parser.add_argument("--calibration", nargs="+", choices=CALIBRATIONS, default=None, help=f"{option})")
    parser.add_argument("--quantile", nargs="+", type=float, default=None, help=f"{option})")
    parser.add_argument("--lexical-weight", nargs="+", type=float, default=None, help=f"{option})")
    parser.add_argument("--margin", nargs="+", type=float, default=None, help=f"{option})")
    args = parser.parse_args(argv)
    try:
        path, report = load_report(args.report)
    except (OSError, json.JSONDecodeError) as error:
        sys.exit(f"cannot read a report: {error}")
    if report["meta"].get("setting") != "corpus" or report["meta"].get("routing") != "bank_router":
        sys.exit(f"{path} is not a corpus run routed by the bank's router")
    case = report["cases"][0]
    corpus = rebuild_corpus(report, args.data)
    resamples, seed = int(report["meta"].get("bootstrap_resamples", 1000)), int(report["meta"]["seed"])
    embed = cached(document_embedder(default_langchain_embeddings()))
    run = run_rule(report)
    mine = route(corpus, case, embed, run)
    agreed = agreement(mine, run_decisions(case))
    for what, count in agreed.items():
        print(f"run's rule re-routed: {count['agree']}/{count['n']} {what} decisions as the run made them")
    if any(count["differ"] for count in agreed.values()):
        sys.exit(f"the rebuilt router is not the run's: {json.dumps(agreed, indent=1)}")
    rules: dict[str, dict[str, Any]] = {}
    for rule in [run, *candidate_rules(args, run)]:
        decisions = mine if rule == run else route(corpus, case, embed, rule)
        rules[rule_name(rule, run)] = {
            "options": rule.to_dict(),
            **rule_figures(case, corpus, decisions, resamples, seed),
        }
    run_f1 = rules[rule_name(run, run)]["as_without_memory"]["f1"]
    if not all(np.isclose(run_f1[arm][0], stats["f1"]["mean"]) for arm, stats in case["arms"].items()):
        sys.exit("the run's rule does not give the report's F1 back")
    print("run's rule: every arm's F1 as the report has it")
    print()
    print(markdown(rules))
    if args.json is not None:
        record = {
            "report": str(path),
            "command": " ".join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
            "agreement": agreed,
            "rules": rules,
        }
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
