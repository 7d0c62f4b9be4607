"""Train ShuffleNet V1 on CIFAR-10 (or a folder of images, or synthetic data), resumably.

The recipe, top to bottom in :func:`train`:

* SGD with Nesterov momentum (Sutskever et al., 2013); no weight decay on BatchNorm parameters and biases;
* every residual branch starts at zero (last BatchNorm scale 0; Goyal et al., 2017);
* a one-cycle learning-rate schedule (Smith and Topin, 2019) or a cosine one, stepped every batch;
  the default peak learning rate follows the linear scaling rule (Goyal et al., 2017): 0.1 per 128 images;
* label smoothing 0.1 (Szegedy et al., 2016);
* on a GPU: mixed precision (bf16 where supported, else fp16 with a gradient scaler; Micikevicius et al.,
  2018), ``channels_last`` memory layout, optionally ``torch.compile``; on a CPU, fp32 unless
  ``--precision bf16`` asks for bf16 autocast (about 1.4x faster on a CPU with AVX512-BF16);
* evaluation on the test split after every epoch.

Command line (``python -m shufflenet.train --help``)::

    python -m shufflenet.train --data cifar10 --groups 3 --scale 1.0 --epochs 30 --out runs/g3

writes ``OUT/metrics.jsonl`` (one line per epoch), ``OUT/checkpoint.pt`` (after every epoch, and on
Ctrl-C) and ``OUT/summary.json`` (at the end). ``--resume`` continues a stopped run exactly; ``--export DIR``
then also writes the results folder the book commits (:func:`export_run`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ._checks import positive_float_arg, positive_int_arg
from . import runtime
from .data import DeviceLoader, load_data, make_dataloader
from .model import GROUPS, SCALES, shufflenet_v1
from .runtime import atomic_save, cpu_model_name, device_name  # noqa: F401 (re-exported)


@dataclass
class TrainConfig:
    data: str = "cifar10"            # "cifar10", "synthetic" or an ImageFolder directory
    root: str | None = None          # where torchvision keeps (or downloads) CIFAR-10
    groups: int = 3
    scale: float = 1.0
    shuffle: bool = True             # False: the network without channel shuffle (Table 3 ablation)
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
    precision: str = "auto"          # "auto" (GPU: bf16, else fp16; CPU: fp32), "fp32", "bf16", "fp16"
    compile: bool = False
    threads: int | None = None       # torch.set_num_threads, for polite CPU runs
    out: str = "runs/shufflenet"
    progress: bool = True

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 128


# Options that change the result: a checkpoint may only be resumed with the same values.
RESULT_KEYS = ("data", "groups", "scale", "shuffle", "zero_init_residual", "epochs", "batch_size", "lr",
               "momentum", "weight_decay", "label_smoothing", "schedule", "limit", "test_limit", "seed", "pipeline",
               "precision")


class TrainingError(Exception):
    """A problem the command line reports in one line, without a traceback."""


class CheckpointError(TrainingError):
    pass


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


def zero_init_residual(model: nn.Module) -> None:
    """Set the last BatchNorm scale of every residual branch to zero (Goyal et al., 2017).

    Each stride-1 ShuffleNet unit then starts as the identity, and the network as a shallow one. Without
    it, the sum of sixteen residual branches with unit-variance outputs makes the early steps unstable:
    on the JPEG copy of CIFAR-10 the loss climbed from 2.3 to above 4 within the first epoch, while the
    learning rate was still warming up.
    """
    from .unit import ShuffleUnit

    for unit in model.modules():
        if isinstance(unit, ShuffleUnit) and unit.stride == 1:
            nn.init.zeros_(unit.expand[-1].weight)


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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    ``auto``: bf16 where the GPU supports it, else fp16 (which needs the gradient scaler); fp32 on a CPU,
    the safe default there. ``bf16`` and ``fp16`` ask for that autocast dtype on any device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``); any problem becomes a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = {"model", "optimizer", "scheduler", "epoch", "config", "history"} - set(state)
        if missing:
            raise ValueError(f"missing entries {sorted(missing)}")
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = reason.split(". ")[0][:200]  # torch's own messages go on for several sentences
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): {reason}") from None
    return state


def check_same_config(saved: dict, config: TrainConfig, path: Path) -> None:
    current, defaults = asdict(config), asdict(TrainConfig())
    # An option missing from an older checkpoint did not exist yet: that run had its default.
    saved = {key: saved.get(key, defaults[key]) for key in RESULT_KEYS}
    differences = [f"{key}={saved[key]!r} there, {current[key]!r} now" for key in RESULT_KEYS
                   if saved[key] != current[key]]
    if differences:
        raise CheckpointError(f"checkpoint {path} was made with other options ({'; '.join(differences)}); "
                              f"rerun with the same options or choose another --out")


def load_splits(config: TrainConfig) -> tuple:
    """The run's training and test splits (``limit`` and ``test_limit`` applied) and its class names."""
    train_split, test_split, classes = load_data(config.data, config.root, config.limit, config.seed)
    return train_split, test_split.subset(config.test_limit, config.seed), classes


