"""Train ShuffleNet V1 on CIFAR-10 (or a folder of images, or synthetic data), resumably.

The recipe, top to bottom in :func:`train`:

* SGD with Nesterov momentum (Sutskever et al., 2013); no weight decay on BatchNorm parameters and biases;
* every residual branch starts at zero (last BatchNorm scale 0; Goyal et al., 2017);
* a one-cycle learning-rate schedule (Smith and Topin, 2019) or a cosine one, stepped every batch;
  the default peak learning rate follows the linear scaling rule (Goyal et al., 2017): 0.1 per 128 images;
* label smoothing 0.1 (Szegedy et al., 2016);
* optionally, candidates for a shorter or better run: a shorter warm-up (``--warmup``), an exponential
  moving average of the weights, evaluated instead of the weights themselves (``--ema``; Polyak and
  Juditsky, 1992), test-time flips, the mean of the logits of each test image and its mirror image
  (``--test-flip``), and cutout, a random square of each training image erased (``--cutout``; DeVries
  and Taylor, 2017);
* mixed precision (Micikevicius et al., 2018): on a GPU, bf16 where the GPU computes it natively (compute
  capability 8.0 or newer: A100, H100, L4, RTX 30xx and later), else fp16 with a gradient scaler (T4,
  V100); on a CPU fp32 unless ``--precision bf16`` asks for bf16 autocast, which pays only on CPUs with
  native bf16 (AVX512-BF16 or AMX); ``channels_last`` memory layout; optionally ``torch.compile``, in
  its ``reduce-overhead`` mode with CUDA graphs, which replay a whole pass with one launch;
* evaluation on the test split after every epoch.

``--recipe imagenet`` is the paper's ImageNet recipe instead (:data:`IMAGENET_RECIPE`, from the paper and
Megvii's official training code): 224 x 224 random resized crops with colour jitter from a folder of
images, plain momentum SGD at 0.5 per 1,024 images decaying linearly to zero over 240 epochs, weight decay
4e-5, and a BatchNorm-statistics pass before the last evaluation.

Started by ``torchrun``, the same loop runs in every process on its share of each batch, with
:class:`~torch.nn.parallel.DistributedDataParallel` averaging the gradients (``distributed.py``);
``--batch-size`` stays the global batch. ``--copies K`` instead trains K seeds in one process as one
stacked model (``stacked.py``), each copy as it would train alone: for many seeds of a small network.

The command line (``python -m shufflenet.train --help``) and the export of a finished run's results for
the book live in ``runs.py``; the bookkeeping (run state, checkpoints, Ctrl-C) in ``bookkeeping.py``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import distributed, runtime
from .bookkeeping import Checkpoint, DeferredInterrupt, RunState, TrainingError
from .complexity import count_params
from .data import DeviceLoader, FolderLoader, ReferenceLoader, Split, load_data, make_dataloader
from .model import shufflenet_v1
from .runtime import (  # PRECISIONS and native_bf16: the trainer's --precision, re-exported
    PRECISIONS,  # noqa: F401
    atomic_save,
    autocast_dtype,
    device_name,
    moving_average,
    native_bf16,  # noqa: F401
    train_step,
    update_average,
)
from .stacked import StackedLoader, StackedModels, stacked_criterion


@dataclass
class TrainConfig:
    recipe: str = "cifar10"          # "cifar10" (32x32 images) or "imagenet" (the paper's, 224x224)
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
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"       # or "cosine", or "linear" (from the peak down to zero)
    warmup: float = 0.25             # onecycle: the fraction of all steps spent warming up
    ema: float = 0.0                 # decay of an exponential moving average of the weights (0: none)
    test_flip: bool = False          # evaluate on each test image and its mirror image (mean logits)
    cutout: int = 0                  # erase a random N x N square of each training image (0: none)
    bn_recalibrate: bool = False     # recompute BatchNorm's statistics before the last evaluation
    sync_bn: bool = False            # SyncBatchNorm: statistics over the global batch (CUDA, torchrun)
    limit: int | None = None         # at most this many images per split (smoke runs, CPU runs)
    test_limit: int | None = None    # at most this many test images (default: limit)
    seed: int = 0
    copies: int = 1                  # train seeds seed, seed + 1, ... (this many) as one (stacked.py)
    pipeline: str = "fast"           # "fast" (DeviceLoader) or "dataloader" (the per-image reference)
    num_workers: int = 2             # DataLoader workers (dataloader pipeline only)
    device: str = "auto"
    precision: str = "auto"          # "auto", "fp32", "bf16", "fp16": see autocast_dtype
    compile: bool = False
    compile_mode: str = "default"    # torch.compile's mode; "reduce-overhead" also records CUDA graphs
    threads: int | None = None       # torch.set_num_threads, for polite CPU runs
    out: str = "runs/shufflenet"
    progress: bool = True

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return (0.5 / 1024 if self.recipe == "imagenet" else 0.1 / 128) * self.batch_size


# The paper's ImageNet recipe (Zhang et al., 2018, Section 4, and Megvii's ShuffleNetV1/train.py): batch
# 1,024, learning rate 0.5 falling linearly to 0 over 300,000 steps (240 epochs of 1.28 million images),
# momentum 0.9 without Nesterov, weight decay 4e-5 (not on BatchNorm and biases), label smoothing 0.1, no
# zero-initialised residual branches, and a pass over the training images that recomputes BatchNorm's
# statistics at the end (their last 1,251 steps at learning rate 0 do that).
IMAGENET_RECIPE = dict(recipe="imagenet", epochs=240, batch_size=1024, momentum=0.9, nesterov=False,
                       weight_decay=4e-5, label_smoothing=0.1, schedule="linear", bn_recalibrate=True,
                       zero_init_residual=False, num_workers=8)


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
    vectors = 2 if isinstance(model, StackedModels) else 1  # stacked: one more dimension, the copies
    decay = [p for p in model.parameters() if p.ndim > vectors]
    no_decay = [p for p in model.parameters() if p.ndim <= vectors]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """Learning rate as a multiple of the peak, stepped after every batch.

    ``onecycle``: a linear warm-up from peak / 25 over the first ``config.warmup`` of the steps (a
    quarter by default), then a cosine down to zero (Smith and Topin, 2019). ``cosine``: a cosine from
    the peak down to zero. ``linear``: a straight line from the peak down to zero (the official ImageNet
    schedule).
    """
    warmup = max(1, round(config.warmup * total_steps)) if config.schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if config.schedule == "linear":
            return max(0.0, 1 - step / total_steps)
        if step < warmup:
            return 1 / 25 + (1 - 1 / 25) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_splits(config: TrainConfig) -> tuple:
    """The run's training and test splits (``limit`` and ``test_limit`` applied) and its class names."""
    train_split, test_split, classes = load_data(config.data, config.root, config.limit, config.seed)
    return train_split, test_split.subset(config.test_limit, config.seed), classes


