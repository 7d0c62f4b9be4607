"""Is ShuffleNet fast? Benchmarks that measure speed next to multiply-adds (the book's Chapter 6).

Run ``python -m shufflenet.bench --help`` for the sub-commands and ``python -m shufflenet.bench NAME --help``
for the options of one:

* ``models`` (the default when no sub-command is given): latency at batch 1 and throughput at a larger
  batch of ShuffleNet V1 and four torchvision networks, each in eager, ``channels_last`` and
  ``torch.compile`` forms, under ``torch.inference_mode()``;
* ``shuffle``: :func:`shufflenet.channel_shuffle` against a plain ``clone()`` of the same tensor (the
  memory-copy limit) and against ``torch.nn.ChannelShuffle``;
* ``g2``: ShuffleNet V2's guideline G2 (Ma et al., 2018, Table 2): ten stacked 1x1 group convolutions
  whose FLOPs are held fixed by widening the channels as the number of groups grows;
* ``profile``: where the time of one forward pass goes, grouped by operator type (``torch.profiler``).

How it measures: every configuration is warmed up first, then the configurations are timed in
interleaved rounds (one block of calls of each per round), so that a change of load on a shared machine
hits all of them alike rather than whichever happened to run at that moment. Each sub-command prints a
table of medians and interquartile ranges (IQR) and, with ``--out DIR``, writes ``DIR/NAME.json`` (the
results with the machine they came from: CPU model, core count, threads, torch version, load average)
and ``DIR/NAME.csv`` (one row per result).

A new sub-command is one call to :func:`register`; see the ``Subcommand`` class.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._checks import positive_float_arg, positive_int_arg
from .conv import conv1x1
from .model import shufflenet_v1
from .shuffle import channel_shuffle
from .runtime import cpu_model_name

# ----------------------------------------------------------------------------------------------------
# Timing


def summarize(times_s) -> dict:
    """Median, quartiles, interquartile range and minimum of a list of times, in milliseconds."""
    ms = sorted(t * 1e3 for t in times_s)
    if len(ms) == 1:
        q25 = q75 = ms[0]
    else:
        q25, _, q75 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median_ms": statistics.median(ms), "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25,
            "min_ms": ms[0], "n": len(ms)}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_interleaved(fns: dict, repeats: int, warmup: int, min_block_s: float = 0.0,
                     synchronize: Callable[[], None] | None = None, clock: str = "wall", settle: int = 0) -> dict:
    """Time each callable of ``fns`` (key -> callable) ``repeats`` times, in interleaved rounds.

    Each callable is called ``warmup`` times first. Then ``inner``, the number of calls per timed block,
    is chosen per callable so that one block lasts at least ``min_block_s`` (fast operations need many
    calls per block for the clock to resolve them). Each round times one block of every callable in
    turn, each block preceded by ``settle`` untimed calls, which bring the callable's weights back into
    the caches after the other callables of the round have pushed them out (steady-state timing, as when
    one model serves request after request). Returns key -> list of seconds per call, one per round.

    ``clock="wall"`` measures elapsed time (``time.perf_counter``), what a user waits for.
    ``clock="cpu"`` measures the CPU time of this process (``time.process_time``): on a machine shared with
    other jobs it leaves out the time the process waited for a core, so it estimates the time on an idle
    machine; it is meaningful for one thread only (it adds up the time of all threads) and for the CPU only.
    """
    sync = synchronize or (lambda: None)
    now = CLOCKS[clock]
    inner = {}
    for key, fn in fns.items():
        for _ in range(max(warmup, 1)):
            fn()
        sync()
        start = now()
        fn()
        sync()
        once = max(now() - start, 1e-7)
        inner[key] = max(1, math.ceil(min_block_s / once))
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            n = inner[key]
            for _ in range(settle):
                fn()
            sync()
            start = now()
            for _ in range(n):
                fn()
            sync()
            times[key].append((now() - start) / n)
    return times


def _cuda_sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


# ----------------------------------------------------------------------------------------------------
# The machine a result came from


def machine_info() -> dict:
    """What a benchmark result depends on: the CPU, the threads, the library versions, the load."""
    import torchvision

    info = {
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def load_caveat(before: dict, after: dict, clock: str = "wall") -> str | None:
    """A warning to store with the results when other processes were competing for the CPU."""
    loads = [m.get("load_average_1min") for m in (before, after) if m.get("load_average_1min") is not None]
    cores = before.get("cpu_count") or 1
    if loads and max(loads) > 0.5 * cores:
        how = ("CPU time leaves out the waits for a core but not the slowdown from caches and memory shared "
               "with the other jobs" if clock == "cpu" else "wall-clock time includes the waits for a core")
        return (f"measured on a shared machine: 1-minute load average {min(loads):.1f} to {max(loads):.1f} "
                f"on {cores} cores ({how}), so absolute times are noisy; compare configurations within this "
                f"run (they were timed in interleaved rounds) rather than across runs")
    return None


# ----------------------------------------------------------------------------------------------------
# Writing results


def format_table(rows: list, columns: list) -> str:
    """``columns`` is a list of (header, key, format spec); returns an aligned text table."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], spec) for _, k, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for index, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(out_dir, name: str, payload: dict) -> tuple:
    """Write ``payload`` to ``out_dir/name.json`` and its ``results`` rows to ``out_dir/name.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    rows = payload["results"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def _finish(args, name: str, settings: dict, rows: list, machine_before: dict, table: str, extra=None) -> dict:
    machine = machine_info()
    settings = {**settings, "clock": args.clock, "threads": torch.get_num_threads()}
    payload = {
        "benchmark": name,
        "command": "python -m shufflenet.bench " + " ".join(args.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_before,
        "load_average_1min_after": machine.get("load_average_1min"),
        "caveat": load_caveat(machine_before, machine, args.clock),
        "settings": settings,
        "results": rows,
    }
    if extra:
        payload.update(extra)
    print(f"# {name}: {machine_before['cpu_model']}, {machine_before['cpu_count']} cores, "
          f"{machine_before['torch_threads']} torch threads, torch {machine_before['torch']}")
    print(table)
    if payload["caveat"]:
        print("# caveat:", payload["caveat"])
    if args.out:
        for path in write_results(args.out, args.name or name, payload):
            print(f"# wrote {path}")
    return payload


# ----------------------------------------------------------------------------------------------------
# Models


def _shufflenet_v1_builder(groups: int, scale: float):
    return lambda: shufflenet_v1(groups=groups, scale=scale)


def _torchvision_builder(name: str):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


MODELS = {}
for _g in (1, 3, 8):
    for _s in (0.5, 1.0):
        MODELS[f"shufflenet_v1_g{_g}_x{_s:.1f}".replace(".", "_")] = _shufflenet_v1_builder(_g, _s)
for _name in ("shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_small", "resnet18"):
    MODELS[_name] = _torchvision_builder(_name)
del _g, _s, _name
# ShuffleNet 1x (g = 3) without its channel shuffles (Table 3's ablation): its time, subtracted from the
# full model's in the same form, is what the shuffles cost inside the network.
MODELS["shufflenet_v1_g3_x1_0_noshuffle"] = lambda: shufflenet_v1(groups=3, scale=1.0, shuffle=False)

# torch.compile on a CPU takes tens of seconds per model and shape, so by default only the models the
# book compares head to head are compiled; `--compile-models all` compiles every selected model.
DEFAULT_COMPILE_MODELS = ("shufflenet_v1_g3_x1_0", "shufflenet_v1_g3_x1_0_noshuffle", "shufflenet_v2_x1_0")

# eager: the model as built (NCHW); channels_last: weights and inputs stored NHWC; compile: torch.compile
# (Inductor) of the channels_last model with freezing, which treats the weights as constants (folds each
# BatchNorm into its convolution, pre-packs the weights for oneDNN); compile_no_freezing: the same without
# freezing, to show what freezing adds.
FORMS = ("eager", "channels_last", "compile", "compile_no_freezing")
COMPILE_OPTIONS = {"compile": {"freezing": True}, "compile_no_freezing": {"freezing": False}}
DEFAULT_FORMS = ("eager", "channels_last", "compile")


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised (untrained, ``weights=None``) model of :data:`MODELS`, in eval mode."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[name]().eval()


def count_macs_total(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-adds of one forward pass at ``input_size``, classifier included, for any network.

    The same counter as :func:`shufflenet.count_macs` (``FlopCounterMode``: convolutions and matrix
    products), but keeping the classifier, so that every model of the benchmark is counted alike.
    """
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    return counter.get_total_flops() // 2


