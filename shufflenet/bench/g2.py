"""ShuffleNet V2's guideline G2 (Ma et al., 2018, Table 2): group convolutions at equal multiply-adds.

Ten stacked 1x1 convolutions with ``g`` groups, widened as ``g`` grows so that their multiply-adds stay
fixed: if more groups run slower, the cost is not in the multiply-adds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..conv import conv1x1
from .forms import LAYOUTS
from .timing import summarize, time_interleaved


def g2_channels(base_channels: int, groups: int) -> int:
    """Channels that keep ``h * w * c * c / g`` (a 1x1 group conv's multiply-adds) at the g = 1 value.

    ``c`` is the largest multiple of ``g`` (so that the groups split it evenly) not above
    ``base * sqrt(g)``. For a base of 128 this gives V2's Table 2 widths, 128, 180, 256 and 360 for
    g = 1, 2, 4, 8; rounding down never gives a larger ``g`` more multiply-adds than ``g = 1``.
    """
    return max(groups, math.floor(base_channels * math.sqrt(groups) / groups + 1e-9) * groups)


def g2_network(channels: int, groups: int, depth: int = 10) -> nn.Sequential:
    """``depth`` stacked 1x1 convolutions with ``groups`` groups, ``channels`` in and out (no BN, no ReLU)."""
    return nn.Sequential(*[conv1x1(channels, channels, groups) for _ in range(depth)]).eval()


def run_g2(groups=(1, 2, 4, 8), base_channels=(64, 128), layouts=tuple(LAYOUTS), batch: int = 1,
           size: int = 56, depth: int = 10, devices=("cpu",), repeats: int = 15, warmup: int = 3,
           min_block_ms: float = 20.0, seed: int = 0, clock: str = "wall") -> list:
    """One row per (device, base width, g, layout): time per batch, images/s and multiply-adds/s."""
    torch.manual_seed(seed)
    rows = []
    for device in devices:
        fns = {}
        for base in base_channels:
            for g in groups:
                c = g2_channels(base, g)
                for layout in layouts:
                    memory_format = LAYOUTS[layout]
                    net = g2_network(c, g, depth).to(device, memory_format=memory_format)
                    x = torch.randn(batch, c, size, size).to(device, memory_format=memory_format)
                    rows.append({"device": str(device), "base_channels": base, "groups": g,
                                 "channels": c, "layout": layout, "batch": batch, "size": size,
                                 "depth": depth, "macs_per_image": depth * size * size * c * c // g})
                    fns[len(rows) - 1] = lambda net=net, x=x: net(x)
        with torch.inference_mode():
            times = time_interleaved(fns, repeats, warmup, min_block_s=min_block_ms / 1e3,
                                     device=device, clock=clock)
        for index, seconds in times.items():
            stats, row = summarize(seconds), rows[index]
            row["median_ms"] = round(stats["median_ms"], 3)
            row["iqr_ms"] = round(stats["iqr_ms"], 3)
            row["images_per_s"] = round(batch / stats["median_ms"] * 1e3, 1)
            row["gmacs_per_s"] = round(row["macs_per_image"] * batch / stats["median_ms"] / 1e6, 2)
    return rows