def make_batches(config: TrainConfig, device: torch.device) -> tuple:
    """This process's training and test batches (both with ``set_epoch(epoch, start_step)``), the class
    names and the numbers of training and test images. In a run of several processes every process gets
    its share of each global batch of ``batch_size`` images."""
    rank, world = distributed.rank(), distributed.world_size()
    if config.recipe == "imagenet":  # decoded image by image in worker processes; train/ and val/
        if config.cutout:
            raise TrainingError("--cutout is for the 32x32 CIFAR recipe, not --recipe imagenet")
        folders = {"train": Path(config.data) / "train", "val": Path(config.data) / "val"}
        loaders = [FolderLoader(folders[split], config.batch_size, split == "train", config.seed,
                                config.num_workers, rank, world, pin_memory=device.type == "cuda")
                   for split in ("train", "val")]
        sizes = [len(loader.dataset) for loader in loaders]
        classes = loaders[0].classes
    else:
        train_split, test_split, classes = load_splits(config)
        if config.pipeline == "fast":  # every image stays on the device as uint8; batches augmented there
            train_split = Split(train_split.images.to(device), train_split.labels.to(device))
            loaders = [DeviceLoader(train_split, config.batch_size, device, train=True, seed=seed,
                                    rank=rank, world_size=world, cutout=config.cutout)
                       for seed in range(config.seed, config.seed + config.copies)]
            loaders = [loaders[0] if config.copies == 1 else StackedLoader(loaders),
                       DeviceLoader(test_split, 1024, device, train=False, rank=rank, world_size=world)]
        elif config.cutout:
            raise TrainingError("--cutout is part of the fast pipeline only; use --pipeline fast")
        elif world == 1:
            loaders = [ReferenceLoader(train_split, config.batch_size, config.num_workers, config.seed),
                       make_dataloader(test_split, 1024, train=False, num_workers=config.num_workers)]
        else:
            raise TrainingError("--pipeline dataloader runs in one process only; use --pipeline fast")
        sizes = [len(train_split), len(test_split)]
    if sizes[0] < config.batch_size:
        raise TrainingError(f"only {sizes[0]} training images for batch size {config.batch_size}")
    return loaders[0], loaders[1], classes, sizes