def prepare(model: nn.Module, form: str = "compile"):
    """Turn an eval-mode ``model`` into one of the benchmark's :data:`FORMS`; returns (callable, memory format).

    Feed the callable inputs in the returned memory format: ``x.contiguous(memory_format=...)``.

    * ``channels_last`` stores weights and activations as NHWC, the layout oneDNN's CPU convolutions work
      in, so that they need no conversion on the way in and out, and pooling runs vectorised.
    * ``compile`` wraps the channels_last model in ``torch.compile`` (Inductor) with ``freezing``: the
      weights become constants, each BatchNorm is folded into its convolution, the convolutions are
      pre-packed for oneDNN and fused with the ReLU after them, and the element-wise operations (adds,
      ReLUs, the channel shuffle, concatenations) become generated C++ loops. Only for inference: a
      frozen model cannot be trained. ``compile_no_freezing`` leaves the weights as parameters.

    The model is modified in place (``.to(memory_format=...)``): pass a copy to keep the original.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    memory_format = torch.contiguous_format if form == "eager" else torch.channels_last
    model = model.eval().to(memory_format=memory_format)
    if form in COMPILE_OPTIONS:
        model = CompiledModel(model, COMPILE_OPTIONS[form])
    return model, memory_format


class CompiledModel:
    """``torch.compile(model)`` whose compilations run under the given Inductor settings (``freezing``).

    ``torch.compile`` compiles lazily, at the first call with each new input shape, and Inductor reads
    ``freezing`` from its global configuration at that moment (in torch 2.14, passing it through
    ``torch.compile(options=...)`` does not turn it on), so each first call runs inside
    ``torch._inductor.config.patch``; later calls go straight to the compiled code. Call it under
    ``torch.inference_mode()`` or ``torch.no_grad()``: freezing applies only without autograd.
    """

    def __init__(self, model: nn.Module, inductor_config: dict):
        self.compiled = torch.compile(model, dynamic=False)
        self.inductor_config = dict(inductor_config)
        self._seen = set()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.device, x.dtype)
        if key in self._seen:
            return self.compiled(x)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(self.inductor_config):
            out = self.compiled(x)
        self._seen.add(key)
        return out


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _inductor_cache_is_empty():
    """Whether Inductor's on-disk cache holds no compiled code yet (then compile times are cold-start times)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        path = Path(cache_dir())
        return not path.exists() or not any(path.iterdir())
    except Exception:  # a private API: no answer rather than a failed benchmark
        return None


