"""Pool several RAG-versus-LIFT reports (``examples/compare_rag.py``) into one.

    python benchmarks/merge_reports.py runs/compare/normans runs/compare/oil runs/compare/amazon \\
        --out runs/compare/merged

Why it exists: one ``compare_rag.py`` process runs its articles one after another, and a small model
leaves most of a GPU idle. Running one process per article in parallel (same recipe, arms, model, seed
and settings) is several times faster, but each process writes its own report whose summary covers only
its article. This tool concatenates the reports' cases and recomputes the summary over all of them, so
the intervals and gains pool every article's questions (3 articles x 40 questions = 120 per arm), exactly
as one process running all the articles would have computed them.

Each argument is a run folder (its ``report.json``) or a ``report.json`` file. The reports must agree on
model, arms, absorption recipe, seed, memory seeds, answer length and KV-cache size per token, and no
document may appear twice in the same setting. The merged report keeps the first report's ``meta``, adds
``merged_from`` and ``commands``, sums ``wall_s`` (and ``script_wall_s``): process-seconds, not elapsed
time, as the runs overlapped. Writes report.json and report.md (and with ``--plots`` the PNG plots)
under ``--out`` and prints the Markdown.

``--seeds`` pools the other way: reports of the *same* cases whose absorptions differ only in the
recipe's seed (``--config '{"seed": 1}'`` and so on, run in parallel), as one run with
``--memory-seeds`` would have: every memory arm scores each question by its mean over the reports, the
arms without a memory keep the first report's answers, and the probe pools every seed's memory.

``--arms`` joins the third way: reports of the same cases and questions that ran *different arms* (the
document's memory arms in one process, the control's in another, so that the two absorptions run side
by side), as one run of all the arms would have reported them: each case's answers and absorptions are
the union, the gains over controls and the summary are recomputed. An arm may appear in one report only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lift_bench.arms import ALL_ARMS, CONTROL_OF, HarnessSettings
from lift_bench.compare import (
    RAG_ARMS,
    arm_stats,
    combine_probes,
    gains_over_controls,
    mean_over_seeds,
    seed_means,
    summarize,
)
from lift_bench.report import markdown_report, write_outputs
from lift_integrations.config import LIFTConfig

SAME_META: tuple[str, ...] = (
    "model",
    "arms",
    "absorb_config",
    "seed",
    "memory_seeds",
    "max_new_tokens",
    "kv_cache_bytes_per_token",
    "route_memories",
    "answer_batch",
)
"""The ``meta`` keys every merged report must share: pooling runs that differ in any of them would mix
different experiments under one interval."""

# What reports written before a key existed ran with.
_META_DEFAULTS: dict[str, Any] = {"memory_seeds": 1, "route_memories": False, "answer_batch": 1}


class IncompatibleReports(ValueError):
    """The reports cannot be pooled: different settings, or a document counted twice."""


def report_path(source: str | Path) -> Path:
    """The ``report.json`` a command-line argument names: the file itself, or the one in a run folder."""
    path = Path(source)
    return path / "report.json" if path.is_dir() else path


def load_report(source: str | Path) -> tuple[Path, dict[str, Any]]:
    """The report's path and its parsed content."""
    path = report_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no report at {path}")
    return path, json.loads(path.read_text(encoding="utf-8"))


def _meta_value(report: dict[str, Any], key: str) -> Any:
    meta = report["meta"]
    value = meta.get(key, _META_DEFAULTS[key]) if key in _META_DEFAULTS else meta[key]
    if key == "absorb_config" and isinstance(value, dict):
        # A recipe field added after the report was written ran with its default (every field added so
        # far defaults to the behaviour before it existed).
        value = {**LIFTConfig().to_dict(), **value}
    return value


