"""Train ShuffleNet V1 on CIFAR-10 (or a folder of images, or synthetic data), resumably.

The recipe, top to bottom in :func:`train`:

* SGD with Nesterov momentum (Sutskever et al., 2013); no weight decay on BatchNorm parameters and biases;
* every residual branch starts at zero (last BatchNorm scale 0; Goyal et al., 2017);
* a one-cycle learning-rate schedule (Smith and Topin, 2019) or a cosine one, stepped every batch;
  the default peak learning rate follows the linear scaling rule (Goyal et al., 2017): 0.1 per 128 images;
* label smoothing 0.1 (Szegedy et al., 2016);
* mixed precision (Micikevicius et al., 2018): on a GPU, bf16 where the GPU computes it natively (compute
  capability 8.0 or newer: A100, H100, L4, RTX 30xx and later), else fp16 with a gradient scaler (T4,
  V100); on a CPU fp32 unless ``--precision bf16`` asks for bf16 autocast, which pays only on CPUs with
  native bf16 (AVX512-BF16 or AMX); ``channels_last`` memory layout; optionally ``torch.compile``;
* evaluation on the test split after every epoch.

The command line (``python -m shufflenet.train --help``) and the export of a finished run's results for
the book live in ``runs.py``; the bookkeeping (run state, checkpoints, Ctrl-C) in ``bookkeeping.py``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import runtime
from .bookkeeping import Checkpoint, DeferredInterrupt, RunState, TrainingError
from .complexity import count_params
from .data import DeviceLoader, ReferenceLoader, load_data, make_dataloader
from .model import shufflenet_v1
from .runtime import (  # PRECISIONS and native_bf16: the trainer's --precision, re-exported
    PRECISIONS,  # noqa: F401
    atomic_save,
    autocast_dtype,
    device_name,
    native_bf16,  # noqa: F401
    train_step,
)


@dataclass
class TrainConfig:
    data: str = "cifar10"            # "cifar10", "synthetic" or an ImageFolder directory
    root: str | None = None          # where torchvision keeps (or downloads) CIFAR-10
    groups: int = 3
    scale: float = 1.0
    mixing: str = "shuffle"          # between group convolutions: "shuffle", "none" or "random" (Table 3)
    zero_init_residual: bool = True  # start each residual branch at zero (its last BN scale = 0)
    epochs: int = 30
    batch_size: int = 512
    lr: float | None = None          # peak learning rate; None: 0.1 * batch_size / 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"       # or "cosine"
    limit: int | None = None         # at most this many images per split (smoke runs, CPU runs)
    test_limit: int | None = None    # at most this many test images (default: limit)
    seed: int = 0
    pipeline: str = "fast"           # "fast" (DeviceLoader) or "dataloader" (the per-image reference)
    num_workers: int = 2             # DataLoader workers (dataloader pipeline only)
    device: str = "auto"
    precision: str = "auto"          # "auto", "fp32", "bf16", "fp16": see autocast_dtype
    compile: bool = False
    threads: int | None = None       # torch.set_num_threads, for polite CPU runs
    out: str = "runs/shufflenet"
    progress: bool = True

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 128


class DivergedError(TrainingError):
    pass


class Interrupted(TrainingError):
    pass


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    try:
        return runtime.resolve_device(name)
    except RuntimeError as error:
        raise TrainingError(str(error)) from None


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on convolution and linear weights only: not on BatchNorm scales/shifts nor biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """Learning rate as a multiple of the peak, stepped after every batch.

    ``onecycle``: a linear warm-up from peak / 25 over the first quarter of the steps, then a cosine
    down to zero (Smith and Topin, 2019). ``cosine``: a cosine from the peak down to zero.
    """
    warmup = max(1, round(0.25 * total_steps)) if config.schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if step < warmup:
            return 1 / 25 + (1 - 1 / 25) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_splits(config: TrainConfig) -> tuple:
    """The run's training and test splits (``limit`` and ``test_limit`` applied) and its class names."""
    train_split, test_split, classes = load_data(config.data, config.root, config.limit, config.seed)
    return train_split, test_split.subset(config.test_limit, config.seed), classes


def make_batches(config: TrainConfig, train_split, test_split, device: torch.device) -> tuple:
    """Training and test batches of the chosen pipeline, both with ``set_epoch(epoch, start_step)``."""
    if len(train_split) < config.batch_size:
        raise TrainingError(f"only {len(train_split)} training images for batch size {config.batch_size}")
    if config.pipeline == "fast":  # every image stays on the device as uint8; batches augmented there
        return (DeviceLoader(train_split, config.batch_size, device, train=True, seed=config.seed),
                DeviceLoader(test_split, 1024, device, train=False))
    return (ReferenceLoader(train_split, config.batch_size, config.num_workers, config.seed),
            make_dataloader(test_split, 1024, train=False, num_workers=config.num_workers))


