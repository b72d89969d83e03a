"""Where the CPU time of an absorption goes: torch.profiler around one short ``LIFTConfig`` absorption of
the embedded model, its operators' own time summed by kind (forward or backward matrix products,
attention, Gated Memory, casts, element-wise, optimizer, loss) and the rest of the wall time (Python,
data preparation).

    OMP_NUM_THREADS=1 python benchmarks/profile_absorb.py --length 2000 --config-json '{"stage2_epochs": 1}'
    python benchmarks/profile_absorb.py --length 2000 --padding   # passes and padding of the whole run

The document is the one of ``benchmarks/absorb_speed.py`` (the SQuAD "Normans" article cut to
``--length`` tokens). Gated Memory's forward is labelled with ``record_function``; its grouped products
(``aten::bmm``, the only batched products of training besides attention) are counted apart in both
directions.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from absorb_speed import document_of

MATRIX = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
BACKWARD = "autograd::engine::evaluate_function"


def kind_of(name: str, ancestors: list[str], shapes: list, weights: set[tuple[int, ...]]) -> str:
    """The kind of an operator ``name`` whose callers are ``ancestors`` (innermost first); ``shapes``:
    its inputs' shapes (a cast of a tensor shaped like one of ``weights``, the frozen base model's 2-D
    weights, is taken for one of them)."""
    backward = any(a.startswith(BACKWARD) for a in ancestors)
    side = "backward" if backward else "forward"
    if any(a.startswith("Optimizer.") for a in ancestors) or "clip_grad" in " ".join(ancestors):
        return "optimizer and clipping"
    if "scaled_dot_product" in name or any("scaled_dot_product" in a for a in ancestors):
        return f"attention (sdpa), {side}"
    if name == "aten::bmm":
        return f"Gated Memory products (bmm), {side}"
    if name in MATRIX:
        return f"matrix products (mm), {side}"
    if name == "aten::copy_" and "aten::_to_copy" in ancestors[:2]:
        weight = bool(shapes) and tuple(shapes[0]) in weights
        return "casts of the frozen weights to bf16" if weight else "casts of activations and memory weights"
    if any("log_softmax" in a or "nll_loss" in a or "cross_entropy" in a for a in [name, *ancestors]):
        return "loss (log-softmax, nll)"
    if any(a == "gated_memory" for a in ancestors):
        return "Gated Memory, other ops (forward)"
    return f"element-wise and other ops, {side}"


@contextmanager
def labelled_gated_memory() -> Iterator[None]:
    import torch

    from lift_integrations.adapters.gated_memory.layer import GatedMemoryLayer

    forward, mix = GatedMemoryLayer.forward, GatedMemoryLayer.mix

    def labelled_forward(self, query):  # type: ignore[no-untyped-def]
        with torch.profiler.record_function("gated_memory"):
            return forward(self, query)

    def labelled_mix(attention, memory, gate):  # type: ignore[no-untyped-def]
        with torch.profiler.record_function("gated_memory"):
            return mix(attention, memory, gate)

    GatedMemoryLayer.forward, GatedMemoryLayer.mix = labelled_forward, staticmethod(labelled_mix)
    try:
        yield
    finally:
        GatedMemoryLayer.forward, GatedMemoryLayer.mix = forward, staticmethod(mix)


def padding_report(lift, config, text: str) -> None:  # type: ignore[no-untyped-def]
    """The forward passes a whole absorption would run, without running them: passes, padded positions
    against real tokens, and attention work (sum of rows x width squared) against the unpadded one."""
    import lift_integrations.absorb.trainer as trainer

    totals: Counter[str] = Counter()

    def plan_only(context, samples, number):  # type: ignore[no-untyped-def]
        for forward in context.layout.plan(samples):
            widths = [len(samples[i].input_ids) - forward.shared for i in forward.indices]
            totals["passes"] += 1
            totals["tokens"] += sum(widths)
            totals["padded positions"] += max(widths) * len(widths)
            totals["attention, unpadded"] += sum(n * n for n in widths)
            totals["attention, padded"] += max(widths) ** 2 * len(widths)
        return trainer.StepResult(1.0, 0, 0, 0)

    trainer.run_step, real = plan_only, trainer.run_step
    try:
        lift.absorb(text, config=config, show_progress=False)
    finally:
        trainer.run_step = real
    print(", ".join(f"{name} {value:,}" for name, value in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--config-json", default="{}", help='LIFTConfig overrides, e.g. {"stage2_epochs": 1}')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--padding", action="store_true", help="only count the passes and padding of the whole absorption"
    )
    args = parser.parse_args()
    import torch

    from lift_integrations import LIFTConfig, LIFTModel

    torch.set_num_threads(args.threads)
    lift = LIFTModel.from_pretrained(None, device="cpu")
    config = getattr(LIFTConfig, args.preset)(**json.loads(args.config_json))
    text = document_of(lift.tokenizer, args.length)
    if args.padding:
        padding_report(lift, config, text)
        return
    start = time.perf_counter()
    with (
        labelled_gated_memory(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof,
    ):
        memory = lift.absorb(text, config=config, show_progress=False)
        wall = time.perf_counter() - start  # the profiler's own collection, on leaving, left out
    weights = {tuple(p.shape) for p in lift.model.parameters() if p.dim() == 2}
    totals: Counter[str] = Counter()
    for event in prof.events():
        if event.name == "gated_memory" or event.name.startswith(BACKWARD):
            continue
        ancestors, parent = [], event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        totals[kind_of(event.name, ancestors, event.input_shapes, weights)] += event.self_cpu_time_total / 1e6
    ops = sum(totals.values())
    train = memory.stats["seconds"]
    totals["Python and framework outside operators (training)"] = max(0.0, train - ops)
    totals["outside training (QA extraction, tokenisation, samples)"] = wall - train
    print(
        f"{args.preset}, {args.length} tokens, {args.threads} thread(s): {memory.stats['steps']} steps, "
        f"{memory.stats['tokens_trained']} tokens, wall {wall:.1f} s (profiled)"
    )
    for kind, seconds in totals.most_common():
        print(f"{seconds:8.2f} s  {100 * seconds / wall:5.1f} %  {kind}")


if __name__ == "__main__":
    main()
