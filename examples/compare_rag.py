"""RAG versus LIFT on SQuAD articles: every arm, same model, same answer prompt, honest controls.

    python examples/compare_rag.py --quick          # make demo: one short article slice, CPU
    python examples/compare_rag.py                   # 3 articles, single + long settings, all arms
    python examples/compare_rag.py --model HuggingFaceTB/SmolLM2-360M-Instruct --preset paper \\
        --articles "Normans,1973 oil crisis,Amazon rainforest" --questions 50 --settings single,long \\
        --arms all --tune-rag --out runs/compare/smollm2-360m

    python examples/compare_rag.py --settings corpus --questions 5 --preset dense_qa --answer-batch 64 \\
        --bank runs/corpus/kb --out runs/corpus/all24   # every article as one knowledge base

Arms: closed_book, icl (whole document or head+tail), rag_langchain, rag_llamaindex, lift_only, lift_icl,
hybrid, and the controls (control, control_icl, control_hybrid: a memory of unrelated text). With a
memory arm, a general-ability probe (--general) asks unrelated questions with and without each document's
memory. Writes report.json, report.md, f1_per_arm.png and f1_latency_vs_length.png under --out and prints
the tables. The corpus setting (--settings corpus, lift_bench/corpus*.py) has arms of its own: RAG over
every article's chunks, a memory bank routed per question, hybrid, one memory of the whole corpus, and
controls with another article's memory; it reports routing accuracy.
See docs/compare_rag.md for what each arm means and how to read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lift_bench.arms import ALL_ARMS, HarnessSettings
from lift_bench.cases import BenchDocument, article_document, build_cases
from lift_bench.compare import QUICK_ARMS, run_comparison
from lift_bench.corpus import build_corpus, probe_documents
from lift_bench.corpus_arms import CORPUS_ARMS
from lift_bench.corpus_report import corpus_markdown, write_corpus_outputs
from lift_bench.corpus_run import absorb_corpus, run_corpus
from lift_bench.report import markdown_report, write_outputs
from lift_bench.squad import Article, load_squad_articles
from lift_integrations import LIFTConfig, LIFTModel

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "squad-dev.json"
EXAMPLE_DATA = ROOT / "examples" / "data"
DEFAULT_ARTICLES = ("Normans", "1973 oil crisis", "Amazon rainforest")  # the articles of baselines.md
FICTION = ("quillon.json", "brindlecombe.json")  # the corpus probe's unrelated reading (never in SQuAD)


def default_data() -> Path:
    """The shared SQuAD dev file when this checkout sits next to it, else the bundled Normans article."""
    return SHARED_DATA if SHARED_DATA.is_file() else EXAMPLE_DATA / "normans.json"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the make-demo setting: first 4 paragraphs of Normans, 10 questions, 7 arms, "
        "fast preset, no RAG tuning, 10 general-probe questions per kind (explicit options still override)",
    )
    parser.add_argument(
        "--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2-135M)"
    )
    parser.add_argument(
        "--adapter",
        default="gated_memory",
        choices=["gated_memory", "lora"],
        help="what a memory trains: the paper's Gated Memory (default) or PEFT LoRA",
    )
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    parser.add_argument("--dtype", default=None, help="torch dtype (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument(
        "--data", type=Path, default=None, help=f"SQuAD paragraph-list JSON (default: {default_data()})"
    )
    parser.add_argument(
        "--articles",
        default=None,
        help="comma-separated titles, or a number N for the first N articles "
        f"(default: {', '.join(DEFAULT_ARTICLES)} when present)",
    )
    parser.add_argument(
        "--paragraphs", type=int, default=None, help="keep only each article's first N paragraphs"
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=None,
        help="questions per document (default 50; corpus: per article, default 5)",
    )
    parser.add_argument(
        "--arms",
        default=None,
        help=f"comma-separated arms or 'all' ({', '.join(ALL_ARMS)}; corpus: {', '.join(CORPUS_ARMS)})",
    )
    parser.add_argument(
        "--settings",
        default=None,
        help="single, long or single,long (default: both); or corpus (every selected article, all of them "
        "by default, as one knowledge base: runs alone)",
    )
    parser.add_argument(
        "--bank",
        type=Path,
        default=None,
        metavar="DIR",
        help="corpus: keep the absorbed memories in DIR (the bank, the whole-corpus memory and how they "
        "were made) and reuse them when DIR holds them for the same articles, model and recipe",
    )
    parser.add_argument(
        "--absorb-only",
        action="store_true",
        help="corpus: absorb what the arms need into --bank and stop (a run split into several commands)",
    )
    parser.add_argument(
        "--preset",
        choices=("auto", "fast", "dense_qa", "paper"),
        default=None,
        help="LIFTConfig preset (auto: fast on CPU, dense_qa on GPU)",
    )
    parser.add_argument(
        "--config", default=None, help="JSON LIFTConfig overrides, e.g. '{\"stage2_epochs\": 8}'"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="question sampling, absorption and bootstrap seed"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="RAG chunk size in tokens (default 256)")
    parser.add_argument("--k", type=int, default=None, help="RAG chunks per question (default 4)")
    parser.add_argument(
        "--tune-rag",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pick chunk size and k per document by RAG's own F1 (default: on, off with --quick)",
    )
    parser.add_argument(
        "--memory-seeds",
        type=_positive_int,
        default=1,
        help="absorb each memory with this many seeds (the recipe's seed, then + 1, ...) and average its "
        "arms' scores per question (default 1)",
    )
    parser.add_argument(
        "--route-memories",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="attach each memory only to the questions a MemoryRouter finds about its documents "
        "(arms with a memory and the general-ability probe), the base model answering the rest "
        "(default: on; --no-route-memories attaches every memory to every question)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--general",
        type=int,
        default=None,
        metavar="N",
        help="general-ability probe: N general-knowledge questions (closed book) and N questions about "
        "unrelated SQuAD paragraphs (paragraph in context), answered with and without each document's "
        "memory; runs when a memory arm runs (default 20; 10 with --quick; 0 disables)",
    )
    parser.add_argument(
        "--llamaindex-stock-prompt",
        action="store_true",
        help="LlamaIndex's own QA template instead of the shared prompt (not comparable)",
    )
    parser.add_argument(
        "--answer-batch",
        type=int,
        default=1,
        metavar="N",
        help="answer N questions at once (LIFTModel.generate_batch; all arms but rag_llamaindex): much "
        "faster on a GPU; latencies become each batch's time split evenly (default 1: one at a time, "
        "streamed, each with its own time to first token)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compare", help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    quick = {
        "articles": "Normans",
        "paragraphs": 4,
        "questions": 10,
        "arms": ",".join(QUICK_ARMS),
        "settings": "single",
        "preset": "fast",
        "tune_rag": False,
        "chunk_size": 128,
        "k": 3,
        "general": 10,
    }
    full = {
        "articles": None,
        "paragraphs": None,
        "questions": 50,
        "arms": "all",
        "settings": "single,long",
        "preset": "auto",
        "tune_rag": True,
        "chunk_size": 256,
        "k": 4,
        "general": 20,
    }
    corpus = {**full, "questions": 5, "settings": "corpus"}
    if args.settings and "corpus" in args.settings.split(","):
        defaults = corpus
    else:
        defaults = quick if args.quick else full
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if "corpus" in args.settings.split(",") and args.settings.strip() != "corpus":
        parser.error("--settings corpus runs on its own (its arms and report differ from single and long)")
    if args.absorb_only and args.bank is None:
        parser.error("--absorb-only needs --bank DIR (where the memories are kept)")
    if args.settings == "corpus" and args.memory_seeds != 1:
        parser.error("the corpus setting absorbs each memory once (--memory-seeds 1)")
    return args


def select_articles(data: Path, spec: str | None) -> tuple[list[Article], list[Article]]:
    """The articles to evaluate and the rest of the file (the control pool), in file order."""
    articles = load_squad_articles(data)
    by_title = {a.title: a for a in articles}
    if spec is None:
        titles = [t for t in DEFAULT_ARTICLES if t in by_title] or [a.title for a in articles[:3]]
    elif spec.strip().isdigit():
        titles = [a.title for a in articles[: int(spec)]]
    else:
        titles = [t.strip() for t in spec.split(",") if t.strip()]
        missing = [t for t in titles if t not in by_title]
        if missing:
            sys.exit(f"articles not in {data}: {missing}; available: {', '.join(by_title)}")
    chosen = [by_title[t] for t in titles]
    return chosen, [a for a in articles if a.title not in titles]


def control_pool(rest: list[Article]) -> list[BenchDocument]:
    """Unrelated text for the controls: the other articles of the file, then the fictional Quillon
    document (always unrelated, and always there, so the bundled one-article file still has a control).
    The SQuAD articles' questions also feed the general-ability probe's reading questions."""
    fiction = json.loads((EXAMPLE_DATA / "quillon.json").read_text(encoding="utf-8"))
    return [*(article_document(a) for a in rest), BenchDocument(title=fiction["title"], text=fiction["text"])]


def absorb_config(preset: str, overrides: str | None, seed: int, device_type: str) -> LIFTConfig:
    extra = {"seed": seed, **(json.loads(overrides) if overrides else {})}
    if preset == "auto":
        return LIFTConfig.for_device(device_type, **extra)
    return getattr(LIFTConfig, preset)(**extra)


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # LangChain/LlamaIndex use worker threads
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = args.data or default_data()
    if args.settings == "corpus":
        run_corpus_setting(args, data, argv, started)
        return
    arms = list(ALL_ARMS) if args.arms == "all" else [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ALL_ARMS))
    if unknown:
        sys.exit(f"unknown arms {unknown}; expected some of {', '.join(ALL_ARMS)}")
    settings_wanted = [s.strip() for s in args.settings.split(",") if s.strip()]

    chosen, rest = select_articles(data, args.articles)
    if "long" in settings_wanted and len(chosen) < 2:
        print("the long setting needs at least two articles; running the single setting only")
        settings_wanted = [s for s in settings_wanted if s != "long"] or ["single"]

    lift = LIFTModel.from_pretrained(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter)
    print(
        f"model {lift.name} on {lift.device} ({str(lift.dtype).removeprefix('torch.')}), window "
        f"{lift.context_window:,} tokens; data {data}"
    )
    documents = [article_document(a, args.paragraphs) for a in chosen]
    cases = build_cases(
        documents,
        control_pool=control_pool(rest),
        count_tokens=lift.count_tokens,
        settings=settings_wanted,
        questions=args.questions,
        seed=args.seed,
    )
    settings = harness_settings(args, lift, memory_seeds=args.memory_seeds)
    report = run_comparison(lift, cases, arms, settings)
    finish(report, args, data, argv, started, write_outputs, markdown_report)


def harness_settings(args: argparse.Namespace, lift: LIFTModel, **extra: Any) -> HarnessSettings:
    """The command line's settings shared by every setting (``extra``: those of one setting only)."""
    return HarnessSettings(
        absorb_config=absorb_config(args.preset, args.config, args.seed, lift.device.type),
        max_new_tokens=args.max_new_tokens,
        chunk_size=args.chunk_size,
        k=args.k,
        tune_rag=args.tune_rag,
        seed=args.seed,
        llamaindex_stock_prompt=args.llamaindex_stock_prompt,
        general_probe=max(0, args.general),
        answer_batch=max(1, args.answer_batch),
        route_memories=args.route_memories,
        **extra,
    )