def build_model(config: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The run's network (32x32 variant), on ``device`` in ``channels_last`` layout."""
    model = shufflenet_v1(config.groups, config.scale, num_classes=num_classes, small_input=True,
                          shuffle=config.shuffle)
    if config.zero_init_residual:
        zero_init_residual(model)
    return model.to(device, memory_format=torch.channels_last)


@torch.no_grad()
def predict(model: nn.Module, batches, device: torch.device, dtype: torch.dtype | None) -> tuple:
    """Predicted and true labels over a whole split."""
    model.eval()
    predictions, targets = [], []
    for images, labels in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        predictions.append(logits.argmax(1).cpu())
        targets.append(labels.cpu())
    return torch.cat(predictions), torch.cat(targets)


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``matrix[true, predicted]`` = number of test images."""
    return torch.bincount(targets * num_classes + predictions, minlength=num_classes ** 2).view(
        num_classes, num_classes)


# ----------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------

def train(config: TrainConfig, resume: bool = False, callback=None) -> dict:
    """Train as ``config`` says and return the summary. ``callback(epoch, step)`` runs after each step."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"

    # 1. Data. The fast path keeps every image on the device as uint8 and augments there.
    train_split, test_split, classes = load_splits(config)
    if len(train_split) < config.batch_size:
        raise TrainingError(f"only {len(train_split)} training images for batch size {config.batch_size}")
    if config.pipeline == "fast":
        train_batches = DeviceLoader(train_split, config.batch_size, device, train=True, seed=config.seed)
        test_batches = DeviceLoader(test_split, 1024, device, train=False)
        steps_per_epoch = len(train_batches)
    else:
        steps_per_epoch = len(train_split) // config.batch_size
        test_batches = make_dataloader(test_split, 1024, train=False, num_workers=config.num_workers)

    # 2. Model, optimiser, schedule, mixed precision.
    torch.manual_seed(config.seed)
    model = build_model(config, len(classes), device)
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=config.peak_lr,
                                momentum=config.momentum, nesterov=True)
    scheduler = make_scheduler(config, optimizer, config.epochs * steps_per_epoch)
    dtype = autocast_dtype(device, config.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 gradients underflow
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step_model = torch.compile(model) if config.compile else model

    # 3. Where to start: from scratch, or exactly where a checkpoint stopped.
    epoch, start_step, history, elapsed = 0, 0, [], 0.0
    loss_sum, loss_count, epoch_seconds = torch.zeros((), device=device), 0, 0.0
    if resume:
        if not checkpoint_path.is_file():
            raise CheckpointError(f"no checkpoint to resume at {checkpoint_path}")
        state = load_checkpoint(checkpoint_path)
        check_same_config(state["config"], config, checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, start_step, history = state["epoch"], state["step"], list(state["history"])
        loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        epoch_seconds, elapsed = state["epoch_seconds"], state["elapsed"]
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        random.setstate(state["rng"]["python"])

    def save_checkpoint(epoch: int, step: int) -> None:
        atomic_save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step": step, "history": history, "elapsed": elapsed,
            "loss_sum": loss_sum.detach().cpu(), "loss_count": loss_count, "epoch_seconds": epoch_seconds,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                    "python": random.getstate()},
            "config": asdict(config),
        }, checkpoint_path)

    def write_metrics() -> None:
        atomic_save("".join(json.dumps(row) + "\n" for row in history), out / "metrics.jsonl")

    from tqdm import tqdm

    # 4. Epochs: train on every batch, then evaluate on the test split.
    while epoch < config.epochs:
        model.train()
        started = time.perf_counter()
        if config.pipeline == "fast":
            train_batches.set_epoch(epoch, start_step)
            batches = iter(train_batches)
        else:
            torch.manual_seed(config.seed * 1_000_003 + epoch)  # the per-image transforms draw from here
            loader = make_dataloader(train_split, config.batch_size, train=True,
                                     num_workers=config.num_workers, seed=config.seed, epoch=epoch)
            batches = itertools.islice(iter(loader), start_step, None)
        bar = tqdm(batches, total=steps_per_epoch, initial=start_step, disable=not config.progress,
                   desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, mininterval=1.0)
        step = start_step
        try:
            for images, labels in bar:
                images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                labels = labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = criterion(step_model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach().float() * len(labels)
                loss_count += len(labels)
                step += 1
                # Checking the loss costs a GPU sync, so only every few steps (and at the epoch's end).
                if step % 10 == 0 or step == steps_per_epoch:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise DivergedError(
                            f"the loss became {value} at epoch {epoch + 1}, step {step}: training diverged; "
                            f"try a lower --lr (peak learning rate now {config.peak_lr:g})")
                    bar.set_postfix(loss=f"{value:.3f}")
                if callback is not None:
                    callback(epoch, step)
            bar.close()
            predictions, targets = predict(model, test_batches, device, dtype)
        except KeyboardInterrupt:  # Ctrl-C: keep every finished step; a resumed run redoes the evaluation
            bar.close()
            epoch_seconds += time.perf_counter() - started
            save_checkpoint(epoch, step)
            raise Interrupted(f"interrupted at epoch {epoch + 1}, step {step}: checkpoint saved to "
                              f"{checkpoint_path}; rerun with --resume to continue") from None
        epoch_seconds += time.perf_counter() - started
        elapsed += epoch_seconds
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum.item() / loss_count, 6),
                        "test_acc": round((predictions == targets).float().mean().item(), 6),
                        "lr": scheduler.get_last_lr()[0], "seconds": round(epoch_seconds, 3)})
        epoch, start_step = epoch + 1, 0
        loss_sum, loss_count, epoch_seconds = torch.zeros((), device=device), 0, 0.0
        save_checkpoint(epoch, 0)
        write_metrics()
        row = history[-1]  # one line per epoch, also without a progress bar (logs of background runs)
        print(f"epoch {row['epoch']:3d}/{config.epochs}  train loss {row['train_loss']:.4f}  "
              f"test acc {row['test_acc']:.4f}  lr {row['lr']:.4g}  {row['seconds']:.1f} s", flush=True)

    # 5. The summary of the run.
    data_name = config.data if config.data in ("cifar10", "synthetic") else Path(config.data).resolve().name
    summary = {
        "test_acc": history[-1]["test_acc"], "epochs": config.epochs, "seconds": round(elapsed, 3),
        "device": device_name(device), "data": data_name, "groups": config.groups, "scale": config.scale,
        "shuffle": config.shuffle, "limit": config.limit, "test_limit": config.test_limit,
        "threads": torch.get_num_threads(), "train_images": len(train_split), "test_images": len(test_split),
        "peak_lr": config.peak_lr, "precision": str(dtype or torch.float32).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__, "config": asdict(config),
    }
    atomic_save(json.dumps(summary, indent=2) + "\n", out / "summary.json")
    return summary