def run_models(args) -> dict:
    machine_before = machine_info()
    cache_was_empty = _inductor_cache_is_empty()
    compile_models = set(MODELS if "all" in args.compile_models else args.compile_models)
    # Every ShuffleNetV1 shares one forward(), so Dynamo counts each model, shape and form as a recompile
    # of the same code: raise its limit so that none falls back to eager silently.
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 256))
    configs, rows = {}, []
    with torch.inference_mode():
        for device in args.devices:
            generator = torch.Generator().manual_seed(args.seed)
            x1 = torch.randn(1, 3, args.size, args.size, generator=generator).to(device)
            xb = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
            for name in args.models:
                base = build_model(name, args.seed).to(device)
                macs = count_macs_total(base, args.size)
                params = sum(p.numel() for p in base.parameters())
                reference = base(x1)
                for form in args.forms:
                    if form in COMPILE_OPTIONS and name not in compile_models:
                        continue
                    model, memory_format = prepare(copy.deepcopy(base), form)
                    inputs = (x1.contiguous(memory_format=memory_format),
                              xb.contiguous(memory_format=memory_format))
                    # The first call of a compiled model compiles it (once per input shape): timed apart.
                    start = time.perf_counter()
                    out = model(inputs[0])
                    model(inputs[1])
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    first_call_s = time.perf_counter() - start
                    row = {"model": name, "device": device, "form": form, "macs": macs, "params": params,
                           "batch": args.batch, "size": args.size,
                           "compile_s": round(first_call_s, 2) if form in COMPILE_OPTIONS else None,
                           "max_abs_diff_vs_eager": _max_abs_diff(out, reference)}
                    rows.append(row)
                    configs[len(rows) - 1] = (model, inputs, device)
            # Time each device on its own, batch 1 (latency) and the larger batch (throughput) as
            # separate entries so that both are interleaved across all models and forms.
            fns = {}
            for index, (model, inputs, dev) in configs.items():
                if dev == device:
                    fns[(index, 1)] = (lambda m=model, x=inputs[0]: m(x))
                    fns[(index, args.batch)] = (lambda m=model, x=inputs[1]: m(x))
            times = time_interleaved(fns, args.repeats, args.warmup, synchronize=_cuda_sync(device), clock=args.clock,
                                     settle=1)
            for (index, batch), t in times.items():
                stats = summarize(t)
                row = rows[index]
                if batch == 1:
                    row.update({f"latency_{k}": round(v, 3) if k != "n" else v for k, v in stats.items()})
                else:
                    row["throughput_median"] = round(batch / stats["median_ms"] * 1e3, 1)
                    row["throughput_q25"] = round(batch / stats["q75_ms"] * 1e3, 1)
                    row["throughput_q75"] = round(batch / stats["q25_ms"] * 1e3, 1)
                    row["batch_median_ms"] = round(stats["median_ms"], 3)
            configs = {}
    for row in rows:
        row["mmacs"] = round(row["macs"] / 1e6, 1)
        row["mparams"] = round(row["params"] / 1e6, 2)
    columns = [("model", "model", ""), ("device", "device", ""), ("form", "form", ""), ("MMACs", "mmacs", ".0f"),
               ("params M", "mparams", ".2f"), ("latency ms", "latency_median_ms", ".2f"),
               ("IQR ms", "latency_iqr_ms", ".2f"), (f"img/s @{args.batch}", "throughput_median", ".1f"),
               ("compile s", "compile_s", ".1f")]
    settings = {"models": args.models, "forms": args.forms, "devices": args.devices, "batch": args.batch,
                "inductor_cache_was_empty": cache_was_empty,
                "size": args.size, "repeats": args.repeats, "warmup": args.warmup, "settle_calls": 1, "seed": args.seed,
                "compile_models": sorted(compile_models & set(args.models)), "inference_mode": True}
    return _finish(args, "models", settings, rows, machine_before, format_table(rows, columns),
                   extra={"best": best_forms(rows)})