def _check_same_meta(
    reports: Sequence[tuple[Path, dict[str, Any]]], ignore_seed: bool = False, ignore: tuple[str, ...] = ()
) -> None:
    """Raise :class:`IncompatibleReports` naming the first :data:`SAME_META` key (but those in
    ``ignore``) two reports differ in (with ``ignore_seed``, the absorption recipe is compared without
    its seed)."""
    first_path, first = reports[0]
    for path, report in reports[1:]:
        for key in SAME_META:
            if key in ignore:
                continue
            mine, theirs = _meta_value(first, key), _meta_value(report, key)
            if key == "absorb_config" and ignore_seed:
                mine, theirs = _recipe_without_seed(first_path, first), _recipe_without_seed(path, report)
            if mine != theirs:
                raise IncompatibleReports(
                    f"meta[{key!r}] differs: {mine!r} in {first_path} but {theirs!r} in {path}"
                )


def check_compatible(reports: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Raise :class:`IncompatibleReports` when two reports differ in a :data:`SAME_META` key, or when a
    (setting, document) pair appears twice; the message names the key or document and both files."""
    _check_same_meta(reports)
    seen: dict[tuple[str, str], Path] = {}
    for path, report in reports:
        for case in report["cases"]:
            key = (case["setting"], case["document"])
            if key in seen:
                raise IncompatibleReports(
                    f"document {key[1]!r} appears twice in setting {key[0]!r}: in {seen[key]} and in {path}"
                )
            seen[key] = path


def _commands(reports: Sequence[tuple[Path, dict[str, Any]]]) -> list[str | None]:
    """Every command behind the reports: a merged report's own list, else its one command."""
    return [
        command
        for _, report in reports
        for command in report["meta"].get("commands") or [report["meta"].get("command")]
    ]


def merge_reports(
    reports: Sequence[tuple[Path, dict[str, Any]]], bootstrap: int | None = None
) -> dict[str, Any]:
    """One report from several: the first's ``meta`` (plus ``merged_from``, ``commands`` and summed wall
    times), every case in input order, and the summary recomputed over all of them with ``bootstrap``
    resamples (default: the first report's)."""
    if not reports:
        raise ValueError("nothing to merge")
    check_compatible(reports)
    settings, kv_per_token = _pooling(reports, bootstrap)
    cases = [case for _, report in reports for case in report["cases"]]
    return _report(reports, settings, kv_per_token, cases)


def _pooling(
    reports: Sequence[tuple[Path, dict[str, Any]]], bootstrap: int | None
) -> tuple[HarnessSettings, int]:
    """The settings the pooled statistics are computed with (the first report's seed, and its bootstrap
    resamples unless ``bootstrap`` is given) and the KV-cache bytes per token."""
    meta = reports[0][1]["meta"]
    resamples = meta["bootstrap_resamples"] if bootstrap is None else bootstrap
    # The statistics read only bootstrap_resamples and seed; log=None keeps the settings object quiet.
    settings = HarnessSettings(bootstrap_resamples=resamples, seed=meta["seed"], log=None)
    return settings, meta["kv_cache_bytes_per_token"]


def _report(
    reports: Sequence[tuple[Path, dict[str, Any]]],
    settings: HarnessSettings,
    kv_per_token: int,
    cases: list[dict[str, Any]],
    **meta_changes: Any,
) -> dict[str, Any]:
    """The merged report: the first report's ``meta`` with ``meta_changes``, the inputs (``merged_from``,
    ``commands``), the summed wall times and the resamples used; ``cases``; the summary over them."""
    meta = {**reports[0][1]["meta"], **meta_changes}
    meta.update(
        {
            "bootstrap_resamples": settings.bootstrap_resamples,
            "merged_from": [str(path) for path, _ in reports],
            "commands": _commands(reports),
            "wall_s": sum(report["meta"]["wall_s"] for _, report in reports),
        }
    )
    if all("script_wall_s" in report["meta"] for _, report in reports):
        meta["script_wall_s"] = round(sum(report["meta"]["script_wall_s"] for _, report in reports), 1)
    return {"meta": meta, "cases": cases, "summary": summarize(cases, settings, kv_per_token)}


def _scored(
    rows: dict[str, list[dict[str, Any]]], settings: HarnessSettings, kv_per_token: int
) -> dict[str, Any]:
    """A case's per-question rows with the statistics recomputed from them: arms and gains."""
    return {
        "arms": {arm: arm_stats(r, settings, kv_per_token) for arm, r in rows.items()},
        "gains": gains_over_controls(rows, settings),
        "questions": rows,
    }


MEMORY_ARMS = frozenset(CONTROL_OF) | frozenset(CONTROL_OF.values())
"""The arms that answer with a memory, whose answers change with the absorption seed."""


def _recipe_without_seed(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    config = _meta_value(report, "absorb_config")
    if not isinstance(config, dict):
        raise IncompatibleReports(f"{path} names no absorption recipe ({config!r}); --seeds needs one")
    return {k: v for k, v in config.items() if k != "seed"}


def _case_questions(report: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """Each case's setting, document and questions in order: what runs of the same cases share."""
    return [
        (c["setting"], c["document"], [r["question"] for r in next(iter(c["questions"].values()))])
        for c in report["cases"]
    ]


def _check_same_cases(reports: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Raise :class:`IncompatibleReports` unless every report asked the first one's cases and questions,
    in its order."""
    first_path, first = reports[0]
    for path, report in reports[1:]:
        if _case_questions(report) != _case_questions(first):
            raise IncompatibleReports(
                f"{first_path} and {path} asked different cases or questions (or in another order)"
            )


def merge_seeds(
    reports: Sequence[tuple[Path, dict[str, Any]]], bootstrap: int | None = None
) -> dict[str, Any]:
    """One report from runs of the same cases whose absorptions differ only in the recipe's seed: each
    memory arm's per-question scores are the mean over the runs (as ``--memory-seeds`` computes them)."""
    if len(reports) < 2:
        raise ValueError("--seeds needs at least two reports")
    _check_same_meta(reports, ignore_seed=True)
    seeds = [report["meta"]["absorb_config"]["seed"] for _, report in reports]
    if len(set(seeds)) != len(seeds):
        raise IncompatibleReports(f"--seeds needs a different absorption seed per report, got {seeds}")
    for path, report in reports:
        if _meta_value(report, "memory_seeds") != 1:
            raise IncompatibleReports(f"{path} already averages several seeds")
    _check_same_cases(reports)
    settings, kv_per_token = _pooling(reports, bootstrap)
    cases = []
    for index, case in enumerate(reports[0][1]["cases"]):
        runs = [report["cases"][index] for _, report in reports]
        seeded = {
            arm: [run["questions"][arm] for run in runs] for arm in case["questions"] if arm in MEMORY_ARMS
        }
        rows = {
            arm: mean_over_seeds(seeded[arm]) if arm in seeded else case["questions"][arm]
            for arm in case["questions"]
        }
        absorption = dict(case["absorption"])
        for seed, run in zip(seeds[1:], runs[1:], strict=True):
            absorption.update({f"{key}@seed{seed}": value for key, value in run["absorption"].items()})
        probes = [run["general"] for run in runs if run.get("general")]
        for probe in probes:
            probe.setdefault("wall_s", 0.0)
        cases.append(
            {
                **case,
                "absorption": absorption,
                **_scored(rows, settings, kv_per_token),
                "memory_seeds": seed_means(seeded),
                "general": combine_probes(probes, settings, kv_per_token),
            }
        )
    return _report(
        reports, settings, kv_per_token, cases, memory_seeds=len(reports), absorb_config_seeds=seeds
    )


def merge_arms(
    reports: Sequence[tuple[Path, dict[str, Any]]], bootstrap: int | None = None
) -> dict[str, Any]:
    """One report from runs of the same cases and questions with disjoint arms: each case's answers,
    absorptions and probe are the union, its arm statistics and gains over controls recomputed."""
    if len(reports) < 2:
        raise ValueError("--arms needs at least two reports")
    _check_same_meta(reports, ignore=("arms",))
    _check_same_cases(reports)
    owner: dict[str, Path] = {}
    for path, report in reports:
        for arm in report["meta"]["arms"]:
            if arm in owner:
                raise IncompatibleReports(f"arm {arm!r} ran in both {owner[arm]} and {path}")
            owner[arm] = path
    settings, kv_per_token = _pooling(reports, bootstrap)
    order = {arm: index for index, arm in enumerate(ALL_ARMS)}
    arms = sorted(owner, key=lambda arm: order.get(arm, len(order)))
    cases = []
    for index, case in enumerate(reports[0][1]["cases"]):
        runs = [report["cases"][index] for _, report in reports]
        rows = {arm: row for run in runs for arm, row in run["questions"].items()}
        rows = {arm: rows[arm] for arm in arms if arm in rows}
        probes = [run["general"] for run in runs if run.get("general")]
        if len(probes) > 1:
            raise IncompatibleReports(f"case {case['document']!r} has a general-ability probe in two reports")
        absorption: dict[str, Any] = {}
        for (path, _), run in zip(reports, runs, strict=True):
            for key, value in run["absorption"].items():
                if key in absorption:
                    raise IncompatibleReports(
                        f"the {key!r} memory of case {case['document']!r} was absorbed in two reports "
                        f"(again in {path}): their arms answered with different memories"
                    )
                absorption[key] = value
        cases.append(
            {
                **case,
                "rag": _rag_of(runs, case["document"]),
                "absorption": absorption,
                "prepare_s": {key: value for run in runs for key, value in run.get("prepare_s", {}).items()},
                **_scored(rows, settings, kv_per_token),
                "memory_seeds": _joined_seed_means(runs),
                "general": probes[0] if probes else None,
            }
        )
    descriptions = {
        arm: text for _, report in reports for arm, text in report["meta"].get("arm_descriptions", {}).items()
    }
    return _report(reports, settings, kv_per_token, cases, arms=arms, arm_descriptions=descriptions)


def _rag_of(runs: Sequence[dict[str, Any]], document: str) -> dict[str, Any]:
    """The RAG settings of the runs that ran RAG arms (the first run's when none did); runs whose RAG
    arms used different settings cannot be joined."""
    settings = [run["rag"] for run in runs if RAG_ARMS & set(run["questions"])]
    if any(other != settings[0] for other in settings[1:]):
        raise IncompatibleReports(f"case {document!r}: the RAG arms ran with different chunks: {settings}")
    return settings[0] if settings else runs[0]["rag"]


def _joined_seed_means(runs: Sequence[dict[str, Any]]) -> dict[str, list[float]] | None:
    joined = {arm: means for run in runs for arm, means in (run.get("memory_seeds") or {}).items()}
    return joined or None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reports", nargs="+", help="run folders (their report.json) or report.json files")
    parser.add_argument("--out", required=True, help="folder for the merged report.json and report.md")
    parser.add_argument("--plots", action="store_true", help="also draw the report's PNG plots")
    parser.add_argument(
        "--seeds",
        action="store_true",
        help="the reports ran the same cases with different absorption seeds: average the memory arms",
    )
    parser.add_argument(
        "--arms",
        action="store_true",
        help="the reports ran the same cases with different arms: join their arms into one report",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        help="bootstrap resamples for the pooled intervals (default: the first report's)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bootstrap is not None and args.bootstrap < 1:
        sys.exit("--bootstrap must be a positive integer")
    try:
        reports = [load_report(source) for source in args.reports]
    except (OSError, json.JSONDecodeError) as error:
        sys.exit(f"cannot read a report: {error}")
    target = (Path(args.out) / "report.json").resolve()
    if any(path.resolve() == target for path, _ in reports):
        sys.exit(f"--out {args.out} would overwrite one of the input reports; choose another folder")
    if args.seeds and args.arms:
        sys.exit("--seeds and --arms join different things; merge the arms first, then the seeds")
    merge = merge_seeds if args.seeds else merge_arms if args.arms else merge_reports
    try:
        report = merge(reports, args.bootstrap)
    except IncompatibleReports as error:
        sys.exit(f"cannot merge: {error}")
    paths = write_outputs(report, args.out, plots=args.plots)
    print(markdown_report(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