# ----------------------------------------------------------------------------------------------------
# Results for the book
# ----------------------------------------------------------------------------------------------------

def export_run(config: TrainConfig, dest: str | os.PathLike) -> dict:
    """Copy a finished run's results into ``dest``, the form the book commits under ``notebooks/results/``.

    ``summary.json`` and ``metrics.jsonl`` as they are; ``model.pt``, the final weights alone (no optimiser
    state); and ``confusion.json``, the confusion matrix of those weights over the run's whole test split,
    evaluated in the run's precision. Its accuracy must agree with the summary's to within 10 images in
    10,000 (a GPU's convolution kernels need not be bit-for-bit deterministic), or the data is not the run's.
    """
    out, dest = Path(config.out), Path(dest)
    if not (out / "summary.json").is_file():
        raise TrainingError(f"{out} holds no finished run (no summary.json) to export")
    summary = json.loads((out / "summary.json").read_text())
    state = load_checkpoint(out / "checkpoint.pt")
    device = resolve_device(config.device)
    _, test_split, classes = load_splits(config)
    model = build_model(config, len(classes), device)
    model.load_state_dict(state["model"])
    predictions, targets = predict(model, DeviceLoader(test_split, 1024, device, train=False), device,
                                   autocast_dtype(device, config.precision))
    matrix = confusion_matrix(predictions, targets, len(classes))
    accuracy = round(matrix.diag().sum().item() / len(targets), 6)
    if abs(accuracy - summary["test_acc"]) > 1e-3:
        raise TrainingError(f"the final weights score {accuracy} on the test split, the summary says "
                            f"{summary['test_acc']}: is this the data the run was made with?")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "metrics.jsonl"):
        atomic_save((out / name).read_text(), dest / name)
    atomic_save({k: v.contiguous() for k, v in state["model"].items()}, dest / "model.pt")
    confusion = {"classes": classes, "matrix": matrix.tolist(), "test_images": len(targets), "accuracy": accuracy}
    atomic_save(json.dumps(confusion, indent=1) + "\n", dest / "confusion.json")
    return confusion


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m shufflenet.train",
                                description="Train ShuffleNet V1 on CIFAR-10 (32x32 variant).")
    p.add_argument("--data", default=defaults.data, help="cifar10, synthetic, or a directory with "
                   "train/<class>/* and test/<class>/* (default: cifar10)")
    p.add_argument("--root", default=None, help="where CIFAR-10 is (or is downloaded to); default ./data")
    p.add_argument("--groups", type=int, choices=GROUPS, default=defaults.groups)
    p.add_argument("--scale", type=float, choices=SCALES, default=defaults.scale)
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="build the network without channel shuffle (ablation)")
    p.add_argument("--no-zero-init", dest="zero_init_residual", action="store_false",
                   help="keep the last BatchNorm scale of each residual branch at 1")
    p.add_argument("--epochs", type=positive_int_arg, default=defaults.epochs)
    p.add_argument("--batch-size", type=positive_int_arg, default=defaults.batch_size)
    p.add_argument("--lr", type=positive_float_arg, default=None, help="peak learning rate "
                   "(default: 0.1 * batch size / 128)")
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default=defaults.schedule)
    p.add_argument("--limit", type=positive_int_arg, default=None, help="at most N images per split")
    p.add_argument("--test-limit", type=positive_int_arg, default=None, help="at most N test images")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--pipeline", choices=("fast", "dataloader"), default=defaults.pipeline)
    p.add_argument("--num-workers", type=int, default=defaults.num_workers)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                   help="autocast dtype (default auto: bf16 or fp16 on a GPU, fp32 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=positive_int_arg, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--out", default=defaults.out, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--export", metavar="DIR", default=None, help="at the end, write the results folder the "
                   "book commits (summary, metrics, final weights, confusion matrix) to DIR")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data not in ("cifar10", "synthetic"):
        folder = Path(args.data)
        if not folder.is_dir():
            parser.error(f"argument --data: {args.data!r} is neither 'cifar10', 'synthetic' nor an existing "
                         f"directory")
        if not ((folder / "train").is_dir() and (folder / "test").is_dir()):
            parser.error(f"argument --data: directory {args.data!r} needs train/<class>/* and test/<class>/*")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: 'cuda' requested but CUDA is not available on this machine "
                     "(choose from 'auto', 'cpu')")
    if (Path(args.out) / "checkpoint.pt").exists() and not args.resume:
        parser.error(f"argument --out: {args.out!r} already holds a checkpoint; pass --resume to continue "
                     f"it or choose another --out")
    resume = args.resume
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        summary = train(config, resume=resume)
    except KeyboardInterrupt:  # before the first step (loading data, building the model): nothing to save
        print("error: interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 130 if isinstance(error, Interrupted) else 1
    print(f"done: test accuracy {summary['test_acc']:.4f} after {summary['epochs']} epochs "
          f"in {summary['seconds']:.0f} s on {summary['device']}; results in {config.out}")
    if args.export:
        try:
            export_run(config, args.export)
        except TrainingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"exported summary, metrics, final weights and confusion matrix to {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