def run_corpus_setting(args: argparse.Namespace, data: Path, argv: list[str] | None, started: float) -> None:
    """The corpus setting: every selected article (all by default) as one knowledge base."""
    arms = list(CORPUS_ARMS) if args.arms == "all" else [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(CORPUS_ARMS))
    if unknown:
        sys.exit(f"unknown corpus arms {unknown}; expected some of {', '.join(CORPUS_ARMS)}")
    every = load_squad_articles(data)
    chosen, rest = select_articles(data, args.articles) if args.articles else (every, [])
    if {"control", "control_hybrid"}.intersection(arms) and len(chosen) < 2:
        sys.exit("the control arms use another article's memory: select at least two articles")
    lift = LIFTModel.from_pretrained(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter)
    print(f"model {lift.name} on {lift.device} ({str(lift.dtype).removeprefix('torch.')}); data {data}")
    corpus = build_corpus([article_document(a, args.paragraphs) for a in chosen], args.questions, args.seed)
    fiction = [json.loads((EXAMPLE_DATA / f).read_text(encoding="utf-8")) for f in FICTION]
    settings = harness_settings(args, lift)
    if args.absorb_only:
        from lift_bench.corpus import CorpusResources

        resources = CorpusResources(lift, corpus, settings, bank_dir=args.bank)
        made = absorb_corpus(lift, resources, arms)
        for what in ("bank", "whole"):
            if what in made:
                print(f"{what}: {made[what]['wall_s']:.1f} s (loaded from: {made[what]['loaded_from']})")
        print(f"kept in {args.bank}; total wall time {time.perf_counter() - started:.0f} s")
        return
    report = run_corpus(
        lift, corpus, arms, settings, unrelated=probe_documents(rest, fiction), bank_dir=args.bank
    )
    finish(report, args, data, argv, started, write_corpus_outputs, corpus_markdown)


def finish(
    report: dict[str, Any],
    args: argparse.Namespace,
    data: Path,
    argv: list[str] | None,
    started: float,
    write: Callable[..., dict[str, Path]],
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """Record how the report was made, write it and print it (every setting ends the same way)."""
    report["meta"].update(
        {
            "data": str(data),
            "command": " ".join(["examples/compare_rag.py", *(argv or sys.argv[1:])]),
            "script_wall_s": round(time.perf_counter() - started, 1),
        }
    )
    paths = write(report, args.out, plots=not args.no_plots)
    print()
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
