"""What the training and benchmark wings share: the device to run on, its name, the precision and the
training step of the recipe with the update of its moving average (so that a benchmark times the step
that training runs), and safe file writes.

The model core never imports this module; ``data``, ``train`` and ``bench`` do, and never each other's
internals for these.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import warnings
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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute in bfloat16 natively?

    A GPU from compute capability 8.0 on (``torch.cuda.is_bf16_supported()`` also says True on older
    GPUs, where bf16 is emulated and cuDNN has no bf16 convolutions); a CPU with AVX512-BF16 or AMX.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    ``auto``: on a GPU, bf16 where it is native, else fp16 (which needs the gradient scaler); on a CPU,
    fp32, the safe default there. ``bf16`` and ``fp16`` ask for that dtype on any device; ``bf16``
    where it is not native warns, because it is emulated and slow (a T4 or most CPUs).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if precision == "bf16" and not native_bf16(device):
        where = "this GPU (compute capability below 8.0)" if device.type == "cuda" else \
            "this CPU (no AVX512-BF16 or AMX)"
        warnings.warn(f"--precision bf16: {where} has no native bfloat16, so it is emulated and can be "
                      f"several times slower than fp32; prefer --precision auto", stacklevel=2)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def train_step(model, images, labels, optimizer, scheduler, scaler, criterion, dtype) -> torch.Tensor:
    """One step of SGD on one batch; returns the loss (on the device: reading it would wait for the GPU)."""
    device_type = images.device.type
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        loss = criterion(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss.sum()).backward()  # sum: copies trained as one have a loss each (stacked.py)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss


def moving_average(model, decay: float):
    """None for ``decay`` 0; else torch's :class:`~torch.optim.swa_utils.AveragedModel` of ``model``,
    which after each step (:func:`update_average`) moves every weight and BatchNorm
    statistic of its copy a fraction ``1 - decay`` of the way towards the model's. Its count of updates
    stays on the host, where reading it costs no wait for the GPU."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def update_average(averaged, model) -> None:
    """What ``averaged.update_parameters(model)`` does for torch's
    :class:`~torch.optim.swa_utils.AveragedModel`, without making the host wait for the GPU.

    torch's method (2.14) copies its update count, which lives on the host, to the GPU on every call,
    and a blocking copy waits for all the work queued on the GPU: after every training step the host
    would stop issuing the next step's kernels until the GPU is idle. Here the count stays on the host,
    and the average moves by the model's own ``multi_avg_fn`` (for ``--ema``, torch's
    ``get_ema_multi_avg_fn``), applied to the same tensors in the same groups, so the result is the same.
    """
    pairs = list(zip([*averaged.module.parameters(), *averaged.module.buffers()],
                     [*model.parameters(), *model.buffers()], strict=True))
    if averaged.n_averaged == 0:  # the first call copies the model
        for mine, theirs in pairs:
            mine.copy_(theirs)
    else:  # floating-point tensors are averaged in one group, the rest (BatchNorm's counts) in another
        for floating in (True, False):
            group = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point() == floating]
            if group:
                averaged.multi_avg_fn([m for m, _ in group], [t for _, t in group], averaged.n_averaged)
    averaged.n_averaged += 1


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