def build_model(config: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The run's network (the 32x32 variant for CIFAR, the paper's for ImageNet), on ``device`` in
    ``channels_last`` layout. With ``copies`` > 1, that many copies stacked into one
    (:class:`~shufflenet.stacked.StackedModels`), each drawn from its own seed as a run of its own."""
    if config.copies > 1:
        models = []
        for seed in range(config.seed, config.seed + config.copies):
            torch.manual_seed(seed)
            models.append(build_model(replace(config, copies=1, seed=seed), num_classes, device))
        return StackedModels(models)
    model = shufflenet_v1(config.groups, config.scale, num_classes=num_classes,
                          small_input=config.recipe != "imagenet", mixing=config.mixing,
                          zero_init_residual=config.zero_init_residual)
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device, memory_format=torch.channels_last)


def evaluated_weights(state: dict) -> dict:
    """The weights a checkpoint's run evaluates: the moving average's where it kept one."""
    if "ema" not in state:
        return state["model"]
    return {key.removeprefix("module."): value for key, value in state["ema"].items()
            if key.startswith("module.")}


def check_copies(config: TrainConfig, world: int) -> None:
    """Copies trained as one (``--copies``) take the fast CIFAR path, in one process, without the
    options that need a module's inside (BatchNorm layers) or the whole batch across processes."""
    if config.copies == 1:
        return
    unsupported = {"--recipe imagenet": config.recipe != "cifar10", "--pipeline dataloader":
                   config.pipeline != "fast", "--bn-recalibrate": config.bn_recalibrate,
                   "--sync-bn": config.sync_bn, "torchrun (several processes)": world > 1}
    for option, used in unsupported.items():
        if used:
            raise TrainingError(f"--copies {config.copies} trains copies as one stacked model on the "
                                f"fast CIFAR path in one process, without {option}: use --copies 1 "
                                f"or leave {option} out")


def distribute(model: nn.Module, device: torch.device) -> nn.Module:
    """In a run of several processes, the model wrapped in :class:`DistributedDataParallel`: after each
    backward pass every process holds the mean of all processes' gradients (and before each forward pass
    rank 0's BatchNorm statistics). In one process, the model itself."""
    if distributed.world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def predict(model: nn.Module, batches, device: torch.device, dtype: torch.dtype | None,
            stop=lambda: False, k: int = 1, flip: bool = False) -> tuple | None:
    """Predicted (the ``k`` most likely classes, if ``k > 1``) and true labels over a whole split; None
    if ``stop()`` turns true on the way. ``flip``: by the sum of the logits of each image and its mirror
    image (test-time augmentation with the training's own horizontal flip). For a stacked model, the
    predictions of each copy: a first dimension of copies."""
    model.eval()
    predictions, targets = [], []
    for images, labels in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
            if flip:
                mirrored = images.flip(3).contiguous(memory_format=torch.channels_last)
                logits = logits.float() + model(mirrored).float()
        # One tie-break for every k: in bfloat16, logits tie often enough that argmax and topk,
        # which break ties differently, would score the same weights a few images apart.
        top = logits.topk(min(k, logits.shape[-1])).indices  # (copies, B, k) for a stacked model
        predictions.append((top[..., 0] if k == 1 else top).cpu())
        targets.append(labels.cpu())
        if stop():
            return None
    return torch.cat(predictions, dim=1 if logits.dim() == 3 else 0), torch.cat(targets)