def best_forms(rows: list) -> dict:
    """model -> device -> the form with the lowest median batch-1 latency and that latency."""
    best = {}
    for row in rows:
        if row.get("latency_median_ms") is None:
            continue
        current = best.setdefault(row["model"], {}).get(row["device"])
        if current is None or row["latency_median_ms"] < current["latency_median_ms"]:
            best[row["model"]][row["device"]] = {"form": row["form"], "latency_median_ms": row["latency_median_ms"]}
    return best


# ----------------------------------------------------------------------------------------------------
# Channel shuffle against a copy

# The bottleneck tensors the shuffle sees in ShuffleNet 1x (g = 3) at 224x224: Stages 2, 3 and 4.
DEFAULT_SHUFFLE_SHAPES = ("60x28x28", "120x14x14", "240x7x7")


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse (Linux only); returns whether it could.

    By default glibc hands blocks above 128 KiB back to the operating system when they are freed, so the
    next allocation of a copy's output starts with fresh pages, and the page faults that fill them cost
    about as much as the copy itself, varying from call to call. Raising the mmap and trim thresholds to
    1 GiB keeps freed blocks in the process: each call then measures the copy, not the page faults. It
    affects the whole process, so the ``shuffle`` sub-command calls it only when it runs.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, one_gib = -1, -3, 1 << 30
        return bool(libc.mallopt(m_mmap_threshold, one_gib)) and bool(libc.mallopt(m_trim_threshold, one_gib))
    except (OSError, AttributeError):
        return False


def run_shuffle(args) -> dict:
    machine_before = machine_info()
    memory_kept = keep_freed_memory()
    native = nn.ChannelShuffle(args.groups)
    generator = torch.Generator().manual_seed(args.seed)
    cases, fns = [], {}
    for device in args.devices:
        for shape in args.shapes:
            c, h, w = shape
            if c % args.groups:
                raise SystemExit(f"error: --groups {args.groups} does not divide the {c} channels of shape {shape}")
            for batch in args.batches:
                for layout in args.layouts:
                    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                    x = torch.randn(batch, c, h, w, generator=generator).to(device, memory_format=memory_format)
                    expected = native(x)
                    got = channel_shuffle(x, args.groups)
                    assert torch.equal(got, expected), "channel_shuffle disagrees with nn.ChannelShuffle"
                    case = {"device": device, "batch": batch, "channels": c, "height": h, "width": w,
                            "layout": layout, "groups": args.groups, "megabytes": round(x.numel() * x.element_size() / 2**20, 3),
                            "output_keeps_layout": got.is_contiguous(memory_format=memory_format)}
                    cases.append(case)
                    index = len(cases) - 1
                    fns[(index, "clone")] = lambda x=x: x.clone()
                    fns[(index, "channel_shuffle")] = lambda x=x: channel_shuffle(x, args.groups)
                    fns[(index, "nn.ChannelShuffle")] = lambda x=x: native(x)
    with torch.inference_mode():
        times = {}
        for device in args.devices:
            own = {k: f for k, f in fns.items() if cases[k[0]]["device"] == device}
            times.update(time_interleaved(own, args.repeats, args.warmup, min_block_s=args.min_block_ms / 1e3,
                                          synchronize=_cuda_sync(device), clock=args.clock))
    for (index, what), t in times.items():
        stats = summarize(t)
        key = {"clone": "clone", "channel_shuffle": "shuffle", "nn.ChannelShuffle": "native"}[what]
        cases[index][f"{key}_us"] = round(stats["median_ms"] * 1e3, 2)
        cases[index][f"{key}_iqr_us"] = round(stats["iqr_ms"] * 1e3, 2)
    for case in cases:
        case["shuffle_over_clone"] = round(case["shuffle_us"] / case["clone_us"], 3)
        case["native_over_clone"] = round(case["native_us"] / case["clone_us"], 3)
    columns = [("device", "device", ""), ("batch", "batch", "d"), ("C", "channels", "d"), ("HxW", "hw", ""),
               ("layout", "layout", ""), ("clone us", "clone_us", ".1f"), ("shuffle us", "shuffle_us", ".1f"),
               ("nn.ChannelShuffle us", "native_us", ".1f"), ("shuffle/clone", "shuffle_over_clone", ".2f"),
               ("native/clone", "native_over_clone", ".2f"), ("keeps layout", "output_keeps_layout", "")]
    shown = [dict(case, hw=f"{case['height']}x{case['width']}") for case in cases]
    settings = {"shapes": [list(s) for s in args.shapes], "batches": args.batches, "layouts": args.layouts,
                "groups": args.groups, "devices": args.devices, "repeats": args.repeats, "warmup": args.warmup,
                "min_block_ms": args.min_block_ms, "freed_memory_kept_for_reuse": memory_kept}
    return _finish(args, "shuffle", settings, cases, machine_before, format_table(shown, columns))


