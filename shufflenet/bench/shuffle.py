"""The channel shuffle against a plain copy of the same tensor, and against ``nn.ChannelShuffle``."""

from __future__ import annotations

import torch
from torch import nn

from ..shuffle import channel_shuffle
from .forms import LAYOUTS
from .timing import summarize, time_interleaved

# The bottleneck tensors (C, H, W) the shuffle sees in ShuffleNet 1x (g = 3) at 224x224: Stages 2-4.
STAGE_SHAPES = ((60, 28, 28), (120, 14, 14), (240, 7, 7))


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse (Linux only); returns whether it could.

    By default glibc hands blocks above 128 KiB back to the operating system when they are freed, so
    the next copy's output starts on fresh pages, and the page faults that fill them cost about as
    much as the copy itself, varying from call to call. Raising the mmap and trim thresholds to 1 GiB
    keeps freed blocks in the process, so each call measures the copy. It lasts for the whole process,
    so only the command line calls it, before the ``shuffle`` experiment.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, one_gib = -1, -3, 1 << 30
        return bool(libc.mallopt(m_mmap_threshold, one_gib)) and bool(
            libc.mallopt(m_trim_threshold, one_gib))
    except (OSError, AttributeError):
        return False


def run_shuffle(shapes=STAGE_SHAPES, batches=(1, 32), layouts=tuple(LAYOUTS), groups: int = 3,
                devices=("cpu",), repeats: int = 25, warmup: int = 3, min_block_ms: float = 2.0,
                seed: int = 0, clock: str = "wall") -> list:
    """One row per (device, shape, batch, layout): microseconds per call of ``clone()`` (the least a
    permutation can cost: one copy), ``channel_shuffle`` and ``nn.ChannelShuffle``, and their ratios."""
    native = nn.ChannelShuffle(groups)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for device in devices:
        fns = {}
        for c, h, w in shapes:
            if c % groups:
                raise ValueError(f"groups={groups} does not divide the {c} channels of shape {(c, h, w)}")
            for batch in batches:
                for layout in layouts:
                    memory_format = LAYOUTS[layout]
                    x = torch.randn(batch, c, h, w, generator=generator)
                    x = x.to(device).contiguous(memory_format=memory_format)
                    got = channel_shuffle(x, groups)
                    assert torch.equal(got, native(x)), "channel_shuffle disagrees with nn.ChannelShuffle"
                    rows.append({"device": str(device), "batch": batch, "channels": c, "height": h,
                                 "width": w, "layout": layout, "groups": groups,
                                 "megabytes": round(x.numel() * x.element_size() / 2**20, 3),
                                 "output_keeps_layout": got.is_contiguous(memory_format=memory_format)})
                    index = len(rows) - 1
                    fns[(index, "clone")] = lambda x=x: x.clone()
                    fns[(index, "shuffle")] = lambda x=x: channel_shuffle(x, groups)
                    fns[(index, "native")] = lambda x=x: native(x)
        with torch.inference_mode():
            times = time_interleaved(fns, repeats, warmup, min_block_s=min_block_ms / 1e3,
                                     device=device, clock=clock)
        for (index, what), seconds in times.items():
            stats = summarize(seconds)
            rows[index][f"{what}_us"] = round(stats["median_ms"] * 1e3, 2)
            rows[index][f"{what}_iqr_us"] = round(stats["iqr_ms"] * 1e3, 2)
    for row in rows:
        row["shuffle_over_clone"] = round(row["shuffle_us"] / row["clone_us"], 3)
        row["native_over_clone"] = round(row["native_us"] / row["clone_us"], 3)
    return rows