def evaluate(model: nn.Module, batches, device: torch.device, dtype: torch.dtype | None,
             stop=lambda: False, flip: bool = False) -> dict | None:
    """Top-1 and top-5 accuracy over the whole split (``flip``: see :func:`predict`), every process
    evaluating its share with the same BatchNorm statistics (rank 0's); None on every process if
    ``stop()`` turned true on any. For a stacked model, a list of each copy's accuracies."""
    distributed.broadcast_buffers(model)
    result = predict(model, batches, device, dtype, stop, k=5, flip=flip)
    copies = getattr(model, "copies", 0)  # a stacked model: each copy's accuracies
    counts = torch.zeros(4, max(copies, 1), dtype=torch.float64)  # top-1 hits, top-5 hits, images, stop
    if result is None:
        counts[3] = 1
    else:
        top, targets = result
        hits = top[..., :5] == targets[:, None]
        hits = hits.view(-1, *hits.shape[-2:])  # copies, images, k
        counts[0], counts[1], counts[2] = hits[..., 0].sum(1), hits.any(2).sum(1), len(targets)
    top1, top5, images, stopped = distributed.all_sum(counts.to(device)).cpu()
    if stopped.any():
        return None
    top1, top5 = (top1 / images).tolist(), (top5 / images).tolist()
    return {"test_acc": top1, "test_top5": top5} if copies else {"test_acc": top1[0], "test_top5": top5[0]}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device, dtype: torch.dtype | None,
                          stop=lambda: False) -> bool:
    """BatchNorm's running statistics recomputed as plain averages over one pass of training batches,
    with the weights fixed (the official recipe's last step); in several processes, averaged over them.
    ``stop()`` is asked every 10 batches, where all processes ask it together; False if it said True (a
    resumed run starts the pass again)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average instead of an exponential one
    model.train()
    try:
        for step, (images, _) in enumerate(batches, start=1):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
            if step % 10 == 0 and stop():
                return False
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    distributed.average_buffers(model)
    return True


# ----------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------

def train(config: TrainConfig, resume: bool = False, callback=None) -> dict:
    """Train as ``config`` says and return the summary. ``callback(epoch, step)`` runs after each step."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.setup(resolve_device(config.device))  # under torchrun: this process's device
    world = distributed.world_size()
    dtype = autocast_dtype(device, config.precision)
    check_copies(config, world)
    made_by = runtime.provenance()  # the code this session runs, before anyone edits the checkout
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.sync_bn and (device.type != "cuda" or world == 1):
        raise TrainingError("--sync-bn needs several processes on GPUs (torchrun, --device cuda)")

    # 1. Data: this process's share of every batch.
    train_batches, test_batches, classes, sizes = make_batches(config, device)

    # 2. Model, optimiser, schedule, loss; fp16 gradients underflow without a gradient scaler.
    torch.manual_seed(config.seed)
    model = build_model(config, len(classes), device)
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=config.peak_lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    scheduler = make_scheduler(config, optimizer, config.epochs * len(train_batches))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    if config.copies > 1:  # a loss for each copy
        criterion = stacked_criterion(criterion)

    # The weights that are evaluated and exported: the model's, or their moving average (``--ema``).
    averaged = moving_average(model, config.ema)
    final = model if averaged is None else averaged.module

    # 3. From scratch, or exactly where a checkpoint stopped (every process reads rank 0's file).
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    if averaged is not None:
        parts["ema"] = averaged
    checkpoint = Checkpoint(out / "checkpoint.pt", config, device, dtype, parts, world)
    run = checkpoint.restore() if resume else RunState()
    first_epoch = run.epoch
    step_model = distribute(model, device)  # several processes: gradients averaged over all of them
    step_model = torch.compile(step_model, mode=config.compile_mode) if config.compile else step_model

    # 4. Epochs: train on every batch, then evaluate on the test split. Ctrl-C stops between steps; with
    # several processes, at the next step where they all check (every 10 steps), so they stop together.
    with DeferredInterrupt() as interrupt:
        while run.epoch < config.epochs:
            started = time.perf_counter()
            model.train()
            train_batches.set_epoch(run.epoch, run.step)
            stopped = False
            for images, labels in progress_bar(train_batches, run, config):
                # Decoded on the CPU (folders), or already on the device (the fast path: no copy).
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                loss = train_step(step_model, images, labels, optimizer, scheduler, scaler, criterion,
                                  dtype)
                if averaged is not None:
                    update_average(averaged, model)  # torch's update, minus a wait for the GPU
                loss = distributed.mean(loss)  # over all processes: the loss of the whole batch
                run.add_step(loss, labels.shape[-1] * world)  # per image (of each copy)
                synced = run.step % 10 == 0 or run.step == len(train_batches)
                if synced:  # .item() waits for the GPU
                    check_finite(loss.sum().item(), run, config)
                if callback is not None:
                    callback(run.epoch, run.step)
                if (synced or world == 1) and distributed.any_rank(interrupt.requested, device):
                    stopped = True
                    break
            stop = lambda: interrupt.requested  # noqa: E731
            if config.bn_recalibrate and run.epoch == config.epochs - 1 and not stopped:
                train_batches.set_epoch(config.epochs)  # one more epoch's images, no weight updates
                together = lambda: distributed.any_rank(interrupt.requested, device)  # noqa: E731
                stopped = not recalibrate_batchnorm(final, train_batches, device, dtype, together)
            result = None if stopped else evaluate(final, test_batches, device, dtype, stop,
                                                   config.test_flip)
            run.epoch_seconds += time.perf_counter() - started
            if result is None:  # Ctrl-C: keep every finished step; a resumed run redoes the evaluation
                checkpoint.save(run)
                raise Interrupted(f"interrupted at epoch {run.epoch + 1}, step {run.step}: checkpoint "
                                  f"saved to {checkpoint.path}; rerun with --resume to continue")
            top5 = {"test_top5": result["test_top5"]} if config.recipe == "imagenet" else {}
            row = run.finish_epoch(result["test_acc"], scheduler.get_last_lr()[0], **top5)
            checkpoint.save(run)
            if distributed.is_main():
                atomic_save("".join(json.dumps(r) + "\n" for r in run.history), out / "metrics.jsonl")
                report_epoch(row, config, projected=run.epoch == first_epoch + 1)

    # 5. The summary of the run, with the last weights evaluated every way the options offer.
    own_way = ("weights" if averaged is None else "ema") + ("+flip" if config.test_flip else "")
    finals = final_evaluations(model, averaged, test_batches, device, dtype,
                               {own_way: run.history[-1]["test_acc"]})
    return write_summary(config, run, device, dtype, model, *sizes, finals, made_by)