# ----------------------------------------------------------------------------------------------------
# ShuffleNet V2's guideline G2: group convolutions at equal FLOPs


def g2_channels(base_channels: int, groups: int) -> int:
    """Channels that keep ``h * w * c * c / g`` (the FLOPs of a 1x1 group conv) at the ``g = 1`` value.

    ``c`` is the largest multiple of ``g`` (so that the groups split it evenly) not above
    ``base * sqrt(g)``. For a base of 128 this gives the widths of ShuffleNet V2's Table 2, 128, 180,
    256 and 360 for g = 1, 2, 4, 8; rounding down never gives a larger ``g`` more FLOPs than ``g = 1``.
    """
    return max(groups, math.floor(base_channels * math.sqrt(groups) / groups + 1e-9) * groups)


def g2_network(channels: int, groups: int, depth: int = 10) -> nn.Sequential:
    """``depth`` stacked 1x1 convolutions with ``groups`` groups, ``channels`` in and out (no BN, no ReLU)."""
    return nn.Sequential(*[conv1x1(channels, channels, groups) for _ in range(depth)]).eval()


def run_g2(args) -> dict:
    machine_before = machine_info()
    torch.manual_seed(args.seed)
    rows, fns = [], {}
    with torch.inference_mode():
        for device in args.devices:
            for base in args.base_channels:
                for g in args.groups:
                    c = g2_channels(base, g)
                    for layout in args.layouts:
                        memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                        net = g2_network(c, g, args.depth).to(device, memory_format=memory_format)
                        x = torch.randn(args.batch, c, args.size, args.size).to(device, memory_format=memory_format)
                        macs = args.depth * args.size * args.size * c * c // g
                        rows.append({"device": device, "base_channels": base, "groups": g, "channels": c,
                                     "layout": layout, "batch": args.batch, "size": args.size, "depth": args.depth,
                                     "macs_per_image": macs})
                        fns[len(rows) - 1] = lambda net=net, x=x: net(x)
        times = {}
        for device in args.devices:
            own = {k: f for k, f in fns.items() if rows[k]["device"] == device}
            times.update(time_interleaved(own, args.repeats, args.warmup, min_block_s=args.min_block_ms / 1e3,
                                          synchronize=_cuda_sync(device), clock=args.clock))
    for index, t in times.items():
        stats = summarize(t)
        row = rows[index]
        row["median_ms"] = round(stats["median_ms"], 3)
        row["iqr_ms"] = round(stats["iqr_ms"], 3)
        row["images_per_s"] = round(row["batch"] / stats["median_ms"] * 1e3, 1)
        row["gmacs_per_s"] = round(row["macs_per_image"] * row["batch"] / stats["median_ms"] / 1e6, 2)
    columns = [("device", "device", ""), ("base", "base_channels", "d"), ("g", "groups", "d"), ("c", "channels", "d"),
               ("layout", "layout", ""), ("MMACs/img", "mmacs", ".1f"), ("ms", "median_ms", ".2f"),
               ("IQR ms", "iqr_ms", ".2f"), ("img/s", "images_per_s", ".1f"), ("GMAC/s", "gmacs_per_s", ".2f")]
    shown = [dict(r, mmacs=r["macs_per_image"] / 1e6) for r in rows]
    settings = {"base_channels": args.base_channels, "groups": args.groups, "layouts": args.layouts,
                "batch": args.batch, "size": args.size, "depth": args.depth, "devices": args.devices,
                "repeats": args.repeats, "warmup": args.warmup}
    return _finish(args, "g2", settings, rows, machine_before, format_table(shown, columns))


# ----------------------------------------------------------------------------------------------------
# Where the time goes

# What a forward pass calls from Python (the top-level operators), grouped into the kinds of layer they are.
OP_CATEGORIES = {
    "convolution": ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution"),
    "batch norm": ("aten::batch_norm", "aten::native_batch_norm"),
    "activation": ("aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_", "aten::hardswish",
                   "aten::hardswish_", "aten::hardsigmoid", "aten::hardsigmoid_", "aten::hardtanh", "aten::hardtanh_",
                   "aten::silu", "aten::silu_", "aten::sigmoid"),
    "add": ("aten::add", "aten::add_"),
    "concatenate": ("aten::cat",),
    "pooling": ("aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::mean"),
    "classifier": ("aten::linear", "aten::addmm"),
}
SHUFFLE_LABEL = "shufflenet::channel_shuffle"
# Copies that re-lay a tensor out in memory (NCHW <-> channels_last) inside another operator.
LAYOUT_COPY_OPS = ("aten::copy_",)


def op_category(name: str) -> str:
    """The kind of layer a top-level operator belongs to (``other`` for views, reshapes and the rest)."""
    if name == SHUFFLE_LABEL:
        return "channel shuffle"
    for category, names in OP_CATEGORIES.items():
        if name in names:
            return category
    return "other"


