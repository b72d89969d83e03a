"""Absorption speed: trained tokens/s, wall time and peak memory for 2,000- and 8,000-token documents,
and documents per minute when many documents are absorbed into one memory each.

"tokens trained" counts every training sample whole (the recipe's work); "tokens computed" counts the
positions actually run, where a start several samples share (the QA samples' document view) runs once.
MFU is computed from the computed tokens, so it measures the hardware's use, not the shortcut.

Each (preset, length) case runs in its own process so that peak memory is that case's alone.

    python benchmarks/absorb_speed.py                       # fast preset, 2k and 8k tokens, this machine
    python benchmarks/absorb_speed.py --presets fast paper --lengths 2000 8000 --json out.json
    python benchmarks/absorb_speed.py --presets dense_qa --lengths 8000 --engines eager fused --repeat 2
    python benchmarks/absorb_speed.py --presets dense_qa --documents 24 --squad ../shared/data/squad-dev.json
    python benchmarks/absorb_speed.py --presets dense_qa --documents 24 --squad ... --pass-overhead 1024
    python benchmarks/absorb_speed.py --presets dense_qa --lengths 8000 --shape llama-8b
    python benchmarks/absorb_speed.py --presets dense_qa --lengths 8000 --config-json '{"compile": true}' \
        --processes 2   # the second process: a cold start with the compiled kernels cached on disk
    python benchmarks/absorb_speed.py --presets paper --lengths 32000 --shape llama-8b --gpu-gib 78

``--engines`` runs each case with each training engine (``LIFTConfig.engine``: ``eager`` is the
step-by-step loop, ``fused`` the static-shape, CUDA-graph path) in its own process, side by side. With
``--repeat 2`` the first attempt is the cold one (a fresh process: capturing graphs, compiling) and the
second the warm one. ``--documents N`` absorbs N SQuAD articles (``--squad``) into N memories with
``LIFTModel.absorb_many`` (the eager engine absorbs them one after the other) and reports documents per
minute. ``--shape`` replaces the model by a random-weight one shaped like Llama-3.2-1B, Llama-3.1-8B
or SmolLM2-135M (SmolLM2's tokenizer, bf16 on CUDA; nothing is downloaded); with ``--tokenizer`` the
tokenizer comes from a saved folder, so no model file is needed at all. ``--gpu-gib 78`` holds the rest
of a bigger GPU, so that it behaves like an 80 GB card (free memory is what the automatic choices read).

The single document is the SQuAD "Normans" article shipped in examples/data (CC BY-SA 4.0), cut or
repeated to the requested number of tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from _absorb_progress import Ticker, Timeline, compile_report, profiler, run_child

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "examples" / "data" / "normans.json"


def document_of(tokenizer, length: int) -> str:
    paragraphs = [p["context"] for p in json.loads(ARTICLE.read_text())]
    text = "\n\n".join(paragraphs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < length:
        ids = ids + ids
    return tokenizer.decode(ids[:length])


def matmul_peak_tflops(device: str) -> float | None:
    """bf16 matrix-multiply throughput measured now, the denominator of model FLOPs utilisation."""
    import torch

    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12


def training_flops(model, tokens: int, seq_sq_sum: int, adapter_params: int) -> float:
    """Approximate matmul FLOPs of absorption: frozen base forward + input-gradient backward (4 per
    parameter per token, embeddings excluded), adapter forward + full backward (6), causal attention
    scores and values (3 passes x 2 products x 2 FLOPs x layers x hidden x seq^2 / 2)."""
    config = model.config
    embedding = config.vocab_size * config.hidden_size
    base = sum(p.numel() for p in model.parameters()) - embedding
    attention = 6 * config.num_hidden_layers * config.hidden_size * seq_sq_sum
    return 4 * base * tokens + 6 * adapter_params * tokens + attention


LLAMA3 = dict(vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)

SHAPES = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
        **LLAMA3,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
        **LLAMA3,
    ),
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
    ),
}
"""Configs shaped like Llama-3.2-1B, Llama-3.1-8B and the embedded SmolLM2-135M."""


def load_lift(model: str | None, device: str | None, shape: str | None, tokenizer_dir: Path | None = None):
    """The embedded (or given) model, or a random-weight one of ``shape`` with SmolLM2's tokenizer (the
    embedded model's, or one saved in ``tokenizer_dir``, for a machine without the model file)."""
    import torch

    from lift_integrations import LIFTModel

    if shape is None:
        return LIFTModel.from_pretrained(model, device=device)
    from transformers import LlamaConfig, LlamaForCausalLM

    from lift_integrations.loading import resolve_device

    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = LIFTModel.from_pretrained(model, device="cpu").tokenizer
    config = LlamaConfig(
        **SHAPES[shape],
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    target = resolve_device(device)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(target):
        network = LlamaForCausalLM(config).to(dtype)
    return LIFTModel(network, tokenizer, name=shape)


def squad_documents(path: Path, count: int) -> list[tuple[str, str]]:
    """The first ``count`` articles of a SQuAD file (paragraphs of one title joined), as (title, text)."""
    articles: dict[str, list[str]] = {}
    for paragraph in json.loads(path.read_text()):
        articles.setdefault(paragraph["title"], []).append(paragraph["context"])
    if len(articles) < count:
        raise SystemExit(f"{path} holds {len(articles)} articles, fewer than --documents {count}")
    return [(title, "\n\n".join(texts)) for title, texts in list(articles.items())[:count]]


def run_case(
    preset: str,
    length: int,
    model: str | None,
    device: str | None,
    overrides: dict | None = None,
    profile: bool = False,
    repeat: int = 1,
    sdpa: str = "default",
    engine: str = "auto",
    documents: int = 0,
    squad: Path | None = None,
    shape: str | None = None,
    gpu_gib: float | None = None,
    tokenizer_dir: Path | None = None,
) -> dict:
    import torch

    from lift_integrations import LIFTConfig

    ballast = hold_gpu_to(gpu_gib) if gpu_gib else 0
    lift = load_lift(model, device, shape, tokenizer_dir)
    peak = matmul_peak_tflops(lift.device.type)
    config = getattr(LIFTConfig, preset)(**{**(overrides or {}), "engine": engine})
    if documents:
        return {
            "preset": preset,
            **run_documents(
                lift,
                config,
                documents,
                squad or ARTICLE,
                peak,
                repeat,
                engine,
                PROFILED_MEMORY_STEPS if profile else None,
            ),
        }
    text = document_of(lift.tokenizer, length)
    attempts = []
    for attempt in range(repeat):  # later attempts show the warm speed (kernels chosen, caches filled)
        if lift.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with profiler(profile and attempt == repeat - 1, lift.device.type), _sdpa_backend(sdpa):
            ticker = Ticker(ballast=ballast if lift.device.type == "cuda" else None)
            memory = lift.absorb(text, config=config, callback=ticker)
            if lift.device.type == "cuda":
                torch.cuda.synchronize()
        wall = time.perf_counter() - start
        train_s = memory.stats["seconds"]
        attempts.append({"wall_s": round(wall, 2), "train_s": round(train_s, 3)})
        print(
            f"attempt {attempt + 1}: wall {wall:.2f} s, training {train_s:.2f} s, "
            f"final loss {memory.stats['final_loss']:.6f}, late loss {late_loss(ticker.losses):.4f}",
            flush=True,
        )
        if config.compile:
            print(compile_report(), file=sys.stderr, flush=True)
    stats = memory.stats
    peak_gpu = (torch.cuda.max_memory_allocated() - ballast) / 2**20 if lift.device.type == "cuda" else None
    computed = stats.get("tokens_computed", stats["tokens_trained"])  # a shared prefix runs once
    flops = training_flops(lift.model, computed, stats.get("sum_sq_lengths", 0), memory.num_parameters)
    return {
        "preset": preset,
        "engine": engine,
        "shape": shape or "embedded",
        "document_tokens": length,
        "wall_s": round(wall, 2),
        "train_s": stats["seconds"],
        "tokens_trained": stats["tokens_trained"],
        "tokens_per_s": round(stats["tokens_trained"] / stats["seconds"], 1),
        "tokens_computed": computed,
        "computed_tokens_per_s": round(computed / stats["seconds"], 1),
        "steps": stats["steps"],
        "final_loss": stats["final_loss"],
        "late_loss": round(late_loss(ticker.losses), 4),
        "segment_samples": stats["segment_samples"],
        "qa_samples": stats["qa_samples"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mib": None if peak_gpu is None else round(peak_gpu, 1),
        "device": str(lift.device),
        "mfu_pct": None if peak is None else round(100 * flops / stats["seconds"] / (peak * 1e12), 2),
        "peak_tflops": None if peak is None else round(peak, 1),
        "threads": torch.get_num_threads(),
        "config_overrides": overrides or {},
        "repeat": repeat,
        "attempts": attempts,
        "sdpa": sdpa,
        "gpu_gib": gpu_gib,
        "gradient_checkpointing": memory.config.gradient_checkpointing,
    }


PROFILED_MEMORY_STEPS = (2000, 2200)
"""With ``--documents`` and ``--profile``: the memory steps (counted over all memories) profiled; a short
window, since the profiler slows the steps it records and takes minutes to process a long one."""


def run_documents(
    lift,
    config,
    count: int,
    squad: Path,
    peak: float | None,
    repeat: int,
    engine: str,
    profile: tuple[int, int] | None = None,
) -> dict:
    """``count`` articles into ``count`` memories with ``absorb_many``; documents per minute."""
    import torch

    documents = squad_documents(squad, count)
    tokens = sum(lift.count_tokens(text) for _, text in documents)
    attempts = []
    for attempt in range(repeat):
        if lift.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        timeline = Timeline(profile if attempt == repeat - 1 else None, lift.device.type)
        start = time.perf_counter()
        memories = lift.absorb_many(documents, config=config, callback=timeline)
        timeline.finish()
        if lift.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        attempts.append(
            {
                "wall_s": round(wall, 2),
                "documents_per_min": round(60 * count / wall, 2),
                "timeline": timeline.points[:: max(1, len(timeline.points) // 300)],
            }
        )
        print(f"attempt {attempt + 1}: {count} documents in {wall:.2f} s", flush=True)
        for memory in memories[:-1]:
            lift.release(memory)
    trained = sum(m.stats["tokens_trained"] for m in memories)
    flops = sum(
        training_flops(lift.model, m.stats["tokens_computed"], m.stats["sum_sq_lengths"], m.num_parameters)
        for m in memories
    )
    return {
        "engine": engine,
        "documents": count,
        "document_tokens": tokens,
        "wall_s": round(wall, 2),
        "documents_per_min": round(60 * count / wall, 2),
        "tokens_trained": trained,
        "tokens_per_s": round(trained / wall, 1),
        "steps": [m.stats["steps"] for m in memories],
        "final_losses": [round(m.stats["final_loss"], 4) for m in memories],
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if lift.device.type == "cuda"
        else None,
        "mfu_pct": None if peak is None else round(100 * flops / wall / (peak * 1e12), 2),
        "device": str(lift.device),
        "gradient_checkpointing": memories[-1].config.gradient_checkpointing,
        "attempts": attempts,
    }


_BALLAST: list = []


def hold_gpu_to(gib: float) -> int:
    """Occupy all but ``gib`` GiB of the GPU, so that a bigger card behaves like a ``gib``-GiB one (the
    library's automatic choices, such as gradient checkpointing, read the free memory). Returns the bytes
    held, which the peak figures leave out."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    spare = free - int(gib * 2**30)
    if spare <= 0:
        return 0
    _BALLAST.append(torch.empty(spare, dtype=torch.uint8, device="cuda"))
    return spare


def _sdpa_backend(name: str):
    """Pin PyTorch's scaled-dot-product attention to one kernel family (``default``: its own choice)."""

    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
    return sdpa_kernel([backend])


def run_naive(model: str | None, device: str | None, steps: int = 20) -> dict:
    """The reference loop of issue 7: PEFT LoRA r=64 on every linear layer, fp32 weights, bf16 autocast,
    batches of 8 x 512 random tokens, full-vocabulary logits."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lift_integrations import LIFTModel

    lift = LIFTModel.from_pretrained(model, device=device, dtype="float32")
    peft_model = get_peft_model(lift.model, LoraConfig(r=64, lora_alpha=128, target_modules="all-linear"))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, lift.model.config.vocab_size, (8, 512), device=lift.device)
    for step in range(steps + 3):
        if step == 3:
            if lift.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(lift.device.type, dtype=torch.bfloat16):
            loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if lift.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"preset": "naive-lora-loop", "tokens_per_s": round(steps * 8 * 512 / seconds, 1)}


def late_loss(losses: list[float]) -> float:
    """The mean loss of the last tenth of the steps: one step's loss (a few samples) varies too much from
    step to step to compare two runs by, e.g. compiled and eager training."""
    tail = losses[-max(1, len(losses) // 10) :] or [float("nan")]
    return sum(tail) / len(tail)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["fast"], choices=["fast", "dense_qa", "paper"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[2000, 8000])
    parser.add_argument("--engines", nargs="+", default=["auto"], choices=["auto", "fused", "eager"])
    parser.add_argument("--documents", type=int, default=0, help="absorb this many SQuAD articles instead")
    parser.add_argument("--squad", type=Path, default=None, help="SQuAD JSON for --documents")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="a random model of this shape")
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: embedded SmolLM2)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="with --shape: a saved tokenizer folder instead of the embedded model's (no model file needed)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--naive", action="store_true", help="also time the naive LoRA loop of issue 7")
    parser.add_argument(
        "--config-json", default=None, help='LIFTConfig overrides as JSON, e.g. {"batch_size": 32}'
    )
    parser.add_argument("--repeat", type=int, default=1, help="absorb this many times in one process")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run each case in this many fresh processes, one after the other (from the second on, "
        "compiled kernels come from inductor's disk cache: the cold start of a machine that compiled)",
    )
    parser.add_argument("--profile", action="store_true", help="print the busiest kernels of the last absorb")
    parser.add_argument(
        "--sdpa", choices=["default", "flash", "efficient"], default="default", help="attention kernel family"
    )
    parser.add_argument(
        "--gpu-gib", type=float, default=None, help="behave as a GPU of this many GiB (the rest is held)"
    )
    parser.add_argument(
        "--pass-overhead",
        type=int,
        default=None,
        help="the fused engine's cost of one more pass, in padded tokens (absorb/fused.py's "
        "PASS_OVERHEAD_TOKENS), when it groups samples into passes",
    )
    parser.add_argument(
        "--time-steps",
        action="store_true",
        help="CUDA: split the fused engine's time into graph replays per pass shape, captures and host "
        "work, every 200 fused steps (benchmarks/_step_clock.py)",
    )
    parser.add_argument("--case", nargs=3, metavar=("PRESET", "LENGTH", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = json.loads(args.config_json) if args.config_json else None

    if args.case:
        from lift_integrations.absorb import fused

        if args.pass_overhead is not None:
            fused.PASS_OVERHEAD_TOKENS = args.pass_overhead
        clock = None
        if args.time_steps:
            from _step_clock import StepClock

            clock = StepClock()
            clock.install()
        result = run_case(
            args.case[0],
            int(args.case[1]),
            args.model,
            args.device,
            overrides,
            args.profile,
            args.repeat,
            args.sdpa,
            engine=args.case[2],
            documents=args.documents,
            squad=args.squad,
            shape=args.shape,
            gpu_gib=args.gpu_gib,
            tokenizer_dir=args.tokenizer,
        )
        result["pass_overhead_tokens"] = fused.PASS_OVERHEAD_TOKENS
        if clock is not None:
            clock.report()
        print("RESULT " + json.dumps(result), flush=True)
        return

    results = []
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}"
    )
    if args.documents:
        print(
            "| preset | engine | documents | doc tokens | wall s (per attempt) | documents/min | MFU % "
            "| peak GPU MiB |"
        )
        print("|---|---|---|---|---|---|---|---|")
    else:
        print(
            "| preset | engine | shape | doc tokens | wall s (per attempt) | training s | tokens trained "
            "| tokens/s | MFU % | steps | peak RSS MiB | peak GPU MiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    lengths = [0] if args.documents else args.lengths
    for preset in args.presets:
        for length in lengths:
            for engine in args.engines:
                command = [sys.executable, __file__, "--case", preset, str(length), engine]
                for flag, value in (
                    ("--model", args.model),
                    ("--device", args.device),
                    ("--config-json", args.config_json),
                    ("--shape", args.shape),
                    ("--tokenizer", args.tokenizer),
                    ("--squad", args.squad),
                    ("--gpu-gib", args.gpu_gib),
                    ("--pass-overhead", args.pass_overhead),
                ):
                    if value is not None:
                        command += [flag, str(value)]
                if args.documents:
                    command += ["--documents", str(args.documents)]
                if args.profile:
                    command += ["--profile"]
                if args.time_steps:
                    command += ["--time-steps"]
                command += ["--repeat", str(args.repeat), "--sdpa", args.sdpa]
                for process in range(args.processes):
                    label = engine if args.processes == 1 else f"{engine}, process {process + 1}"
                    results += run_case_process(command, preset, label, length, args)
    if args.naive:
        naive = run_naive(args.model, args.device)
        results.append(naive)
        print(
            f"naive LoRA loop (r=64, fp32 weights + bf16 autocast, 8 x 512): {naive['tokens_per_s']} tokens/s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def run_case_process(
    command: list[str], preset: str, label: str, length: int, args: argparse.Namespace
) -> list[dict]:
    """Runs one case in a fresh process and prints its table row; its result, or none if it failed."""
    returncode, output, errors = run_child(command)
    if returncode != 0:
        print(f"| {preset} | {label} | failed: {errors[-1:]} |", flush=True)
        return []
    if args.profile or args.repeat > 1:
        print("\n".join(line for line in output.splitlines() if not line.startswith("RESULT ")))
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[7:])
    walls = " / ".join(str(a["wall_s"]) for a in result["attempts"])
    if args.documents:
        print(
            f"| {preset} | {label} | {result['documents']} | {result['document_tokens']} "
            f"| {walls} "
            f"| {result['documents_per_min']} | {result['mfu_pct'] or '-'} "
            f"| {result['peak_gpu_mib'] or '-'} |",
            flush=True,
        )
        return [result]
    print(
        f"| {preset} | {label} | {result['shape']} | {length} | {walls} | {result['train_s']} "
        f"| {result['tokens_trained']} | {result['tokens_per_s']} "
        f"| {result['mfu_pct'] or '-'} | {result['steps']} "
        f"| {result['peak_rss_mib']} | {result['peak_gpu_mib'] or '-'} |",
        flush=True,
    )
    return [result]


if __name__ == "__main__":
    main()
