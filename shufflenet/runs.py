"""A training run from outside: the command line, and the results folder the book commits.

``python -m shufflenet.train`` lands in :func:`main` here (``train.py`` hands over to it), so that
``train.py`` stays the recipe and the loop a reader opens after Chapter 5. Usage::

    python -m shufflenet.train --data cifar10 --groups 3 --scale 1.0 --epochs 30 --out runs/g3

writes ``OUT/metrics.jsonl`` (one line per epoch), ``OUT/checkpoint.pt`` (after every epoch, and
on Ctrl-C, at the next step boundary) and ``OUT/summary.json`` (at the end); ``--resume`` continues a
stopped run exactly, and ``--export DIR`` then also writes the results folder (:func:`export_run`).

The paper's ImageNet recipe, on one machine with 8 GPUs (``--batch-size`` is the global batch)::

    torchrun --standalone --nproc_per_node=8 -m shufflenet.train --recipe imagenet --data IMAGENET \\
        --groups 3 --scale 1.0 --out runs/imagenet_g3
    python -m shufflenet.train --recipe imagenet --data IMAGENET --out runs/imagenet_g3 --evaluate

where ``IMAGENET`` holds ``train/<class>/*`` and ``val/<class>/*``; ``--evaluate`` prints the top-1 and
top-5 accuracy of the run's checkpoint on ``val/`` (:func:`evaluate_run`; it also evaluates the
``model.pt`` of a results folder that ``--export`` wrote).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch

from . import distributed
from ._checks import fraction_arg, positive_float_arg, positive_int_arg
from .bookkeeping import CheckpointError, TrainingError, read_checkpoint
from .data import DeviceLoader
from .model import GROUPS, SCALES
from .runtime import atomic_save, device_name, provenance
from .train import (
    IMAGENET_RECIPE,
    PRECISIONS,
    DivergedError,
    Interrupted,
    TrainConfig,
    autocast_dtype,
    build_model,
    evaluate,
    evaluated_weights,
    load_splits,
    make_batches,
    predict,
    resolve_device,
    train,
)
from .unit import MIXINGS

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``matrix[true, predicted]`` = number of test images."""
    return torch.bincount(targets * num_classes + predictions, minlength=num_classes ** 2).view(
        num_classes, num_classes)


# ----------------------------------------------------------------------------------------------------
# Results for the book
# ----------------------------------------------------------------------------------------------------

