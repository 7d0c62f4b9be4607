"""How the benchmarks time things: warm up, then interleaved rounds, then medians and quartiles."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

# wall: elapsed time, what a user waits for. cpu: the CPU time of this process, which leaves out the
# time it waited for a core on a machine shared with other jobs (an estimate of the time on an idle
# core); it adds up the time of all threads, so it is meaningful with one thread and on the CPU only.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def summarize(times_s) -> dict:
    """Median, quartiles, interquartile range and minimum of a list of times, in milliseconds."""
    ms = sorted(t * 1e3 for t in times_s)
    if len(ms) == 1:
        q25 = q75 = ms[0]
    else:
        q25, _, q75 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median_ms": statistics.median(ms), "q25_ms": q25, "q75_ms": q75,
            "iqr_ms": q75 - q25, "min_ms": ms[0], "n": len(ms)}


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """What to call before reading a clock: a GPU runs asynchronously, so wait for its queued work."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_interleaved(fns: dict, repeats: int, warmup: int, min_block_s: float = 0.0,
                     device: str = "cpu", clock: str = "wall", settle: int = 0,
                     now: Callable[[], float] | None = None) -> dict:
    """Time each callable of ``fns`` (key -> callable) ``repeats`` times, in interleaved rounds.

    Each callable is called ``warmup`` times first (at least once). Then ``inner``, the number of calls
    per timed block, is chosen per callable so that one block lasts at least ``min_block_s``: fast
    operations need many calls per block for the clock to resolve them. Each round times one block of
    every callable in turn, so that a burst of load from other jobs slows all of them alike rather than
    whichever ran at that moment. Each block is preceded by ``settle`` untimed calls, which bring the
    callable's weights back into the caches after the others pushed them out (steady-state timing, as
    when one model serves request after request).

    Returns key -> list of seconds per call, one per round. ``now`` replaces the clock (tests pass a
    fake one); on a GPU, every reading of the clock waits for the queued work first.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and torch.device(device).type != "cpu":
        raise ValueError("clock='cpu' cannot see time spent on a GPU: use clock='wall'")
    now = now or CLOCKS[clock]
    sync = synchronizer(device)

    def read():
        sync()
        return now()

    inner = {}
    for key, fn in fns.items():
        for _ in range(max(warmup, 1)):
            fn()
        start = read()
        fn()
        once = max(read() - start, 1e-7)
        inner[key] = max(1, math.ceil(min_block_s / once))
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            for _ in range(settle):
                fn()
            start = read()
            for _ in range(inner[key]):
                fn()
            times[key].append((read() - start) / inner[key])
    return times
