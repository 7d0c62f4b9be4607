"""Images per second of the training data pipelines of Chapter 5, with and without a training step.

The fast path (:class:`shufflenet.data.DeviceLoader`: the whole split on the device, each batch
augmented with a few tensor operations) against the reference (:func:`shufflenet.data.make_dataloader`:
a ``DataLoader`` transforming one image at a time), on the same data and network.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data import DeviceLoader, load_data, make_dataloader
from ..model import shufflenet_v1
from ..runtime import autocast_dtype, resolve_device
from .step import recipe_step
from .timing import synchronizer


def images_per_second(batches, steps: int, work=None, warmup: int = 10, device="cpu") -> float:
    """Images per second over ``steps`` batches of ``batches`` (after ``warmup`` untimed ones), each
    handed to ``work(images, labels)`` if given; wall-clock time, waiting for a GPU before each reading."""
    sync = synchronizer(device)
    iterator = iter(batches)
    for _ in range(warmup):
        images, labels = next(iterator)
        if work is not None:
            work(images, labels)
    sync()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        images, labels = next(iterator)
        if work is not None:
            work(images, labels)
        seen += len(labels)
    sync()
    return seen / (time.perf_counter() - start)


def _forever(make_epoch):
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def run_pipeline(data: str = "synthetic", groups: int = 3, scale: float = 0.25, batch: int = 128,
                 train_steps: int = 100, data_steps: int = 200, device: str = "auto",
                 num_workers: int = 0, repeats: int = 3, warmup: int = 10, precision: str = "auto") -> list:
    """Two rows, ``pipeline alone`` and ``with training step``: images/s of both paths and their ratio.

    ``pipeline alone`` produces augmented, normalised batches on the device and nothing else; ``with
    training step`` adds the training recipe's step (:func:`shufflenet.runtime.train_step`: autocast in
    ``precision``, label smoothing 0.1, the gradient scaler where fp16 needs it, SGD with Nesterov
    momentum) of ShuffleNet ``scale``x (g = ``groups``) for 32x32 images. On a CPU the training step
    dominates both, so that ratio is close to 1. Each measurement times ``steps`` batches after
    ``warmup`` untimed ones, and at least one more than the DataLoader's workers prefetch (two batches
    each), so that no measurement reads batches made before its clock started. The four measurements
    alternate, and each keeps its best of ``repeats``: other programs only ever slow one down.
    """
    device = resolve_device(device)
    dtype = autocast_dtype(device, precision)
    warmup = max(warmup, 2 * num_workers + 1)
    train, _, _ = load_data(data, limit=batch * (max(train_steps, data_steps) + warmup))
    model = shufflenet_v1(groups, scale, num_classes=10, small_input=True, zero_init_residual=True)
    model = model.to(device, memory_format=torch.channels_last)
    recipe = recipe_step(model, dtype, weight_decay=0.0)

    def step(images, labels):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        recipe(images, labels.to(device, non_blocking=True))

    def to_device(images, labels):  # the DataLoader's batches still have to reach the device
        images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def fast_epoch(epoch):
        loader = DeviceLoader(train, batch, device, train=True)
        loader.set_epoch(epoch)
        return loader

    def reference_epoch(epoch):
        return make_dataloader(train, batch, train=True, num_workers=num_workers, epoch=epoch)

    plan = {("fast", "data"): (fast_epoch, data_steps, None),
            ("dataloader", "data"): (reference_epoch, data_steps, to_device),
            ("fast", "train"): (fast_epoch, train_steps, step),
            ("dataloader", "train"): (reference_epoch, train_steps, step)}
    best = dict.fromkeys(plan, 0.0)
    for _ in range(repeats):
        for key, (make_epoch, steps, work) in plan.items():
            rate = images_per_second(_forever(make_epoch), steps, work, warmup, device)
            best[key] = max(best[key], rate)
    common = {"data": data if data in ("cifar10", "synthetic") else Path(data).name,
              "device": str(device), "num_workers": num_workers, "batch": batch, "warmup": warmup,
              "precision": str(dtype or torch.float32).removeprefix("torch."),
              "model": f"shufflenet_v1(groups={groups}, scale={scale}, small_input=True)"}
    return [{"measure": measure, **common, "steps": steps,
             "fast_ips": round(best[("fast", key)], 1),
             "dataloader_ips": round(best[("dataloader", key)], 1),
             "ratio": round(best[("fast", key)] / best[("dataloader", key)], 3)}
            for measure, key, steps in (("pipeline alone", "data", data_steps),
                                        ("with training step", "train", train_steps))]
