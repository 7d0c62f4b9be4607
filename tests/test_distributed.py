"""Tests of the trainer in several processes (``torchrun``, gloo, two CPU processes on this machine):
each process's share of a batch, the weights against a one-process reference, Ctrl-C on one process and
exact resumption, the number of processes on resume, and the ImageNet recipe end to end with evaluation.

The runs go through ``python -m torch.distributed.run --standalone`` (localhost, a free port), as a reader
would start them; they are tiny (0.25x network, a few hundred images), so that each takes seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shufflenet.data import DeviceLoader, FolderLoader, synthetic_cifar
from shufflenet.runs import main
from shufflenet.train import TrainConfig, build_model, make_scheduler, parameter_groups

# 192 synthetic images, global batches of 16: 12 steps an epoch, so that a Ctrl-C lands mid-epoch.
RUN = ["--data", "synthetic", "--limit", "192", "--batch-size", "16", "--scale", "0.25", "--epochs", "2",
       "--device", "cpu", "--threads", "1", "--no-progress"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                      os.environ.get("PYTHONPATH", "")])}


def torchrun(*args, processes=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "shufflenet.train", *args]


def read_metrics(out):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run in two processes."""
    out = tmp_path_factory.mktemp("distributed") / "straight"
    done = subprocess.run(torchrun(*RUN, "--out", str(out)), capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch ") == 2  # rank 0 alone prints
    return out


def test_the_slices_of_the_processes_put_together_are_the_one_process_batch(tmp_path):
    train_split, test_split = synthetic_cifar(64, 40)
    for split, train in ((train_split, True), (test_split, False)):
        whole = DeviceLoader(split, 16, "cpu", train=train, seed=3)
        shares = [DeviceLoader(split, 16, "cpu", train=train, seed=3, rank=r, world_size=2) for r in (0, 1)]
        for loader in (whole, *shares):
            loader.set_epoch(1)
        assert len(whole) == len(shares[0]) == (4 if train else 3)
        for (images, labels), *parts in zip(whole, *shares):
            assert torch.equal(images, torch.cat([p[0] for p in parts]))
            assert torch.equal(labels, torch.cat([p[1] for p in parts]))
    with pytest.raises(ValueError, match="batch size 15 does not split evenly between 2 processes"):
        DeviceLoader(train_split, 15, "cpu", train=True, world_size=2, rank=1)

    # The folder pipeline: DistributedSampler deals the processes every other image of one permutation.
    root = write_image_folder(tmp_path / "folder", {"train": 4}, classes=3)
    whole = FolderLoader(root / "train", 4, train=True, seed=1)
    shares = [FolderLoader(root / "train", 4, train=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for loader in (whole, *shares):
        loader.set_epoch(2, start_step=1)
    for (images, labels), *parts in zip(whole, *shares):
        assert images.shape == (4, 3, 224, 224)
        assert torch.equal(images, torch.stack([p[0] for p in parts], 1).flatten(0, 1))
        assert torch.equal(labels, torch.stack([p[1] for p in parts], 1).flatten())


def test_the_weights_equal_one_process_averaging_the_two_halves_gradients(straight):
    """The reference: one process, one model; each step the gradients of the two halves of the batch,
    each half through the network on its own (BatchNorm normalises each half by its own statistics, as
    each of the two processes does), averaged, then one step of SGD. BatchNorm's running statistics are
    rank 0's (its half's), as DistributedDataParallel broadcasts them from rank 0."""
    torch.manual_seed(0)
    config = TrainConfig(data="synthetic", limit=192, batch_size=16, scale=0.25, epochs=2, device="cpu")
    train_split, _ = synthetic_cifar(192, 192)
    halves = [DeviceLoader(train_split, 16, "cpu", train=True, rank=r, world_size=2) for r in (0, 1)]
    model = build_model(config, 10, torch.device("cpu"))
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=config.peak_lr,
                                momentum=0.9, nesterov=True)
    scheduler = make_scheduler(config, optimizer, 2 * len(halves[0]))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    parameters = list(model.parameters())
    for epoch in range(2):
        model.train()
        for loader in halves:
            loader.set_epoch(epoch)
        for (x0, y0), (x1, y1) in zip(*halves):
            gradients = []
            for x, y in ((x0, y0), (x1, y1)):
                model.zero_grad()
                criterion(model(x), y).backward()
                gradients.append([p.grad.clone() for p in parameters])
                if not gradients[1:]:
                    rank0_buffers = [b.clone() for b in model.buffers()]
            for p, g0, g1 in zip(parameters, *gradients):
                p.grad = g0 / 2 + g1 / 2
            for b, saved in zip(model.buffers(), rank0_buffers):
                b.copy_(saved)
            optimizer.step()
            scheduler.step()
    distributed = weights(straight)
    reference = model.state_dict()
    # Same kernels, same halves, and a sum of two numbers is the same in either order: the weights agree
    # to the last bit on this machine; 1e-6 leaves room for another machine's summation order in gloo.
    for name, value in reference.items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6, msg=name)


def worker_pid(parent: int, local_rank: int) -> int:
    """The process ``torchrun`` (pid ``parent``) started as ``local_rank``, from /proc."""
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{parent}\n" in status and f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of local rank {local_rank} under process {parent}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds rank 1's process in /proc")
def test_ctrl_c_on_one_process_stops_both_and_resume_is_exact(straight, tmp_path):
    out = tmp_path / "stopped"
    process = subprocess.Popen(torchrun(*RUN, "--out", str(out)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    for line in process.stdout:
        if line.startswith("epoch   1/2"):
            os.kill(worker_pid(process.pid, 1), signal.SIGINT)  # rank 1 only; rank 0 knows nothing
            break
    _, err = process.communicate(timeout=300)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")  # a very fast machine
    assert process.returncode != 0 and "interrupted at epoch 2, step 10" in err
    assert err.count("error: interrupted") == 1  # rank 0 says it, for both
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["world_size"]) == (1, 10, 2)

    done = subprocess.run(torchrun(*RUN, "--out", str(out), "--resume"), capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(out) == read_metrics(straight)
    a, b = weights(out), weights(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_another_number_of_processes_is_a_one_line_error(straight, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(straight, out)
    assert main([*RUN, "--out", str(out), "--resume"]) == 1  # one process now, two then
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "world size 2 there, 1 now (resume with 2 processes)" in err


def write_image_folder(root, per_class: dict, classes: int = 6, seed: int = 0) -> Path:
    """An ImageNet-style folder of small JPEGs of assorted sizes, each class its own colour."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for c in range(classes):
            (root / split / f"n{c:08d}").mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 72, 2)
                colour = np.array([40 * c % 256, 255 - 40 * c % 256, 90], dtype=np.int16)
                pixels = np.clip(colour + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"n{c:08d}" / f"{i}.jpg")
    return root


def test_the_imagenet_recipe_end_to_end_in_two_processes_with_evaluation(tmp_path, capsys):
    data = write_image_folder(tmp_path / "imagenet", {"train": 4, "val": 2})
    out = tmp_path / "run"
    tiny = ["--recipe", "imagenet", "--data", str(data), "--scale", "0.25", "--epochs", "1",
            "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--threads", "1",
            "--no-progress", "--out", str(out)]
    done = subprocess.run(torchrun(*tiny), capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    config = summary["config"]
    assert (config["recipe"], config["schedule"], config["weight_decay"], config["nesterov"]) == \
        ("imagenet", "linear", 4e-5, False)
    assert config["bn_recalibrate"] and summary["world_size"] == 2 and summary["train_images"] == 24
    assert summary["peak_lr"] == pytest.approx(0.5 * 8 / 1024)
    row = json.loads((out / "metrics.jsonl").read_text())
    assert set(row) == {"epoch", "train_loss", "test_acc", "test_top5", "lr", "seconds"}
    assert 0 <= row["test_acc"] <= row["test_top5"] <= 1 and row["lr"] == 0

    # The evaluation command, in one process: the checkpoint's weights on all 12 validation images.
    capsys.readouterr()
    assert main([*tiny, "--evaluate"]) == 0
    printed = capsys.readouterr().out
    assert printed == f"top-1 {row['test_acc']:.4f}  top-5 {row['test_top5']:.4f}  on 12 images\n"