class _RecordShuffle:
    """Label the package's channel shuffle in the profile: the ShuffleUnit calls it as ``unit.channel_shuffle``."""

    def __enter__(self):
        from . import unit

        self._unit, self._original = unit, unit.channel_shuffle

        def recorded(x, groups):
            with torch.profiler.record_function(SHUFFLE_LABEL):
                return self._original(x, groups)
        unit.channel_shuffle = recorded
        return self

    def __exit__(self, *exc):
        self._unit.channel_shuffle = self._original


def _descendants(event):
    for child in event.cpu_children:
        yield child
        yield from _descendants(child)


def profile_model(model: nn.Module, x: torch.Tensor, iterations: int = 5, warmup: int = 2) -> list:
    """CPU time of one forward pass (mean over ``iterations``) by kind of layer, largest first.

    Each operator the model calls from Python (``conv2d``, ``batch_norm``, ``relu``, ``cat``, ... and the
    package's channel shuffle, labelled as one) is charged with its whole time, including the operators
    it calls in turn, except that memory-layout copies made inside another operator (``copy_``, e.g. a
    convolution turning an NCHW input into channels_last) are charged to ``layout copies``. The
    categories add up to the profiled forward pass, profiler overhead included.
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), _RecordShuffle():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                model(x)
    totals = {}
    for event in prof.events():
        if event.cpu_parent is not None:
            continue
        category = op_category(event.name)
        copies = 0.0
        if category != "channel shuffle":
            copies = sum(child.self_cpu_time_total for child in _descendants(event) if child.name in LAYOUT_COPY_OPS)
        totals[category] = totals.get(category, 0.0) + event.cpu_time_total - copies
        if copies:
            totals["layout copies"] = totals.get("layout copies", 0.0) + copies
    total = sum(totals.values())
    return [{"category": cat, "ms_per_forward": round(us / iterations / 1e3, 3), "percent": round(100 * us / total, 1)}
            for cat, us in sorted(totals.items(), key=lambda kv: -kv[1])]


def run_profile(args) -> dict:
    machine_before = machine_info()
    rows = []
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    for form in args.forms:
        model, memory_format = prepare(build_model(args.model, args.seed), form)
        for row in profile_model(model, x.contiguous(memory_format=memory_format), args.iterations, args.warmup):
            rows.append({"model": args.model, "form": form, "batch": args.batch, "size": args.size, **row})
    columns = [("form", "form", ""), ("category", "category", ""), ("ms/forward", "ms_per_forward", ".3f"),
               ("%", "percent", ".1f")]
    settings = {"model": args.model, "forms": args.forms, "batch": args.batch, "size": args.size,
                "iterations": args.iterations, "warmup": args.warmup}
    return _finish(args, "profile", settings, rows, machine_before, format_table(rows, columns))


# ----------------------------------------------------------------------------------------------------
# Deployment


def export_and_check(model: nn.Module, example: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4):
    """Export ``model`` with ``torch.export.export`` and check it against eager on ``example``.

    Returns ``(exported_program, max_abs_diff)``; raises ``AssertionError`` when an output differs from
    eager by more than ``atol + rtol * |eager|``. The exported program holds the weights and a graph of
    ATen operators with no Python left in it: what a deployment runtime (AOTInductor, ExecuTorch) takes.
    """
    model = model.eval()
    with torch.inference_mode():
        expected = model(example)
    exported = torch.export.export(model, (example,))
    with torch.inference_mode():
        got = exported.module()(example)
    diff = _max_abs_diff(got, expected)
    assert torch.allclose(got, expected, atol=atol, rtol=rtol), f"exported model differs from eager by {diff:.3g}"
    return exported, diff


# ----------------------------------------------------------------------------------------------------
# Command line


@dataclass
class Subcommand:
    """A benchmark of the command line: ``add_arguments(parser)`` declares its options, ``run(args)`` runs it.

    ``defaults`` are the options' values; ``quick`` overrides some of them under ``--quick`` (only those
    the user did not set). ``run`` returns the payload it wrote (a dict).
    """
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    defaults: dict
    quick: dict


SUBCOMMANDS: dict = {}
DEFAULT_SUBCOMMAND = "models"


def register(subcommand: Subcommand) -> Subcommand:
    """Add a sub-command to ``python -m shufflenet.bench``."""
    if subcommand.name in SUBCOMMANDS:
        raise ValueError(f"sub-command {subcommand.name!r} is already registered")
    SUBCOMMANDS[subcommand.name] = subcommand
    return subcommand


def shape_chw(text: str) -> tuple:
    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape CxHxW such as 60x28x28, got {text!r}")
    return shape


def available_devices() -> list:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _common_arguments(parser: argparse.ArgumentParser, command: "Subcommand") -> None:
    def default(key):
        quick = command.quick.get(key, command.defaults.get(key))
        return f"(default: {command.defaults.get(key)}; with --quick: {quick})"

    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=None,
                        help="devices to measure on (default: cpu, and cuda when available unless --clock cpu)")
    parser.add_argument("--repeats", type=positive_int_arg, default=None,
                        help=f"timed rounds per configuration {default('repeats')}")
    parser.add_argument("--warmup", type=positive_int_arg, default=None,
                        help=f"untimed calls per configuration before timing {default('warmup')}")
    parser.add_argument("--threads", type=positive_int_arg, default=None,
                        help="torch CPU threads (default: torch's own choice, usually one per core)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of the process, which leaves out time spent waiting "
                             "for a core on a busy machine (needs --threads 1; CPU only) (default: wall)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds' run with few repeats and small sizes, for tests and smoke checks")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write DIR/NAME.json and DIR/NAME.csv (default: print the table only)")
    parser.add_argument("--name", default=None, help="file name stem for --out (default: the sub-command's name)")


def _models_arguments(parser):
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None, metavar="MODEL",
                        help=f"models to measure (default: all): {', '.join(MODELS)}")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=None,
                        help="eager (NCHW), channels_last (NHWC weights and inputs), compile (torch.compile of the "
                             "channels_last model with freezing), compile_no_freezing (default: eager channels_last compile)")
    parser.add_argument("--compile-models", nargs="+", choices=list(MODELS) + ["all"], default=None, metavar="MODEL",
                        help="models to run in the compile forms, or 'all' (default: "
                             f"{' '.join(DEFAULT_COMPILE_MODELS)}; compiling takes tens of seconds per model)")
    parser.add_argument("--batch", type=positive_int_arg, default=None, help="batch size of the throughput run (default: 16)")
    parser.add_argument("--size", type=positive_int_arg, default=None, help="image height and width (default: 224)")


def _shuffle_arguments(parser):
    parser.add_argument("--shapes", nargs="+", type=shape_chw, default=None, metavar="CxHxW",
                        help=f"tensor shapes without the batch (default: {' '.join(DEFAULT_SHUFFLE_SHAPES)}, "
                             "the bottlenecks of ShuffleNet 1x g=3 at 224x224)")
    parser.add_argument("--batches", nargs="+", type=positive_int_arg, default=None, help="batch sizes (default: 1 32)")
    parser.add_argument("--layouts", nargs="+", choices=("nchw", "channels_last"), default=None,
                        help="memory layouts of the input (default: both)")
    parser.add_argument("--groups", type=positive_int_arg, default=3, help="shuffle groups (default: 3)")
    parser.add_argument("--min-block-ms", type=positive_float_arg, default=None,
                        help="shortest timed block of calls, in ms (default: 2)")


def _g2_arguments(parser):
    parser.add_argument("--groups", nargs="+", type=positive_int_arg, default=None, help="group counts (default: 1 2 4 8)")
    parser.add_argument("--base-channels", nargs="+", type=positive_int_arg, default=None,
                        help="channels at g = 1, widened by sqrt(g) for the others (default: 64 128)")
    parser.add_argument("--layouts", nargs="+", choices=("nchw", "channels_last"), default=None,
                        help="memory layouts (default: both)")
    parser.add_argument("--batch", type=positive_int_arg, default=None, help="batch size (default: 1)")
    parser.add_argument("--size", type=positive_int_arg, default=None, help="feature map height and width (default: 56)")
    parser.add_argument("--depth", type=positive_int_arg, default=10, help="stacked convolutions (default: 10)")
    parser.add_argument("--min-block-ms", type=positive_float_arg, default=None,
                        help="shortest timed block of calls, in ms (default: 20)")


def _profile_arguments(parser):
    parser.add_argument("--model", choices=list(MODELS), default="shufflenet_v1_g3_x1_0", metavar="MODEL",
                        help="model to profile (default: shufflenet_v1_g3_x1_0)")
    parser.add_argument("--forms", nargs="+", choices=("eager", "channels_last"), default=None,
                        help="forms to profile (default: eager channels_last)")
    parser.add_argument("--batch", type=positive_int_arg, default=None, help="batch size (default: 1)")
    parser.add_argument("--size", type=positive_int_arg, default=None, help="image height and width (default: 224)")
    parser.add_argument("--iterations", type=positive_int_arg, default=None, help="profiled forward passes (default: 10)")


register(Subcommand(
    "models", "latency (batch 1) and throughput (larger batch) of ShuffleNet V1 and torchvision models",
    _models_arguments, run_models,
    defaults={"models": list(MODELS), "forms": list(DEFAULT_FORMS), "compile_models": list(DEFAULT_COMPILE_MODELS),
              "batch": 16, "size": 224, "repeats": 15, "warmup": 3},
    quick={"models": ["shufflenet_v1_g8_x0_5"], "forms": ["eager"], "batch": 2, "size": 64, "repeats": 3,
           "warmup": 1}))
register(Subcommand(
    "shuffle", "channel_shuffle against clone() (the memory-copy limit) and nn.ChannelShuffle",
    _shuffle_arguments, run_shuffle,
    defaults={"shapes": [shape_chw(s) for s in DEFAULT_SHUFFLE_SHAPES], "batches": [1, 32],
              "layouts": ["nchw", "channels_last"], "repeats": 25, "warmup": 3, "min_block_ms": 2.0},
    quick={"shapes": [(24, 8, 8)], "batches": [1], "repeats": 3, "warmup": 1, "min_block_ms": 0.2}))
register(Subcommand(
    "g2", "ShuffleNet V2's guideline G2: ten 1x1 group convolutions at equal FLOPs, g = 1, 2, 4, 8",
    _g2_arguments, run_g2,
    defaults={"groups": [1, 2, 4, 8], "base_channels": [64, 128], "layouts": ["nchw", "channels_last"],
              "batch": 1, "size": 56, "repeats": 15, "warmup": 3, "min_block_ms": 20.0},
    quick={"base_channels": [16], "layouts": ["nchw"], "size": 8, "repeats": 3, "warmup": 1, "min_block_ms": 0.2}))
register(Subcommand(
    "profile", "where the time goes in one forward pass, by operator type (torch.profiler)",
    _profile_arguments, run_profile,
    defaults={"forms": ["eager", "channels_last"], "batch": 1, "size": 224, "iterations": 10, "warmup": 3},
    quick={"forms": ["eager"], "size": 64, "iterations": 2, "warmup": 1}))


def _pipeline_arguments(parser):
    parser.add_argument("--data", default="synthetic", help="cifar10, synthetic or an ImageFolder directory "
                                                            "laid out as train/<class>/* (default: synthetic)")
    parser.add_argument("--groups", type=positive_int_arg, default=3, help="ShuffleNet groups (default: 3)")
    parser.add_argument("--scale", type=positive_float_arg, default=0.25, help="ShuffleNet scale (default: 0.25)")
    parser.add_argument("--batch", type=positive_int_arg, default=None, help="batch size (default: 128)")
    parser.add_argument("--train-steps", type=positive_int_arg, default=None,
                        help="timed training steps per measurement (default: 10)")
    parser.add_argument("--data-steps", type=positive_int_arg, default=None,
                        help="timed batches per measurement of the pipeline alone (default: 40)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: 0)")


def run_pipeline(args) -> dict:
    from .data import benchmark_pipeline

    machine_before = machine_info()
    device = "cuda" if "cuda" in args.devices else "cpu"
    result = benchmark_pipeline(args.data, args.groups, args.scale, args.batch, args.train_steps, args.data_steps,
                                device, args.num_workers, repeats=args.repeats, warmup=args.warmup)
    rows = [{"measure": measure, "fast_ips": round(result[f"fast_{key}_ips"], 1),
             "dataloader_ips": round(result[f"dataloader_{key}_ips"], 1), "ratio": round(result[f"{key}_ratio"], 3)}
            for measure, key in (("pipeline alone", "data"), ("with training step", "train"))]
    table = format_table(rows, [("", "measure", ""), ("fast path img/s", "fast_ips", ".0f"),
                                ("DataLoader img/s", "dataloader_ips", ".0f"), ("ratio", "ratio", ".2f")])
    settings = {key: result[key] for key in ("data", "device", "num_workers", "batch_size", "model", "train_steps",
                                             "data_steps", "warmup", "repeats")}
    return _finish(args, "pipeline", settings, rows, machine_before, table, extra={"pipeline": result})


register(Subcommand(
    "pipeline", "images/s of the fast on-device data path against the per-image DataLoader path (Chapter 5)",
    _pipeline_arguments, run_pipeline,
    defaults={"batch": 128, "train_steps": 10, "data_steps": 40, "repeats": 3, "warmup": 2},
    quick={"batch": 16, "train_steps": 1, "data_steps": 2, "repeats": 1, "warmup": 1}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shufflenet.bench",
        description="Measure how fast ShuffleNet runs, next to its multiply-adds (the book's Chapter 6). "
                    f"With no sub-command, runs '{DEFAULT_SUBCOMMAND}'.",
        epilog="Timings are medians over interleaved rounds, with interquartile ranges.\n"
               "Each sub-command has its own options: python -m shufflenet.bench SUBCOMMAND --help.\n\n"
               "examples:\n"
               "  python -m shufflenet.bench --quick                  # a few seconds, one small model\n"
               "  python -m shufflenet.bench models --out results     # also write results/models.json, .csv\n"
               "  python -m shufflenet.bench shuffle --threads 1 --clock cpu   # on a machine shared with others",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for command in SUBCOMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        _common_arguments(child, command)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Parse a command line; the default sub-command is inserted when the line starts with an option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_SUBCOMMAND)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = SUBCOMMANDS[args.subcommand]
    for key, value in command.defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, command.quick.get(key, value) if args.quick else value)
    if args.devices is None:
        args.devices = ["cpu"] if getattr(args, "clock", "wall") == "cpu" else available_devices()
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available on this machine")
    if getattr(args, "clock", "wall") == "cpu" and (args.threads != 1 or "cuda" in args.devices):
        parser.error("--clock cpu adds up the CPU time of all threads and misses GPU time: "
                     "use it with --threads 1 --devices cpu")
    args.argv = argv
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        SUBCOMMANDS[args.subcommand].run(args)
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
