"""Shared test set-up: one thread, a tiny training run's options, tiny image folders, a fake GPU and CPU."""

import numpy as np
import pytest
import torch
from PIL import Image

from shufflenet.train import TrainConfig

# The smallest real run: 64 synthetic images per split, two batches of 32, the 0.25x network, on the CPU.
TINY_RUN = dict(data="synthetic", scale=0.25, limit=64, batch_size=32, epochs=2, device="cpu", progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a small shared machine, two threads fighting over tiny tensors are slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config():
    """``tiny_config(out, **changes)``: the tiny run as a :class:`TrainConfig` writing to ``out``."""
    def make(out, **changes) -> TrainConfig:
        return TrainConfig(**{**TINY_RUN, "out": str(out), **changes})
    return make


@pytest.fixture
def cli_args():
    """``cli_args(out, *extra)``: the tiny run as ``python -m shufflenet.train`` arguments, one epoch."""
    def make(out, *extra) -> list[str]:
        return ["--data", "synthetic", "--scale", "0.25", "--limit", "64", "--batch-size", "32", "--epochs",
                "1", "--device", "cpu", "--out", str(out), "--no-progress", *extra]
    return make


@pytest.fixture
def image_folder(tmp_path):
    """``image_folder(name, per_class=(3, 2))``: an ImageFolder tree ``tmp_path/name/{train,test}/{cat,dog}``
    of random 32x32 PNGs (lossless, so decoded pixels can be compared); returns the tree's path and a dict
    ``(split, class, index) -> pixels``."""
    def make(name="tiny", per_class=(3, 2), classes=("cat", "dog"), seed=0):
        rng = np.random.default_rng(seed)
        root, written = tmp_path / name, {}
        for split, count in zip(("train", "test"), per_class):
            for label in classes:
                (root / split / label).mkdir(parents=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(root / split / label / f"{i:04d}.png")
                    written[(split, label, i)] = pixels
        return root, written
    return make


@pytest.fixture
def fake_gpu(monkeypatch):
    """Stand in a GPU of a given compute capability: a T4 is (7, 5), an A100 (8, 0), an H100 (9, 0)."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        return torch.device("cuda")
    return install


@pytest.fixture
def fake_cpuinfo(monkeypatch, tmp_path):
    """``fake_cpuinfo(text)``: code that reads ``/proc/cpuinfo`` reads ``text`` instead."""
    def install(text):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(text)
        real_open = open
        monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
            cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    return install
