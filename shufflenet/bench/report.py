"""What the command line records and writes: the machine, a caveat about its load, tables, files."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path

import torch

from ..runtime import atomic_save, cpu_model_name, provenance

# The columns of each experiment's printed table: (header, key, format spec).
COLUMNS = {
    "models": [("model", "model", ""), ("device", "device", ""), ("form", "form", ""),
               ("MMACs", "mmacs", ".0f"), ("params M", "mparams", ".2f"),
               ("latency ms", "latency_median_ms", ".2f"), ("IQR ms", "latency_iqr_ms", ".2f"),
               ("img/s", "throughput_median", ".1f"), ("compile s", "compile_s", ".1f")],
    "shuffle": [("device", "device", ""), ("batch", "batch", "d"), ("C", "channels", "d"),
                ("H", "height", "d"), ("layout", "layout", ""), ("clone us", "clone_us", ".1f"),
                ("shuffle us", "shuffle_us", ".1f"), ("native us", "native_us", ".1f"),
                ("shuffle/clone", "shuffle_over_clone", ".2f"), ("keeps layout", "output_keeps_layout", "")],
    "g2": [("device", "device", ""), ("base", "base_channels", "d"), ("g", "groups", "d"),
           ("c", "channels", "d"), ("layout", "layout", ""), ("ms", "median_ms", ".2f"),
           ("IQR ms", "iqr_ms", ".2f"), ("img/s", "images_per_s", ".1f"), ("GMAC/s", "gmacs_per_s", ".2f")],
    "profile": [("form", "form", ""), ("category", "category", ""), ("calls", "calls", "d"),
                ("ms/forward", "ms_per_forward", ".3f"), ("%", "percent", ".1f")],
    "pipeline": [("measure", "measure", ""), ("device", "device", ""), ("fast img/s", "fast_ips", ".0f"),
                 ("DataLoader img/s", "dataloader_ips", ".0f"), ("ratio", "ratio", ".2f"),
                 ("precision", "precision", "")],
    "step": [("form", "form", ""), ("copies", "copies", "d"), ("device", "device", ""),
             ("batch", "batch", "d"), ("precision", "precision", ""), ("step ms", "step_ms", ".2f"),
             ("issue ms", "issue_ms", ".2f"), ("issue/step", "issue_share", ".2f"),
             ("img/s", "images_per_s", ".0f"), ("compile s", "compile_s", ".1f")],
}


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
        **provenance(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def load_caveat(before: dict, after: dict, clock: str = "wall") -> str | None:
    """A warning to store with the results when other processes were competing for the CPU."""
    loads = [m["load_average_1min"] for m in (before, after) if m.get("load_average_1min") is not None]
    cores = before.get("cpu_count") or 1
    if not loads or max(loads) <= 0.5 * cores:
        return None
    how = ("CPU time leaves out the waits for a core but not the slowdown from caches and memory "
           "shared with the other jobs" if clock == "cpu" else
           "wall-clock time includes the waits for a core")
    return (f"measured on a shared machine: 1-minute load average {min(loads):.1f} to "
            f"{max(loads):.1f} on {cores} cores ({how}), so absolute times are noisy; compare "
            f"configurations within this run (they were timed in interleaved rounds) rather than "
            f"across runs")


def format_table(rows: list, columns: list) -> str:
    """``columns`` is a list of (header, key, format spec); returns an aligned text table."""
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], spec) for _, k, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def write_results(out_dir, name: str, payload: dict) -> tuple:
    """Write ``payload`` to ``out_dir/name.json`` and its ``results`` rows to ``out_dir/name.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    atomic_save(json.dumps(payload, indent=1) + "\n", json_path)
    rows = payload["results"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_save(text.getvalue(), csv_path)
    return json_path, csv_path
