"""The training recipe's step: how fast it runs in each form, and what limits it.

A small network's step on a GPU can be limited by Python issuing kernels rather than by the kernels
themselves. The device then waits between kernels, and what buys speed is fewer launches (a compiled
model fuses kernels; CUDA graphs replay a whole pass with one launch), not faster kernels. Each row
says which case a form is in: ``issue_ms`` is the time Python takes to hand one step to the device,
``step_ms`` the time the step takes to finish. Where the two are close, the device kept pace with
Python and the step is launch-bound; where ``issue_ms`` is much the smaller, the device is the limit.
On a CPU the two are the same by construction (nothing runs asynchronously).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..model import shufflenet_v1
from ..runtime import autocast_dtype, moving_average, resolve_device, train_step, update_average
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
    averaged = moving_average(model, ema)

    def step(images, labels):
        train_step(compiled or model, images, labels, optimizer, constant, scaler, criterion, dtype)
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
             warmup: int = 10, seed: int = 0) -> list:
    """One row per form: the median time of the recipe's training step on one batch of 32x32 images.

    The step is :func:`recipe_step`, with weight decay and, if ``ema``, the moving average of the
    trainer's ``--ema``, in ``precision``. The batch is fixed, random and already on the device: the
    data pipeline has its own benchmark. The forms are timed in ``repeats`` interleaved rounds of
    ``steps`` steps each, after ``warmup`` untimed steps (which include any compilation, reported as
    ``compile_s``).
    """
    unknown = [form for form in forms if form not in STEP_FORMS]
    if unknown:
        raise ValueError(f"unknown form {unknown[0]!r}; choose from {', '.join(STEP_FORMS)}")
    device = resolve_device(device)
    if "compile_cudagraphs" in forms and device.type != "cuda":
        raise ValueError("the form compile_cudagraphs records CUDA graphs: it needs --device cuda")
    dtype = autocast_dtype(device, precision)
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)

    def make_step(form: str):
        memory_format, mode = STEP_FORMS[form]
        torch.manual_seed(seed)
        model = shufflenet_v1(groups, scale, num_classes=10, small_input=True, zero_init_residual=True)
        model = model.to(device, memory_format=memory_format).train()
        compiled = None if mode is None else torch.compile(model, mode=mode)
        step = recipe_step(model, dtype, ema, compiled=compiled)
        x = images.contiguous(memory_format=memory_format)
        return lambda: step(x, labels)

    prepared, compile_s = {}, {}
    for form in forms:
        step = make_step(form)
        sync()
        start = time.perf_counter()
        for _ in range(max(warmup, 1)):
            step()
        sync()
        compile_s[form] = time.perf_counter() - start if STEP_FORMS[form][1] else None
        prepared[form] = step
    issued = {form: [] for form in forms}
    finished = {form: [] for form in forms}
    for _ in range(repeats):
        for form, step in prepared.items():
            one_round = _time_steps(step, steps, sync)
            issued[form] += one_round[0]
            finished[form] += one_round[1]
    rows = []
    for form in forms:
        step_ms = statistics.median(finished[form]) * 1e3
        issue_ms = statistics.median(issued[form]) * 1e3
        rows.append({
            "form": form, "device": str(device), "batch": batch,
            "precision": str(dtype or torch.float32).removeprefix("torch."), "ema": ema,
            "model": f"shufflenet_v1(groups={groups}, scale={scale}, small_input=True)",
            "step_ms": round(step_ms, 3), "issue_ms": round(issue_ms, 3),
            "issue_share": round(issue_ms / step_ms, 3), "images_per_s": round(batch / step_ms * 1e3, 1),
            "compile_s": None if compile_s[form] is None else round(compile_s[form], 1),
            "steps": steps * repeats,
        })
    return rows
