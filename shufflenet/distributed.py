"""One run in many processes: what the trainer needs from :mod:`torch.distributed`.

``torchrun`` starts the processes (one per GPU, or a few on a CPU) and tells each, in environment
variables, its ``RANK`` among all of them, its ``LOCAL_RANK`` on its machine, the ``WORLD_SIZE`` and
where to meet (``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins them into a process group (NCCL
between GPUs, gloo between CPUs); without ``torchrun`` every function here is the one-process no-op,
so the trainer reads the same either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Was this process started by ``torchrun`` (or anything else that sets ``RANK``)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (once) and return this process's device:
    ``cuda:LOCAL_RANK`` on GPUs, the CPU otherwise. Without ``torchrun``, ``device`` as it is."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 writes the files and prints the log; the others compute."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over all processes of ``values`` (a new tensor; the input is left alone)."""
    values = values.clone()
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean over all processes of a tensor that lives on the device (no wait for the GPU)."""
    if not dist.is_initialized():
        return value.detach().float()
    return all_sum(value.detach().float()) / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any: how all of them agree to stop together."""
    if not dist.is_initialized():
        return flag
    return bool(all_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm's running statistics) to every process, so that all evaluate
    the same network: in training each process updates them from its own share of the batch."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def average_buffers(model: torch.nn.Module) -> None:
    """Replace every floating-point buffer by its mean over the processes (after a BatchNorm-statistics
    pass in which each process saw its own images)."""
    if dist.is_initialized():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_sum(buffer) / world_size())
