"""The training recipe's step: how fast it runs in each form, and what limits it.

A small network's step on a GPU can be limited by Python issuing kernels rather than by the kernels
themselves. The device then waits between kernels, and what buys speed is fewer launches (a compiled
model fuses kernels; CUDA graphs replay a whole pass with one launch), not faster kernels. Each row
says which case a form is in: ``issue_ms`` is the time Python takes to hand one step to the device,
``step_ms`` the time the step takes to finish. Where the two are close, the device kept pace with
Python and the step is launch-bound; where ``issue_ms`` is much the smaller, the device is the limit.
On a CPU the two are the same by construction (nothing runs asynchronously).

``copies`` runs several copies of the network, each with its own weights, as one
(:class:`shufflenet.stacked.StackedModels`): one launch per layer for all of them. Where one copy's
step is launch-bound, ``copies`` of them can train in little more than the time of one: the row's
``images_per_s`` counts the images of every copy.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..model import shufflenet_v1
from ..runtime import autocast_dtype, moving_average, resolve_device, train_step, update_average
from ..stacked import StackedModels, stack_per_copy, stacked_criterion
from .timing import synchronizer

# eager: the model as built (NCHW); channels_last: the trainer's layout; compile: torch.compile of the
# channels_last model, as the trainer's --compile; compile_cudagraphs: the same in torch.compile's
# "reduce-overhead" mode, which also records CUDA graphs (GPU only).
STEP_FORMS = {
    "eager": (torch.contiguous_format, None),
    "channels_last": (torch.channels_last, None),
    "compile": (torch.channels_last, "default"),
    "compile_cudagraphs": (torch.channels_last, "reduce-overhead"),
}


def recipe_step(model: nn.Module, dtype, ema: float = 0.0, weight_decay: float = 5e-4, compiled=None):
    """``step(images, labels)``: one training step of the recipe for ``model`` (on its device), as the
    trainer takes it. :func:`shufflenet.runtime.train_step` (autocast in ``dtype``, label smoothing 0.1,
    the gradient scaler where fp16 needs it, SGD with Nesterov momentum) run through ``compiled`` (a
    compiled ``model``) if given, then, if ``ema``, the update of a moving average of the weights. The
    learning rate stays constant: a schedule's step costs next to nothing."""
    device_type = next(model.parameters()).device.type
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    if isinstance(model, StackedModels):
        criterion = stacked_criterion(criterion)
    averaged = moving_average(model, ema)

    def step(images, labels):
        forward = model if compiled is None else compiled  # not `or`: a compiled module has no len()
        train_step(forward, images, labels, optimizer, constant, scaler, criterion, dtype)
        if averaged is not None:
            update_average(averaged, model)

    return step


def _time_steps(step, steps: int, sync) -> tuple:
    """(seconds to issue, seconds to finish) each of ``steps`` steps, waiting for the device between
    steps so that every step starts on an idle device with an empty queue."""
    issued, finished = [], []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        issued.append(time.perf_counter() - start)
        sync()
        finished.append(time.perf_counter() - start)
    return issued, finished


def run_step(groups: int = 3, scale: float = 1.0, batch: int = 512,
             forms=("eager", "channels_last", "compile"), device: str = "auto",
             precision: str = "auto", ema: float = 0.999, steps: int = 20, repeats: int = 5,
             warmup: int = 10, seed: int = 0, copies=(1,)) -> list:
    """One row per form and number of copies: the median time of the recipe's training step on one
    batch of 32x32 images.

    The step is :func:`recipe_step`, with weight decay and, if ``ema``, the moving average of the
    trainer's ``--ema``, in ``precision``. The batch is fixed, random and already on the device: the
    data pipeline has its own benchmark. Each number ``K`` in ``copies`` above 1 stacks ``K`` copies of
    the network (seeds ``seed`` onwards) into one (:class:`~shufflenet.stacked.StackedModels`), each
    copy with its own batch of ``batch`` images. The variants are timed in ``repeats`` interleaved
    rounds of ``steps`` steps each, after ``warmup`` untimed steps (which include any compilation,
    reported as ``compile_s``).
    """
    unknown = [form for form in forms if form not in STEP_FORMS]
    if unknown:
        raise ValueError(f"unknown form {unknown[0]!r}; choose from {', '.join(STEP_FORMS)}")
    if any(not isinstance(k, int) or k < 1 for k in copies):
        raise ValueError(f"copies must be whole numbers of 1 or more, got {list(copies)}")
    device = resolve_device(device)
    if "compile_cudagraphs" in forms and device.type != "cuda":
        raise ValueError("the form compile_cudagraphs records CUDA graphs: it needs --device cuda")
    dtype = autocast_dtype(device, precision)
    sync = synchronizer(device)

    def make_step(form: str, count: int):
        memory_format, mode = STEP_FORMS[form]
        models = []
        for index in range(count):
            torch.manual_seed(seed + index)
            models.append(shufflenet_v1(groups, scale, num_classes=10, small_input=True,
                                        zero_init_residual=True))
        if count == 1:
            model = models[0].to(device, memory_format=memory_format).train()
        else:  # stacked weights have 5 dimensions: the layout applies to each copy's batch only
            model = StackedModels(models).to(device).train()
        compiled = None if mode is None else torch.compile(model, mode=mode)
        step = recipe_step(model, dtype, ema, compiled=compiled)
        generator = torch.Generator().manual_seed(seed)
        images = [torch.randn(batch, 3, 32, 32, generator=generator).to(device)
                  .contiguous(memory_format=memory_format) for _ in range(count)]
        labels = [torch.randint(0, 10, (batch,), generator=generator).to(device) for _ in range(count)]
        if count > 1:  # a batch for each copy, each in the form's layout
            images, labels = [stack_per_copy(images)], [torch.stack(labels)]
        return lambda: step(images[0], labels[0])

    variants = [(form, count) for count in copies for form in forms]
    prepared, compile_s = {}, {}
    for variant in variants:
        step = make_step(*variant)
        sync()
        start = time.perf_counter()
        for _ in range(max(warmup, 1)):
            step()
        sync()
        compile_s[variant] = time.perf_counter() - start if STEP_FORMS[variant[0]][1] else None
        prepared[variant] = step
    issued = {variant: [] for variant in variants}
    finished = {variant: [] for variant in variants}
    for _ in range(repeats):
        for variant, step in prepared.items():
            one_round = _time_steps(step, steps, sync)
            issued[variant] += one_round[0]
            finished[variant] += one_round[1]
    rows = []
    for form, count in variants:
        step_ms = statistics.median(finished[form, count]) * 1e3
        issue_ms = statistics.median(issued[form, count]) * 1e3
        rows.append({
            "form": form, "copies": count, "device": str(device), "batch": batch,
            "precision": str(dtype or torch.float32).removeprefix("torch."), "ema": ema,
            "model": f"shufflenet_v1(groups={groups}, scale={scale}, small_input=True)",
            "step_ms": round(step_ms, 3), "issue_ms": round(issue_ms, 3),
            "issue_share": round(issue_ms / step_ms, 3),
            "images_per_s": round(count * batch / step_ms * 1e3, 1),
            "compile_s": None if compile_s[form, count] is None else round(compile_s[form, count], 1),
            "steps": steps * repeats,
        })
    return rows
