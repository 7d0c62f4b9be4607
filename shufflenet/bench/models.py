"""Latency (batch 1) and throughput (a larger batch) of ShuffleNet V1 and torchvision networks."""

from __future__ import annotations

import copy
import time

import torch

from ..complexity import count_macs, count_params
from .forms import FORMS, MODELS, build_model, max_abs_diff, prepare
from .timing import summarize, synchronizer, time_interleaved

# torch.compile on a CPU takes tens of seconds per network and input shape, so by default only the
# networks the book compares head to head are compiled.
COMPILED_BY_DEFAULT = ("shufflenet_v1_g3_x1_0", "shufflenet_v1_g3_x1_0_noshuffle", "shufflenet_v2_x1_0")


def _first_calls(model, inputs, device) -> float:
    """Seconds of the first call at each input shape: for a compiled model, the compilation."""
    sync = synchronizer(device)
    start = time.perf_counter()
    for x in inputs:
        model(x)
    sync()
    return time.perf_counter() - start


def run_models(models=tuple(MODELS), forms=("eager", "channels_last", "compile"),
               compile_models=COMPILED_BY_DEFAULT, devices=("cpu",), batch: int = 16,
               size: int = 224, repeats: int = 15, warmup: int = 3, seed: int = 0,
               clock: str = "wall") -> list:
    """One row per (device, network, form): multiply-adds, parameters, latency and throughput.

    Multiply-adds are counted by :func:`shufflenet.count_macs` with the classifier included, so that
    every network is counted alike. Each form's output is checked against eager (``max_abs_diff``).
    ``compile_models`` (or ``"all"``) lists the networks run in the compiled forms. The batch-1 and
    batch-``batch`` calls of every network and form are timed in the same interleaved rounds, each
    block after one settling call (see :func:`time_interleaved`), under ``torch.inference_mode()``.
    """
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    for form in forms:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    compiled = set(MODELS) if compile_models == "all" or "all" in compile_models else set(compile_models)
    rows = []
    for device in devices:
        generator = torch.Generator().manual_seed(seed)
        x1 = torch.randn(1, 3, size, size, generator=generator).to(device)
        xb = torch.randn(batch, 3, size, size, generator=generator).to(device)
        fns = {}
        for name in models:
            base = build_model(name, seed).to(device)
            macs, params = count_macs(base, size, exclude_classifier=False), count_params(base)
            with torch.inference_mode():
                reference = base(x1)
            for form in forms:
                if FORMS[form]["inductor"] is not None and name not in compiled:
                    continue
                model, memory_format = prepare(copy.deepcopy(base), form)
                one, many = (x.contiguous(memory_format=memory_format) for x in (x1, xb))
                with torch.inference_mode():
                    first_s = _first_calls(model, (one, many), device)
                    diff = max_abs_diff(model(one), reference)
                rows.append({"model": name, "device": str(device), "form": form, "macs": macs,
                             "params": params, "mmacs": round(macs / 1e6, 1),
                             "mparams": round(params / 1e6, 2), "batch": batch, "size": size,
                             "compile_s": round(first_s, 2) if FORMS[form]["inductor"] else None,
                             "max_abs_diff_vs_eager": diff})
                fns[(len(rows) - 1, "latency")] = lambda m=model, x=one: m(x)
                fns[(len(rows) - 1, "throughput")] = lambda m=model, x=many: m(x)
        with torch.inference_mode():
            times = time_interleaved(fns, repeats, warmup, device=device, clock=clock, settle=1)
        for (index, what), seconds in times.items():
            stats = summarize(seconds)
            if what == "latency":
                rows[index].update({f"latency_{k}": round(v, 3) if k != "n" else v
                                    for k, v in stats.items()})
            else:
                rows[index].update({"throughput_median": round(batch / stats["median_ms"] * 1e3, 1),
                                    "throughput_q25": round(batch / stats["q75_ms"] * 1e3, 1),
                                    "throughput_q75": round(batch / stats["q25_ms"] * 1e3, 1),
                                    "batch_median_ms": round(stats["median_ms"], 3)})
    return rows