def export_run(config: TrainConfig, dest: str | os.PathLike) -> dict:
    """Copy a finished run's results into ``dest``, the form the book commits under ``notebooks/results/``.

    ``summary.json`` and ``metrics.jsonl`` as they are; ``model.pt``, the final weights alone (no optimiser
    state); ``confusion.json``, the confusion matrix of those weights over the run's whole test split,
    evaluated in the run's precision; and ``predictions.pt``, each test image's predicted and true label
    (uint8, in the split's order), for paired comparisons of two runs on the same images. The accuracy of
    the weights must agree with the summary's to within 10 images in 10,000 (a GPU's convolution kernels,
    and a CPU's bfloat16 ones, need not be bit-for-bit deterministic), or the data is not the run's.

    A run of copies trained as one (``--copies K``) exports each copy to a folder of its own, as if it
    had been a run of its own: ``dest`` names them with ``{seed}``, the copy's seed, which its
    summary's config also gives (with ``copies``: K, and ``copy``, its place in the stack). Returns the
    confusion record (for copies, a list of them).
    """
    out = Path(config.out)
    if config.recipe != "cifar10":
        raise TrainingError("--export writes the book's CIFAR-10 results; for ImageNet use --evaluate")
    if not (out / "summary.json").is_file():
        raise TrainingError(f"{out} holds no finished run (no summary.json) to export")
    if problem := export_pattern_problem(config.copies, dest):
        raise TrainingError(f"--export {dest}: {problem}")
    summary = json.loads((out / "summary.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = read_checkpoint(out / "checkpoint.pt")
    device = resolve_device(config.device)
    _, test_split, classes = load_splits(config)
    model = build_model(config, len(classes), device)
    model.load_state_dict(evaluated_weights(state))
    predictions, targets = predict(model, DeviceLoader(test_split, 1024, device, train=False), device,
                                   autocast_dtype(device, config.precision), flip=config.test_flip)
    if config.copies == 1:
        return _export_one(summary, history, model.state_dict(), predictions, targets, classes, dest)
    records = []
    for index, seed in enumerate(range(config.seed, config.seed + config.copies)):
        own = {key: {way: acc[index] for way, acc in value.items()} if key == "final_test_acc"
               else _of_copy(value, index) for key, value in summary.items()}
        own["config"] = {**own["config"], "seed": seed}  # its own seed; "copies" says how it trained
        own["copy"] = index
        rows = [{key: _of_copy(value, index) for key, value in row.items()} for row in history]
        records.append(_export_one(own, rows, model.copy(index).state_dict(), predictions[index],
                                   targets, classes, str(dest).replace("{seed}", str(seed))))
    return records


def export_pattern_problem(copies: int, dest) -> str | None:
    """What is wrong with ``--export DIR`` for a run of ``copies``, if anything: one folder per copy
    needs ``{seed}`` in DIR."""
    if copies > 1 and "{seed}" not in str(dest):
        return (f"a run of {copies} copies exports one folder per copy, so DIR must contain {{seed}} "
                f"(the copy's seed), e.g. results/g3-shuffle-s{{seed}}")
    return None


def _of_copy(value, index: int):
    """A copy's own number from a stacked run's list of them; any other value as it is."""
    return value[index] if isinstance(value, list) else value


def _export_one(summary: dict, history: list, weights: dict, predictions: torch.Tensor,
                targets: torch.Tensor, classes: list, dest: str | os.PathLike) -> dict:
    """One results folder (see :func:`export_run`) from a run's summary, metrics rows, final weights
    and test predictions."""
    matrix = confusion_matrix(predictions, targets, len(classes))
    correct, images = matrix.diag().sum().item(), len(targets)
    accuracy = round(correct / images, 6)
    if abs(correct - round(summary["test_acc"] * images)) > images // 1000:  # counted in whole images
        raise TrainingError(f"the final weights score {accuracy} on the test split, the summary says "
                            f"{summary['test_acc']}: is this the data the run was made with?")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_save(json.dumps(summary, indent=2) + "\n", dest / "summary.json")
    atomic_save("".join(json.dumps(row) + "\n" for row in history), dest / "metrics.jsonl")
    atomic_save({k: v.contiguous() for k, v in weights.items()}, dest / "model.pt")
    confusion = {"classes": classes, "matrix": matrix.tolist(), "test_images": len(targets),
                 "accuracy": accuracy}
    atomic_save(json.dumps(confusion, indent=1) + "\n", dest / "confusion.json")
    atomic_save({"predictions": predictions.to(torch.uint8), "labels": targets.to(torch.uint8)},
                dest / "predictions.pt")
    return confusion


def evaluate_run(config: TrainConfig) -> dict:
    """Top-1 and top-5 accuracy of the weights a run evaluates on its test split (for the ImageNet recipe,
    ``val/``), in the run's precision, with test-time flips if ``config.test_flip``: the weights of
    ``OUT/checkpoint.pt`` or, in a results folder that :func:`export_run` wrote, of ``OUT/model.pt``.
    Under ``torchrun`` every process evaluates its share."""
    out = Path(config.out)
    if (out / "checkpoint.pt").is_file():
        weights = evaluated_weights(read_checkpoint(out / "checkpoint.pt"))
    elif (out / "model.pt").is_file():
        try:
            weights = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(f"cannot read {out / 'model.pt'}: {type(error).__name__}") from None
    else:
        raise TrainingError(f"{out} holds neither a checkpoint.pt nor an exported model.pt to evaluate")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.setup(resolve_device(config.device))
    _, test_batches, classes, sizes = make_batches(config, device)
    model = build_model(config, len(classes), device)
    model.load_state_dict(weights)
    dtype = autocast_dtype(device, config.precision)
    result = evaluate(model, test_batches, device, dtype, flip=config.test_flip)
    return {**result, "test_images": sizes[1], "test_flip": config.test_flip, "device": device_name(device),
            "precision": str(dtype or torch.float32).removeprefix("torch."), "torch": torch.__version__,
            **provenance()}


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m shufflenet.train",
                                description="Train ShuffleNet V1 on CIFAR-10 (32x32 variant).")
    p.add_argument("--recipe", choices=("cifar10", "imagenet"), default=defaults.recipe,
                   help="imagenet: the paper's ImageNet recipe (224x224 crops of a folder with train/ and "
                   "val/, batch 1024, lr 0.5 falling linearly, 240 epochs, weight decay 4e-5, ...); "
                   "options given as well override it")
    p.add_argument("--data", default=defaults.data, help="cifar10, synthetic, or a directory with "
                   "train/<class>/* and test/<class>/* (default: cifar10)")
    p.add_argument("--root", default=None, help="where CIFAR-10 is (or is downloaded to); default ./data")
    p.add_argument("--groups", type=int, choices=GROUPS, default=defaults.groups)
    p.add_argument("--scale", type=float, choices=SCALES, default=defaults.scale)
    p.add_argument("--mixing", choices=MIXINGS, default=defaults.mixing,
                   help="what connects the group convolutions of a unit: the channel shuffle, nothing, "
                   "or a fixed random permutation of the channels (the ablation; default shuffle)")
    p.add_argument("--no-zero-init", dest="zero_init_residual", action="store_false",
                   help="keep the last BatchNorm scale of each residual branch at 1")
    p.add_argument("--epochs", type=positive_int_arg, default=defaults.epochs)
    p.add_argument("--batch-size", type=positive_int_arg, default=defaults.batch_size)
    p.add_argument("--lr", type=positive_float_arg, default=None, help="peak learning rate "
                   "(default: 0.1 * batch size / 128)")
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    p.add_argument("--schedule", choices=("onecycle", "cosine", "linear"), default=defaults.schedule)
    p.add_argument("--warmup", type=fraction_arg, default=defaults.warmup,
                   help="onecycle: the fraction of all steps spent warming up (default 0.25)")
    p.add_argument("--ema", type=fraction_arg, default=defaults.ema, help="evaluate an exponential moving "
                   "average of the weights with this decay per step, e.g. 0.999 (default 0: none)")
    p.add_argument("--cutout", type=int, default=defaults.cutout, metavar="N", help="erase a random N x N "
                   "square of each training image, centred anywhere in it (DeVries and Taylor, 2017; "
                   "from 0, none, the default, to 32)")
    p.add_argument("--test-flip", action="store_true", help="evaluate each test image and its mirror "
                   "image, by the mean of their logits")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=defaults.nesterov)
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction,
                   default=defaults.bn_recalibrate, help="recompute BatchNorm's statistics over one pass "
                   "of the training images before the last evaluation")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm: BatchNorm statistics over the "
                   "global batch (torchrun on GPUs)")
    p.add_argument("--limit", type=positive_int_arg, default=None, help="at most N images per split")
    p.add_argument("--test-limit", type=positive_int_arg, default=None, help="at most N test images")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--copies", type=positive_int_arg, default=defaults.copies, metavar="K",
                   help="train K copies, seeds SEED to SEED + K - 1, as one stacked model: one process, "
                   "one launch per layer for all of them (a small network on a large GPU); with --limit "
                   "or synthetic data, all use SEED's images; --export DIR then names each copy's "
                   "folder with {seed} (default: 1)")
    p.add_argument("--pipeline", choices=("fast", "dataloader"), default=defaults.pipeline)
    p.add_argument("--num-workers", type=int, default=defaults.num_workers)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                   help="autocast dtype (default auto: bf16 or fp16 on a GPU, fp32 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=defaults.compile_mode,
                   help="with --compile: torch.compile's mode; reduce-overhead also records CUDA graphs, "
                   "which replay a whole pass with one launch (on a GPU; default: default)")
    p.add_argument("--threads", type=positive_int_arg, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--out", default=defaults.out, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--evaluate", action="store_true", help="only evaluate OUT/checkpoint.pt (or the "
                   "model.pt of a results folder) on the test split (val/ for ImageNet): top-1 and top-5 "
                   "accuracy; with --export DIR, also written to DIR/evaluation[-flip].json")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--export", metavar="DIR", default=None, help="at the end, write the results folder the "
                   "book commits (summary, metrics, final weights, confusion matrix) to DIR")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    recipe, _ = parser.parse_known_args(argv)
    if recipe.recipe == "imagenet":  # the recipe's values become the defaults; explicit options win
        parser.set_defaults(**IMAGENET_RECIPE)
    args = parser.parse_args(argv)
    splits = ("train", "val") if args.recipe == "imagenet" else ("train", "test")
    if args.data not in ("cifar10", "synthetic") or args.recipe == "imagenet":
        folder = Path(args.data)
        if not folder.is_dir():
            parser.error(f"argument --data: {args.data!r} is neither 'cifar10', 'synthetic' nor an existing "
                         f"directory")
        if not all((folder / split).is_dir() for split in splits):
            parser.error(f"argument --data: directory {args.data!r} needs {splits[0]}/<class>/* and "
                         f"{splits[1]}/<class>/*")
    if not 0 <= args.cutout <= 32:
        parser.error(f"argument --cutout: the square's side must be from 0 (none) to 32 pixels, got "
                     f"{args.cutout}")
    if args.export and (problem := export_pattern_problem(args.copies, args.export)):
        parser.error(f"argument --export: {problem}")
    if args.copies > 1 and args.evaluate:
        parser.error("argument --evaluate: evaluate one copy's exported folder (--export) with "
                     "--copies 1 instead of the stacked run")
    if args.compile_mode != "default" and not args.compile:
        parser.error(f"argument --compile-mode: {args.compile_mode!r} needs --compile")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: 'cuda' requested but CUDA is not available on this machine "
                     "(choose from 'auto', 'cpu')")
    if (Path(args.out) / "checkpoint.pt").exists() and not (args.resume or args.evaluate):
        parser.error(f"argument --out: {args.out!r} already holds a checkpoint; pass --resume to continue "
                     f"it or choose another --out")
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        return finish(config, args)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: the last checkpoint stands
        print(f"error: stopped at once; {config.out} keeps the last checkpoint saved before, if any",
              file=sys.stderr)
        return 130
    except TrainingError as error:
        # Every process stops together on Ctrl-C, divergence or a refused checkpoint: rank 0 says why.
        if distributed.is_main() or not isinstance(error, (Interrupted, DivergedError, CheckpointError)):
            where = f" (rank {distributed.rank()})" if not distributed.is_main() else ""
            print(f"error{where}: {error}", file=sys.stderr)
        return 130 if isinstance(error, Interrupted) else 1
    finally:
        distributed.teardown()


