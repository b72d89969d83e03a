"""What ``absorb_speed.py`` shows while a case runs: each case in a child process whose progress
reaches the terminal as it comes, steps done after how many seconds, and torch.profiler tables.
Printed on stderr, so a run cut off by a time limit still shows how far it got."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time


def run_child(command: list[str]) -> tuple[int, str, list[str]]:
    """Runs one case in a child process: its stdout is returned, its stderr echoed as it comes (without
    progress bars) so a run cut off by a time limit still shows how far it got."""
    errors: list[str] = []

    def echo(stream) -> None:
        for line in stream:  # text mode splits tqdm's carriage returns into lines too
            if "progress:" in line:
                line = line[line.index("progress:") :]
            elif (
                not line.strip()
                or line.startswith(("absorbing", "Loading"))
                or "step/s" in line
                or "s/step" in line
            ):
                continue
            errors.append(line.rstrip("\n"))
            with contextlib.suppress(OSError):  # keep draining the pipe, or the child would block
                sys.stderr.write(line)
                sys.stderr.flush()

    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    ) as child:
        echoing = threading.Thread(target=echo, args=(child.stderr,), daemon=True)
        echoing.start()
        output = child.stdout.read()
        child.wait()
        echoing.join()
    return child.returncode, output, [line for line in errors if line.strip()]


class Ticker:
    """Prints how many steps have run every ``every`` seconds, so a run cut off by a time limit still
    shows how far it got (the table is printed only when a case finishes)."""

    def __init__(self, every: float = 15.0, ballast: int | None = None) -> None:
        self.start = self.last = time.perf_counter()
        self.every = every
        self.ballast = ballast
        """Bytes held on the GPU apart from the run (``--gpu-gib``): with it, each line shows the run's
        peak GPU memory so far, so a run cut off by a time limit still shows what it needed."""
        self.steps = 0
        self.losses: list[float] = []

    def __call__(self, progress) -> None:
        self.steps += 1
        self.losses.append(progress.loss)
        now = time.perf_counter()
        if self.steps == 1 or now - self.last >= self.every:
            self.last = now
            peak = ""
            if self.ballast is not None:
                import torch

                peak = f", peak GPU {(torch.cuda.max_memory_allocated() - self.ballast) / 2**20:,.0f} MiB"
            line = f"progress: {now - self.start:7.1f} s, {self.steps} steps{peak}"
            print(line, file=sys.stderr, flush=True)


class Timeline:
    """``absorb_many``'s step reports as a timeline: how many memory steps had run after how many seconds
    (reports arrive when the losses are read, every few steps on CUDA). With ``profile`` it also runs
    torch.profiler over the reports from the ``profile[0]``-th memory step to the ``profile[1]``-th."""

    def __init__(self, profile: tuple[int, int] | None, device_type: str) -> None:
        self.start = time.perf_counter()
        self.points: list[tuple[float, int, int]] = []
        self.done = 0
        self.running: set[int] = set()
        self.profile = profile
        self._profiler = profiler(profile is not None, device_type)
        self._state = "waiting"
        self._ticker = Ticker()

    def __call__(self, progress) -> None:
        self._ticker(progress)
        self.done += 1
        if progress.step == progress.total_steps:
            self.running.discard(progress.memory)
        else:
            self.running.add(progress.memory)
        now = round(time.perf_counter() - self.start, 2)
        if self.points and self.points[-1][0] == now:
            self.points[-1] = (now, self.done, len(self.running))
        else:
            self.points.append((now, self.done, len(self.running)))
        if self.profile is None:
            return
        if self._state == "waiting" and self.done >= self.profile[0]:
            self._state = "profiling"
            self._profiler.__enter__()
        elif self._state == "profiling" and self.done >= self.profile[1]:
            self.finish()

    def finish(self) -> None:
        """Stop a profile still running (a run shorter than its window) and print it."""
        if self._state == "profiling":
            self._state = "profiled"
            print(f"profiled memory steps {self.profile[0]} to {self.done}:", file=sys.stderr, flush=True)
            self._profiler.__exit__(None, None, None)


def profiler(enabled: bool, device_type: str):
    """torch.profiler around one absorption, its busiest kernels printed at the end."""
    if not enabled:
        return contextlib.nullcontext()
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device_type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    @contextlib.contextmanager
    def run():
        start = time.perf_counter()
        with torch.profiler.profile(activities=activities) as prof:
            yield
        wall_us = (time.perf_counter() - start) * 1e6
        averages = prof.key_averages()
        key = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
        # On stderr, which reaches the terminal as the case runs: a run cut off later keeps its profile.
        print(
            averages.table(sort_by=key, row_limit=40, max_name_column_width=70), file=sys.stderr, flush=True
        )
        if device_type == "cuda":  # kernels' total time against the wall: how busy the GPU was
            kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
            busy = sum(e.self_device_time_total for e in kernels)
            print(
                f"GPU kernels {busy / 1e6:.2f} s of {wall_us / 1e6:.2f} s profiled",
                file=sys.stderr,
                flush=True,
            )

    return run()


COMPILE_PHASES = (
    "_compile.compile_inner",
    "bytecode_tracing",
    "OutputGraph.call_user_compiler",
    "aot_trace_joint_graph",
    "AOTAutogradCache.inductor_load",
    "compile_file",
    "async_compile.wait",
    "build_guards",
)
"""The phases of ``torch.compile`` that ``compile_report`` shows: tracing (Dynamo), the joint
forward/backward graph (AOT autograd), inductor's code generation and what its caches load instead."""


def compile_report() -> str:
    """Where this process's ``torch.compile`` time went so far, and what the disk caches saved: graphs
    compiled, cache hits and misses, and seconds per phase (a cold start with a warm cache should show
    hits and little code generation)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    found = {
        name: value
        for group in ("stats", "inductor", "aot_autograd")
        for name, value in counters[group].items()
        if name in ("unique_graphs", "calls_captured") or "cache" in name
    }
    seconds = {
        name: round(sum(compilation_time_metrics[name]), 2)
        for name in COMPILE_PHASES
        if name in compilation_time_metrics
    }
    return f"compile: {found} seconds {seconds}"
