"""Where a fused absorption's time goes: ``absorb_speed.py --time-steps`` installs this in its child.

It wraps the fused engine's methods (nothing in the library changes) and splits the training loop's
wall time into the device's time replaying each pass shape's CUDA graph and the update's (CUDA events
around each replay), graph captures (first use of a shape, timed with the device drained), the host's
time issuing a step (``FusedSteps.run``, captures left out), building its inputs (``build_step``), and
the rest of the loop between steps (reading losses, which waits for the device, and bookkeeping); and
when ``absorb_many``'s thread planned each later memory.
A summary goes to stderr every ``every`` fused steps, so a run cut off by a time limit keeps it.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Any


class StepClock:
    def __init__(self, every: int = 200) -> None:
        self.every = every
        self.steps = 0
        self.first: float | None = None
        self.last_end: float | None = None
        self.host_run = 0.0
        self.host_build = 0.0
        self.between = 0.0
        self.captures: dict[Any, float] = {}
        self.capture_s = 0.0
        self.events: list[tuple[Any, Any, Any]] = []
        self.device_ms: dict[Any, float] = defaultdict(float)
        self.replays: dict[Any, int] = defaultdict(int)
        self.graph_keys: dict[int, Any] = {}
        self.planning: list[tuple[float, float]] = []
        """Each memory planned on absorb_many's thread: when it started and ended (perf_counter)."""

    def install(self) -> None:
        import torch

        from lift_integrations.absorb import fused, many

        clock = self
        run, graph, build = fused.FusedSteps.run, fused.FusedSteps._graph, many.build_step
        planned = many.JobFeed.planned.__func__  # type: ignore[attr-defined]
        replay = torch.cuda.CUDAGraph.replay

        def timed_run(steps: Any, batch: Any) -> Any:
            start = time.perf_counter()
            if clock.first is None:
                clock.first = start
            elif clock.last_end is not None:
                clock.between += start - clock.last_end
            captured = clock.capture_s
            result = run(steps, batch)
            end = time.perf_counter()
            clock.host_run += end - start - (clock.capture_s - captured)
            clock.last_end = end
            clock.steps += 1
            if clock.steps % clock.every == 0:
                clock.report()
            return result

        def timed_graph(steps: Any, key: Any, *args: Any) -> Any:
            if key in steps._graphs:
                return graph(steps, key, *args)
            torch.cuda.synchronize()
            start = time.perf_counter()
            found = graph(steps, key, *args)
            torch.cuda.synchronize()
            clock.captures[key] = time.perf_counter() - start
            clock.capture_s += clock.captures[key]
            clock.graph_keys[id(found[0])] = key
            return found

        def timed_build(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return build(*args, **kwargs)
            finally:
                clock.host_build += time.perf_counter() - start

        def timed_replay(graph: Any) -> None:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            replay(graph)
            end.record()
            clock.events.append((clock.graph_keys.get(id(graph), "?"), begin, end))

        def timed_planned(cls: Any, order: Any, make: Any) -> Any:
            def timed_make(index: int) -> Any:
                start = time.perf_counter()
                try:
                    return make(index)
                finally:
                    clock.planning.append((start, time.perf_counter()))

            return planned(cls, order, timed_make)

        many.JobFeed.planned = classmethod(timed_planned)  # type: ignore[method-assign,assignment]
        fused.FusedSteps.run = timed_run
        fused.FusedSteps._graph = timed_graph
        many.build_step = timed_build
        torch.cuda.CUDAGraph.replay = timed_replay

    def report(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        for key, begin, end in self.events:
            self.device_ms[key] += begin.elapsed_time(end)
            self.replays[key] += 1
        self.events.clear()
        wall = time.perf_counter() - (self.first or time.perf_counter())
        passes = {k: v for k, v in self.device_ms.items() if k != "update"}
        device = sum(self.device_ms.values()) / 1e3
        print(
            f"clock: {self.steps} steps in {wall:.1f} s; device replaying {device:.1f} s "
            f"(passes {sum(passes.values()) / 1e3:.1f}, update {self.device_ms.get('update', 0) / 1e3:.1f}); "
            f"captures {len(self.captures)} in {self.capture_s:.1f} s; host issuing {self.host_run:.1f} s, "
            f"building {self.host_build:.1f} s, between steps {self.between:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if self.planning and self.first is not None:
            busy = sum(end - start for start, end in self.planning)
            print(
                f"clock planning: {len(self.planning)} memories planned on the thread, {busy:.1f} s in all, "
                f"the last done at {self.planning[-1][1] - self.first:+.1f} s from the first step",
                file=sys.stderr,
                flush=True,
            )
        top = sorted(passes, key=lambda k: -passes[k])[:6]
        shapes = ", ".join(f"{k}: {self.replays[k]} x {passes[k] / self.replays[k]:.1f} ms" for k in top)
        print(f"clock shapes (rows, tokens, supervised): {shapes}", file=sys.stderr, flush=True)
