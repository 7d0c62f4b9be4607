"""Where the time of one forward pass goes, by kind of operator (``torch.profiler``)."""

from __future__ import annotations

import torch
from torch import nn

from .forms import build_model, prepare

# The operators a forward pass calls from Python (the top-level ones), by the kind of layer they are.
CATEGORIES = {
    "convolution": ("aten::conv2d", "aten::convolution", "aten::_convolution",
                    "aten::mkldnn_convolution"),
    "batch norm": ("aten::batch_norm", "aten::native_batch_norm"),
    "activation": ("aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_",
                   "aten::hardswish", "aten::hardswish_", "aten::hardsigmoid", "aten::hardsigmoid_",
                   "aten::hardtanh", "aten::hardtanh_", "aten::silu", "aten::silu_", "aten::sigmoid"),
    "add": ("aten::add", "aten::add_"),
    "concatenate": ("aten::cat",),
    "pooling": ("aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::mean"),
    "classifier": ("aten::linear", "aten::addmm"),
    # Moving numbers without arithmetic. In ShuffleNet V1 only the channel shuffle calls these from
    # Python (empty_like, two views, transpose, copy_); the tests check it on the mixing="none" network.
    "copies and views": ("aten::empty_like", "aten::view", "aten::transpose", "aten::copy_",
                         "aten::reshape", "aten::flatten", "aten::contiguous", "aten::clone",
                         "aten::permute", "aten::chunk", "aten::split"),
}
# A copy made inside another operator re-lays a tensor out (NCHW <-> channels_last): charged apart.
LAYOUT_COPY = "aten::copy_"


def category(name: str) -> str:
    """The kind of layer a top-level operator belongs to (``other`` for the rest)."""
    return next((cat for cat, names in CATEGORIES.items() if name in names), "other")


def _descendants(event):
    for child in event.cpu_children:
        yield child
        yield from _descendants(child)


def profile_model(model: nn.Module, x: torch.Tensor, iterations: int = 5, warmup: int = 2) -> list:
    """CPU time of one forward pass (mean over ``iterations``) by kind of layer, largest first.

    Each operator the model calls from Python is charged with its whole time, including the operators
    it calls in turn, except memory-layout copies made inside it (``copy_``, e.g. a convolution turning
    an NCHW input into channels_last), which go to ``layout copies``. The categories add up to the
    profiled pass, and the profiler's own overhead, a few microseconds per operator call, is in them:
    ``calls`` says how many calls each category made per forward pass.
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                model(x)
    time_us, calls = {}, {}
    for event in prof.events():
        if event.cpu_parent is not None:
            continue
        kind = category(event.name)
        inner = [] if kind == "copies and views" else [
            child.self_cpu_time_total for child in _descendants(event) if child.name == LAYOUT_COPY]
        time_us[kind] = time_us.get(kind, 0.0) + event.cpu_time_total - sum(inner)
        calls[kind] = calls.get(kind, 0) + 1
        if inner:
            time_us["layout copies"] = time_us.get("layout copies", 0.0) + sum(inner)
            calls["layout copies"] = calls.get("layout copies", 0) + len(inner)
    total = sum(time_us.values())
    return [{"category": kind, "ms_per_forward": round(us / iterations / 1e3, 3),
             "percent": round(100 * us / total, 1), "calls": calls[kind] // iterations}
            for kind, us in sorted(time_us.items(), key=lambda kv: -kv[1])]


def run_profile(model: str = "shufflenet_v1_g3_x1_0", forms=("eager", "channels_last"),
                batch: int = 1, size: int = 224, iterations: int = 10, rounds: int = 5,
                warmup: int = 3, seed: int = 0) -> list:
    """:func:`profile_model` of one network of :data:`MODELS` in each form, on the CPU.

    The forms are profiled in ``rounds`` interleaved rounds of ``iterations`` passes each, and each
    form keeps its fastest round: the profiler measures wall-clock time, and on a shared machine other
    programs only ever slow a round down.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    prepared = {form: prepare(build_model(model, seed), form) for form in forms}
    best = {}
    for _ in range(rounds):
        for form, (net, memory_format) in prepared.items():
            rows = profile_model(net, x.contiguous(memory_format=memory_format), iterations, warmup)
            total = sum(row["ms_per_forward"] for row in rows)
            if form not in best or total < best[form][0]:
                best[form] = (total, rows)
    return [{"model": model, "form": form, "batch": batch, "size": size, **row}
            for form in forms for row in best[form][1]]