def finish(config: TrainConfig, args) -> int:
    """Evaluate, or train (and export): what ``main`` does once the options are checked."""
    if args.evaluate:
        result = evaluate_run(config)
        if distributed.is_main():
            print(f"top-1 {result['test_acc']:.4f}  top-5 {result['test_top5']:.4f}  on "
                  f"{result['test_images']} images{' with test-time flips' if config.test_flip else ''}")
            if args.export:  # a record for the book: evaluation.json, or evaluation-flip.json
                name = "evaluation-flip.json" if config.test_flip else "evaluation.json"
                Path(args.export).mkdir(parents=True, exist_ok=True)
                atomic_save(json.dumps(result, indent=1) + "\n", Path(args.export) / name)
        return 0
    summary = train(config, resume=args.resume)
    if not distributed.is_main():
        return 0
    accuracy = summary["test_acc"]
    if config.copies > 1:  # one per copy, by seed
        last = config.seed + config.copies - 1
        accuracy = f"{' '.join(f'{a:.4f}' for a in accuracy)} (seeds {config.seed} to {last})"
    else:
        accuracy = f"{accuracy:.4f}"
    print(f"done: test accuracy {accuracy} after {summary['epochs']} epochs "
          f"in {summary['seconds']:.0f} s on {summary['device']}"
          f"{f' x {distributed.world_size()} processes' if distributed.world_size() > 1 else ''}; "
          f"results in {config.out}")
    if args.export:
        try:
            export_run(config, args.export)
        except TrainingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"exported summary, metrics, final weights, confusion matrix and predictions to "
              f"{args.export}{' (a folder per copy)' if config.copies > 1 else ''}")
    return 0
