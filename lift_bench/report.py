"""Turning a comparison report into what people read: a Markdown table, PNG plots and the JSON file.

The tables put each memory arm's gain over its control next to its raw score, because a raw score alone
would credit the memory with changes any training causes (see :mod:`lift_bench.compare`), and
show what the memory costs on unrelated questions (the general-ability probe) next to what it adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lift_bench.compare import PROBE_KINDS, save_json

__all__ = ["markdown_report", "plot_f1_per_arm", "plot_vs_length", "write_outputs"]


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _pct(ci: dict[str, float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{ci['mean'] * 100:{sign}.1f} [{ci['low'] * 100:{sign}.1f}, {ci['high'] * 100:{sign}.1f}]"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def markdown_report(report: dict[str, Any]) -> str:
    """Per setting: one row per arm (scores with 95% intervals, gain over control, costs); then a table of
    each document's absorption cost, memory size and the KV cache in-context reading would need."""
    meta = report["meta"]
    lines = [
        f"# RAG vs LIFT: {meta['model']}",
        "",
        f"{meta['device']}, {meta['dtype']}, window {meta['context_window']:,} tokens, greedy decoding, "
        f"at most {meta['max_new_tokens']} new tokens, seed {meta['seed']}. Scores are SQuAD v1.1 EM and F1 "
        "(official normalisation) in percent with bootstrap 95% intervals; a memory arm's gain is over its "
        "control (a memory of unrelated text, same recipe), paired over the same questions.",
    ]
    if meta.get("memory_seeds", 1) > 1:
        lines[-1] += (
            f" Every memory was absorbed {meta['memory_seeds']} times (seeds "
            f"{', '.join(str(seed) for seed in _absorption_seeds(meta))}); an arm with a memory scores"
            " each question by its mean over them (per-seed F1 in the last table)."
        )
    if meta.get("answer_batch", 1) > 1:
        lines[-1] += (
            f" Questions were answered {meta['answer_batch']} at a time (rag_llamaindex: one at a time): "
            "an answer's TTFT and latency are its batch's time split evenly."
        )
    for setting, summary in report["summary"].items():
        lines += [
            "",
            f"## {setting}: {summary['documents']} document(s), {summary['questions']} questions, "
            f"{summary['document_tokens_mean']:,.0f} tokens per document on average",
            "",
            "| Arm | EM | F1 | F1 gain over control | contains gold | gold in context | prompt tokens "
            "| TTFT s | latency s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        gains = summary["gains"]
        for arm, stats in summary["arms"].items():
            gain = f"{_pct(gains[arm]['f1'], signed=True)} vs {gains[arm]['control']}" if arm in gains else ""
            lines.append(
                f"| {arm} | {_pct(stats['em'])} | {_pct(stats['f1'])} | {gain} | {_rate(stats['contains'])} "
                f"| {_rate(stats['gold_in_context'])} | {stats['prompt_tokens_mean']:,.0f} "
                f"| {stats['ttft_s_mean']:.2f} | {stats['total_s_mean']:.2f} |"
            )
        routed = {
            arm: st["memory_used"] for arm, st in summary["arms"].items() if st.get("memory_used") is not None
        }
        if routed:
            lines += [
                "",
                "Memory routing: share of questions each arm's router sent to its memory (the base model "
                "answered the rest): "
                + ", ".join(f"{arm} {_rate(rate)}" for arm, rate in routed.items())
                + ".",
            ]
    lines += [
        "",
        "## Documents, absorption and memory size",
        "",
        "| Setting | Document | tokens | fits window | absorb s | trained tok/s | memory on disk "
        "| KV cache of the whole document | RAG chunk / k | control (tokens) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["cases"]:
        absorbed = case["absorption"].get("document")
        rag = case["rag"]
        absorb_cells = (
            f"{absorbed['wall_s']:.1f} | {absorbed['tokens_per_s']:,.0f} | {_bytes(absorbed['disk_bytes'])}"
            if absorbed
            else "– | – | –"
        )
        lines.append(
            f"| {case['setting']} | {case['document']} | {case['document_tokens']:,} "
            f"| {'yes' if case['fits_window'] else 'no'} | {absorb_cells} "
            f"| {_bytes(case['kv_cache_bytes_document'])} "
            f"| {rag['chunk_size']} / {rag['k']}{' (tuned)' if rag.get('tuned') else ''} "
            f"| {case['control']} ({case['control_tokens']:,}) |"
        )
    lines += _general_table(report)
    lines += _seed_table(report)
    lines += ["", "Arms: " + "; ".join(f"`{a}`: {d}" for a, d in meta["arm_descriptions"].items()) + "."]
    return "\n".join(lines) + "\n"


def _absorption_seeds(meta: dict[str, Any]) -> list[int]:
    """The recipe seeds of a run's memories; reports written before ``absorb_config_seeds`` existed
    give the first one and count up."""
    if "absorb_config_seeds" in meta:
        return list(meta["absorb_config_seeds"])
    return [meta["absorb_config_seed"] + offset for offset in range(meta["memory_seeds"])]


def _seed_table(report: dict[str, Any]) -> list[str]:
    """Each memory arm's F1 under each absorption seed, per document: how far one training run moves it.
    Empty for a run with one seed."""
    seeded = [c for c in report["cases"] if c.get("memory_seeds")]
    if not seeded:
        return []
    lines = [
        "",
        "## F1 per memory seed",
        "",
        "| Setting | Document | Arm | F1 per seed | spread |",
        "|---|---|---|---|---|",
    ]
    for case in seeded:
        for arm, f1s in case["memory_seeds"].items():
            cells = ", ".join(f"{f * 100:.1f}" for f in f1s)
            spread = (max(f1s) - min(f1s)) * 100
            lines.append(f"| {case['setting']} | {case['document']} | {arm} | {cells} | {spread:.1f} |")
    return lines


_PROBE_LABELS = {**PROBE_KINDS, "all": "both kinds"}


def _probe_row(setting: str, document: str, kind: str, stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return f"| {setting} | {document} | {_PROBE_LABELS[kind]} | 0 |" + " – |" * 6
    base, memory, difference = stats["base"], stats["memory"], stats["difference"]
    return (
        f"| {setting} | {document} | {_PROBE_LABELS[kind]} | {stats['n']} "
        f"| {_pct(base['f1'])} | {_pct(memory['f1'])} | {_pct(difference['f1'], signed=True)} "
        f"| {_rate(base['contains'])} | {_rate(memory['contains'])} "
        f"| {_pct(difference['contains_ci'], signed=True)} |"
    )


def _general_table(report: dict[str, Any]) -> list[str]:
    """The general-ability probe: per document (and pooled when a setting has several), per kind, the base
    model, the model with the document's memory, and the paired difference. Empty when it did not run."""
    probed = [c for c in report["cases"] if c.get("general")]
    if not probed:
        return []
    per_kind = report["meta"].get("general_probe", {}).get("questions_per_kind", "?")
    lines = [
        "",
        "## General ability with the document's memory attached",
        "",
        f"Questions unrelated to the documents (up to {per_kind} per kind): general knowledge asked closed "
        "book, and SQuAD questions about other articles asked with their paragraph in context (the arms' "
        "answer prompt). Each is answered by the base model and with the document's memory (the one "
        "`lift_only` uses); the difference is with memory minus base, paired over the same questions, "
        "with a bootstrap 95% interval (contains-gold difference in percentage points). A memory that "
        "costs general ability shows an interval below 0.",
        "",
        "| Setting | Document | Questions | n | F1 base | F1 with memory | F1 difference | contains base "
        "| contains with memory | contains difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in probed:
        for kind, stats in case["general"]["kinds"].items():
            lines.append(_probe_row(case["setting"], case["document"], kind, stats))
    for setting, summary in report["summary"].items():
        pooled = summary.get("general")
        if pooled and pooled["documents"] > 1:
            for kind, stats in pooled["kinds"].items():
                lines.append(_probe_row(setting, f"all {pooled['documents']} documents", kind, stats))
    return lines


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_f1_per_arm(report: dict[str, Any], path: str | Path) -> Path:
    """Bars of F1 per arm with 95% intervals, one colour per setting; control arms hatched."""
    plt = _pyplot()
    summary = report["summary"]
    arms = list(dict.fromkeys(a for s in summary.values() for a in s["arms"]))
    settings = list(summary)
    width = 0.8 / max(1, len(settings))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(arms) + 2), 4.2))
    for i, setting in enumerate(settings):
        stats = summary[setting]["arms"]
        xs = [j + (i - (len(settings) - 1) / 2) * width for j, a in enumerate(arms) if a in stats]
        means = [stats[a]["f1"]["mean"] * 100 for a in arms if a in stats]
        errors = [
            [(stats[a]["f1"]["mean"] - stats[a]["f1"]["low"]) * 100 for a in arms if a in stats],
            [(stats[a]["f1"]["high"] - stats[a]["f1"]["mean"]) * 100 for a in arms if a in stats],
        ]
        bars = ax.bar(xs, means, width, yerr=errors, capsize=3, label=setting)
        for bar, arm in zip(bars, [a for a in arms if a in stats], strict=True):
            if arm.startswith("control"):
                bar.set_hatch("//")
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms, rotation=30, ha="right")
    ax.set_ylabel("SQuAD F1 (%)")
    ax.set_title(f"F1 per arm ({report['meta']['model']}); hatched: unrelated-memory controls")
    ax.legend(title="setting")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_vs_length(report: dict[str, Any], path: str | Path) -> Path:
    """F1 and mean latency per arm against document length, with the model's window marked."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    cases: Sequence[dict[str, Any]] = sorted(report["cases"], key=lambda c: c["document_tokens"])
    arms = list(dict.fromkeys(a for c in cases for a in c["arms"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in arms:
        points = [(c["document_tokens"], c["arms"][arm]) for c in cases if arm in c["arms"]]
        xs = [x for x, _ in points]
        style = "--" if arm.startswith("control") else "-"
        left.plot(xs, [s["f1"]["mean"] * 100 for _, s in points], style, marker="o", label=arm)
        right.plot(xs, [s["total_s_mean"] for _, s in points], style, marker="o", label=arm)
    for ax, label in ((left, "SQuAD F1 (%)"), (right, "latency per question (s)")):
        ax.axvline(report["meta"]["context_window"], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("document length (tokens); dotted: the model's window")
        ax.set_ylabel(label)
        lengths = [c["document_tokens"] for c in cases]
        if lengths and max(lengths) > 4 * min(lengths):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    left.set_title("F1 vs document length")
    right.set_title("latency vs document length")
    right.legend(fontsize="small", loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with matplotlib, in the ``dev`` extra) the two plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": save_json(report, out / "report.json")}
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(markdown_report(report), encoding="utf-8")
    if plots:
        paths["f1_per_arm"] = plot_f1_per_arm(report, out / "f1_per_arm.png")
        paths["f1_latency_vs_length"] = plot_vs_length(report, out / "f1_latency_vs_length.png")
    return paths
