"""What the training and benchmark wings share: the device to run on, its name, and safe file writes.

The model core never imports this module; ``data``, ``train`` and ``bench`` do, and never each other's
internals for these.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; ``"cuda"`` without a GPU is a clear error."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available on this machine "
                           "(choose 'auto' or 'cpu')")
    return device


def cpu_model_name() -> str:
    """The processor's marketing name (``/proc/cpuinfo``), for the records of runs and benchmarks."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``"NVIDIA H200"`` or ``"CPU: <model>, N thread(s)"``: what a result was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_model_name()}, {torch.get_num_threads()} thread(s)"


def provenance() -> dict:
    """Which code made a result: the package's version and, when it runs from a git checkout of the
    book, the commit (``"<hash>-dirty"`` when tracked files differ from it; None elsewhere)."""
    try:
        version = metadata.version("shufflenet")
    except metadata.PackageNotFoundError:
        version = None
    root, commit = Path(__file__).resolve().parent.parent, None
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        try:
            commit = git("rev-parse", "HEAD") or None
            if commit and git("status", "--porcelain", "--untracked-files=no"):
                commit += "-dirty"
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"package_version": version, "commit": commit}


def atomic_save(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` (text, or anything ``torch.save`` takes) to a temporary file next to ``path``, then
    rename it over ``path``: a crash or Ctrl-C never leaves half a file, and the old one stays intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        if isinstance(obj, str):
            Path(tmp).write_text(obj)
        else:
            torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone who can read the folder
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
