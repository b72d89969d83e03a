"""Fact recall: absorb a short invented fact sheet, then ask its questions of the memory alone.

    python benchmarks/fact_recall.py                    # the device's default recipe, both sheets
    python benchmarks/fact_recall.py --preset dense_qa --seeds 0 1 --json out.json
    python benchmarks/fact_recall.py --preset fast --config-json '{"stage2_epochs": 10}' --threads 1
    python benchmarks/fact_recall.py --timing-tokens 2000 --threads 2  # also time a 2,000-token absorption

A sheet is a JSON file like examples/data/quillon.json: ``{"title", "text", "questions": [{"question",
"answer"}]}``. Each question is asked with the memory attached and no document in context, greedily, for
at most ``--max-new-tokens`` tokens. An answer is correct when it contains the normalised gold answer
(SQuAD normalisation); recall is the fraction correct. ``other_entity`` marks a wrong answer that holds
the gold answer of another question of the same sheet: a fact learned but bound to the wrong question.

``--timing-tokens N`` also absorbs the SQuAD "Normans" article cut to N tokens (as
benchmarks/absorb_speed.py does) and reports its wall time: the CPU preset's budget is 2,000 tokens in
under three minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from absorb_speed import document_of

from lift_bench.squad import normalize_answer
from lift_integrations import LIFTConfig, LIFTModel

ROOT = Path(__file__).resolve().parents[1]
SHEETS = [ROOT / "examples" / "data" / "quillon.json", ROOT / "examples" / "data" / "brindlecombe.json"]


def make_config(preset: str, device_type: str, overrides: dict[str, Any]) -> LIFTConfig:
    if preset == "auto":
        return LIFTConfig.for_device(device_type, **overrides)
    return getattr(LIFTConfig, preset)(**overrides)


def ask(lift: LIFTModel, memory: Any, questions: list[dict], max_new_tokens: int) -> list[dict]:
    golds = [normalize_answer(q["answer"]) for q in questions]
    rows = []
    for index, item in enumerate(questions):
        answer = lift.generate(item["question"], memory=memory, max_new_tokens=max_new_tokens).text.strip()
        said = normalize_answer(answer)
        correct = golds[index] in said
        others = [g for j, g in enumerate(golds) if j != index and g and g in said]
        rows.append(
            {
                "question": item["question"],
                "gold": item["answer"],
                "answer": answer,
                "correct": correct,
                "other_entity": not correct and bool(others),
            }
        )
    return rows


def recall_of(rows: list[dict]) -> float:
    return round(sum(r["correct"] for r in rows) / max(1, len(rows)), 4)


def run_sheet(
    lift: LIFTModel, path: Path, config: LIFTConfig, base: bool, max_new_tokens: int
) -> dict[str, Any]:
    sheet = json.loads(path.read_text(encoding="utf-8"))
    start = time.perf_counter()
    memory = lift.absorb((sheet["title"], sheet["text"]), config=config)
    absorb_s = time.perf_counter() - start
    rows = ask(lift, memory, sheet["questions"], max_new_tokens)
    result: dict[str, Any] = {
        "sheet": path.name,
        "seed": config.seed,
        "document_tokens": lift.count_tokens(sheet["text"]),
        "absorb_s": round(absorb_s, 2),
        "steps": memory.stats["steps"],
        "qa_samples": memory.stats["qa_samples"],
        "final_loss": round(memory.stats["final_loss"], 4),
        "recall": recall_of(rows),
        "other_entity": sum(r["other_entity"] for r in rows),
        "answers": rows,
    }
    if base:
        base_rows = ask(lift, None, sheet["questions"], max_new_tokens)
        result["base_recall"] = recall_of(base_rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sheets", nargs="*", type=Path, default=SHEETS, help="fact sheets (JSON)")
    parser.add_argument(
        "--preset", default="auto", choices=["auto", "fast", "dense_qa", "paper"], help="auto: for_device"
    )
    parser.add_argument("--config-json", default=None, help='LIFTConfig overrides, e.g. {"stage2_epochs": 8}')
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="absorption seeds")
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--base", action="store_true", help="also score the base model (no memory)")
    parser.add_argument("--timing-tokens", type=int, default=0, help="also time an N-token absorption")
    parser.add_argument("--name", default=None, help="a label for this recipe in the output")
    parser.add_argument("--json", type=Path, default=None, help="write the full results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = json.loads(args.config_json) if args.config_json else {}

    lift = LIFTModel.from_pretrained(args.model, device=args.device)
    runs = []
    for seed in args.seeds:
        config = make_config(args.preset, lift.device.type, {**overrides, "seed": seed})
        for path in args.sheets:
            result = run_sheet(lift, path, config, args.base, args.max_new_tokens)
            runs.append(result)
            print(
                f"{path.name} seed {seed}: recall {result['recall']:.2f} "
                f"({sum(r['correct'] for r in result['answers'])}/{len(result['answers'])}, "
                f"{result['other_entity']} with another entity), absorbed in {result['absorb_s']} s, "
                f"{result['steps']} steps, {result['qa_samples']} QA samples, loss {result['final_loss']}",
                flush=True,
            )
            for row in result["answers"]:
                mark = "+" if row["correct"] else ("x" if row["other_entity"] else "-")
                print(f"  {mark} {row['question']} [{row['gold']}] -> {row['answer'][:70]!r}", flush=True)
    summary: dict[str, Any] = {
        "name": args.name,
        "preset": args.preset,
        "overrides": overrides,
        "device": str(lift.device),
        "threads": torch.get_num_threads(),
        "recall": {
            path.name: round(sum(r["recall"] for r in runs if r["sheet"] == path.name) / len(args.seeds), 4)
            for path in args.sheets
        },
        "runs": runs,
    }
    if args.timing_tokens:
        config = make_config(args.preset, lift.device.type, overrides)
        text = document_of(lift.tokenizer, args.timing_tokens)
        start = time.perf_counter()
        memory = lift.absorb(text, config=config)
        summary["timing"] = {
            "document_tokens": args.timing_tokens,
            "wall_s": round(time.perf_counter() - start, 2),
            "steps": memory.stats["steps"],
            "qa_samples": memory.stats["qa_samples"],
            "tokens_trained": memory.stats["tokens_trained"],
        }
    line = {k: v for k, v in summary.items() if k != "runs"}
    print("SUMMARY " + json.dumps(line), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