def build_model(config: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The run's network (32x32 variant), on ``device`` in ``channels_last`` layout."""
    model = shufflenet_v1(config.groups, config.scale, num_classes=num_classes, small_input=True,
                          mixing=config.mixing, zero_init_residual=config.zero_init_residual)
    return model.to(device, memory_format=torch.channels_last)


@torch.no_grad()
def predict(model: nn.Module, batches, device: torch.device, dtype: torch.dtype | None,
            stop=lambda: False) -> tuple | None:
    """Predicted and true labels over a whole split; None if ``stop()`` turns true on the way."""
    model.eval()
    predictions, targets = [], []
    for images, labels in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        predictions.append(logits.argmax(1).cpu())
        targets.append(labels.cpu())
        if stop():
            return None
    return torch.cat(predictions), torch.cat(targets)


# ----------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------

def train(config: TrainConfig, resume: bool = False, callback=None) -> dict:
    """Train as ``config`` says and return the summary. ``callback(epoch, step)`` runs after each step."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data.
    train_split, test_split, classes = load_splits(config)
    train_batches, test_batches = make_batches(config, train_split, test_split, device)

    # 2. Model, optimiser, schedule, loss; fp16 gradients underflow without a gradient scaler.
    torch.manual_seed(config.seed)
    model = build_model(config, len(classes), device)
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=config.peak_lr,
                                momentum=config.momentum, nesterov=True)
    scheduler = make_scheduler(config, optimizer, config.epochs * len(train_batches))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step_model = torch.compile(model) if config.compile else model

    # 3. From scratch, or exactly where a checkpoint stopped.
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    checkpoint = Checkpoint(out / "checkpoint.pt", config, device, dtype, parts)
    run = checkpoint.restore() if resume else RunState()
    first_epoch = run.epoch

    # 4. Epochs: train on every batch, then evaluate on the test split. Ctrl-C stops between steps.
    with DeferredInterrupt() as interrupt:
        while run.epoch < config.epochs:
            started = time.perf_counter()
            model.train()
            train_batches.set_epoch(run.epoch, run.step)
            for images, labels in progress_bar(train_batches, run, config):
                loss = train_step(step_model, images, labels, optimizer, scheduler, scaler, criterion,
                                  dtype)
                run.add_step(loss, len(labels))
                if run.step % 10 == 0 or run.step == len(train_batches):  # .item() waits for the GPU
                    check_finite(loss.item(), run, config)
                if callback is not None:
                    callback(run.epoch, run.step)
                if interrupt.requested:
                    break
            result = None if interrupt.requested else \
                predict(model, test_batches, device, dtype, stop=lambda: interrupt.requested)
            run.epoch_seconds += time.perf_counter() - started
            if result is None:  # Ctrl-C: keep every finished step; a resumed run redoes the evaluation
                checkpoint.save(run)
                raise Interrupted(f"interrupted at epoch {run.epoch + 1}, step {run.step}: checkpoint "
                                  f"saved to {checkpoint.path}; rerun with --resume to continue")
            predictions, targets = result
            row = run.finish_epoch((predictions == targets).float().mean().item(), scheduler.get_last_lr()[0])
            checkpoint.save(run)
            atomic_save("".join(json.dumps(r) + "\n" for r in run.history), out / "metrics.jsonl")
            report_epoch(row, config, projected=run.epoch == first_epoch + 1)

    # 5. The summary of the run.
    return write_summary(config, run, device, dtype, model, len(train_split), len(test_split))


def progress_bar(batches, run: RunState, config: TrainConfig):
    from tqdm import tqdm

    return tqdm(batches, total=len(batches), initial=run.step, disable=not config.progress, leave=False,
                desc=f"epoch {run.epoch + 1}/{config.epochs}", mininterval=1.0)


def check_finite(loss: float, run: RunState, config: TrainConfig) -> None:
    if not math.isfinite(loss):
        raise DivergedError(f"the loss became {loss} at epoch {run.epoch + 1}, step {run.step}: training "
                            f"diverged; try a lower --lr (peak learning rate now {config.peak_lr:g})")


def report_epoch(row: dict, config: TrainConfig, projected: bool) -> None:
    """One line per epoch (also in the logs of runs without a progress bar); after the first epoch of a
    session, the time the remaining epochs will take at this pace."""
    print(f"epoch {row['epoch']:3d}/{config.epochs}  train loss {row['train_loss']:.4f}  "
          f"test acc {row['test_acc']:.4f}  lr {row['lr']:.4g}  {row['seconds']:.1f} s", flush=True)
    remaining = config.epochs - row["epoch"]
    if projected and remaining:
        print(f"projected: about {remaining * row['seconds'] / 60:.1f} min more for the remaining "
              f"{remaining} epochs at this pace", flush=True)


def write_summary(config, run, device, dtype, model, train_images: int, test_images: int) -> dict:
    data_name = config.data if config.data in ("cifar10", "synthetic") else Path(config.data).resolve().name
    summary = {
        "test_acc": run.history[-1]["test_acc"], "epochs": config.epochs, "seconds": round(run.elapsed, 3),
        "device": device_name(device), "data": data_name, "groups": config.groups, "scale": config.scale,
        "mixing": config.mixing, "limit": config.limit,
        "test_limit": config.test_limit, "threads": torch.get_num_threads(), "train_images": train_images,
        "test_images": test_images, "peak_lr": config.peak_lr,
        "precision": str(dtype or torch.float32).removeprefix("torch."),
        "parameters": count_params(model),
        "torch": torch.__version__, **runtime.provenance(), "config": asdict(config),
    }
    atomic_save(json.dumps(summary, indent=2) + "\n", Path(config.out) / "summary.json")
    return summary


if __name__ == "__main__":  # the command line lives in runs.py, which imports this module
    from .runs import main

    raise SystemExit(main())