def final_evaluations(model: nn.Module, averaged, batches, device: torch.device,
                      dtype: torch.dtype | None, measured: dict) -> dict:
    """The test accuracy of the last weights as trained and with test-time flips, and the same for their
    moving average where the run keeps one: one run measures each of these changes against the weights
    it trained (``"weights"``, ``"weights+flip"``, ``"ema"``, ``"ema+flip"``). ``measured``: the ways the
    run already evaluated, kept as they are."""
    candidates = {"weights": model, **({"ema": averaged.module} if averaged is not None else {})}
    ways = {name + ("+flip" if flip else ""): (candidate, flip)
            for name, candidate in candidates.items() for flip in (False, True)}
    return {way: measured[way] if way in measured else
            evaluate(candidate, batches, device, dtype, flip=flip)["test_acc"]
            for way, (candidate, flip) in ways.items()}


def progress_bar(batches, run: RunState, config: TrainConfig):
    from tqdm import tqdm

    return tqdm(batches, total=len(batches), initial=run.step, leave=False,
                disable=not (config.progress and distributed.is_main()),
                desc=f"epoch {run.epoch + 1}/{config.epochs}", mininterval=1.0)


def check_finite(loss: float, run: RunState, config: TrainConfig) -> None:
    if not math.isfinite(loss):
        raise DivergedError(f"the loss became {loss} at epoch {run.epoch + 1}, step {run.step}: training "
                            f"diverged; try a lower --lr (peak learning rate now {config.peak_lr:g})")


def report_epoch(row: dict, config: TrainConfig, projected: bool) -> None:
    """One line per epoch (also in the logs of runs without a progress bar); after the first epoch of a
    session, the time the remaining epochs will take at this pace."""
    loss, accuracy, of = row["train_loss"], row["test_acc"], ""
    if isinstance(accuracy, list):  # copies trained as one: their means
        loss, accuracy, of = sum(loss) / len(loss), sum(accuracy) / len(accuracy), " (copies' mean)"
    print(f"epoch {row['epoch']:3d}/{config.epochs}  train loss {loss:.4f}  test acc {accuracy:.4f}"
          f"{of}  lr {row['lr']:.4g}  {row['seconds']:.1f} s", flush=True)
    remaining = config.epochs - row["epoch"]
    if projected and remaining:
        print(f"projected: about {remaining * row['seconds'] / 60:.1f} min more for the remaining "
              f"{remaining} epochs at this pace", flush=True)


def write_summary(config, run, device, dtype, model, train_images: int, test_images: int,
                  final_test_acc: dict, made_by: dict) -> dict:
    data_name = config.data if config.data in ("cifar10", "synthetic") else Path(config.data).resolve().name
    summary = {
        "test_acc": run.history[-1]["test_acc"], "epochs": config.epochs, "seconds": round(run.elapsed, 3),
        "device": device_name(device), "data": data_name, "groups": config.groups, "scale": config.scale,
        "mixing": config.mixing, "limit": config.limit,
        "test_limit": config.test_limit, "threads": torch.get_num_threads(), "train_images": train_images,
        "test_images": test_images, "peak_lr": config.peak_lr,
        "precision": str(dtype or torch.float32).removeprefix("torch."),
        "parameters": count_params(model) // config.copies, "final_test_acc": final_test_acc,
        "torch": torch.__version__, **made_by, "config": asdict(config),
    }
    summary["world_size"] = distributed.world_size()
    if "test_top5" in run.history[-1]:
        summary["test_top5"] = run.history[-1]["test_top5"]
    if distributed.is_main():
        atomic_save(json.dumps(summary, indent=2) + "\n", Path(config.out) / "summary.json")
    return summary


if __name__ == "__main__":  # the command line lives in runs.py, which imports this module
    from .runs import main

    raise SystemExit(main())
