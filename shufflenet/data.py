"""CIFAR-10 data for training ShuffleNet V1: loading, a fast on-device pipeline, and its reference.

Three sources, all returned as uint8 image tensors of shape (N, 3, 32, 32) with int64 labels:

* ``"cifar10"``: the official CIFAR-10 through :class:`torchvision.datasets.CIFAR10` (downloads it);
* a directory laid out for :class:`torchvision.datasets.ImageFolder` (``train/<class>/*`` and
  ``test/<class>/*``), for instance the JPEG copy of CIFAR-10; the decoded tensors are cached next to
  the directory (``<dir>.pt``) when that is writable, because decoding 60,000 small files takes a while;
* ``"synthetic"``: random but learnable images (each class has its own mean colour), for offline tests.

Two pipelines turn them into normalised, augmented float batches:

* :class:`DeviceLoader`, the fast path: the whole split lives on the training device as one uint8
  tensor, and each batch is cropped, flipped and normalised there (and optionally cut out) with a
  handful of tensor operations, without any per-image Python;
* :func:`make_dataloader`, the reference: a :class:`torch.utils.data.DataLoader` that applies
  ``torchvision.transforms.v2`` to one image at a time, as most tutorials do.

``python -m shufflenet.bench pipeline`` measures both (``shufflenet/bench/pipeline.py``).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .runtime import atomic_save

# Per-channel mean and standard deviation of the CIFAR-10 training images (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PADDING = 4  # random crop: pad by 4 pixels on every side, then cut a 32x32 window (offsets 0..8)


@dataclass
class Split:
    """One split of a data set: ``images`` uint8 (N, 3, H, W) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None, seed: int = 0) -> "Split":
        """The first ``limit`` images of a fixed random order (so every class is represented)."""
        if limit is None or limit >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        order = order.sort().values  # keep the original order among the chosen images
        return Split(self.images[order], self.labels[order])


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

def load_cifar10(root: str | os.PathLike, download: bool = True) -> tuple[Split, Split]:
    """The official CIFAR-10 via torchvision (downloaded into ``root`` the first time)."""
    from torchvision.datasets import CIFAR10

    splits = []
    for train in (True, False):
        ds = CIFAR10(str(root), train=train, download=download)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        splits.append(Split(images, torch.tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1]


def synthetic_cifar(num_train: int = 512, num_test: int = 256, num_classes: int = 10,
                    seed: int = 0) -> tuple[Split, Split]:
    """Random 32x32 images whose mean colour depends on the class: learnable, tiny, offline."""
    generator = torch.Generator().manual_seed(seed)
    class_colours = torch.randint(40, 216, (num_classes, 3, 1, 1), generator=generator)

    def make(n: int) -> Split:
        labels = torch.randint(0, num_classes, (n,), generator=generator)
        noise = torch.randint(-40, 41, (n, 3, 32, 32), generator=generator)
        images = (class_colours[labels] + noise).clamp(0, 255).to(torch.uint8)
        return Split(images, labels)

    return make(num_train), make(num_test)


def _read_image_folder(folder: Path) -> tuple[Split, list[str]]:
    import numpy as np
    from PIL import Image
    from torchvision.datasets import ImageFolder

    index = ImageFolder(str(folder))  # only for its sorted class list and file list; no decoding here
    images = torch.empty((len(index.samples), 3, 32, 32), dtype=torch.uint8)
    for i, (path, _) in enumerate(index.samples):
        with Image.open(path) as image:
            pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        if pixels.shape[1:] != (32, 32):
            raise ValueError(f"{path}: expected a 32x32 image, got {tuple(pixels.shape[1:])}")
        images[i] = pixels
    labels = torch.tensor([label for _, label in index.samples], dtype=torch.int64)
    return Split(images, labels), list(index.classes)


def load_image_folder(directory: str | os.PathLike, cache: bool = True) -> tuple[Split, Split, list[str]]:
    """A ``train/<class>/*`` + ``test/<class>/*`` directory, decoded once and cached as ``<dir>.pt``."""
    directory = Path(directory)
    for split in ("train", "test"):
        if not (directory / split).is_dir():
            raise FileNotFoundError(f"{directory} has no '{split}' folder (expected {split}/<class>/*)")
    cache_path = directory.parent / (directory.name + ".pt")
    if cache and cache_path.is_file():
        try:
            stored = torch.load(cache_path, weights_only=True)
            return (Split(stored["train_images"], stored["train_labels"]),
                    Split(stored["test_images"], stored["test_labels"]), list(stored["classes"]))
        except Exception:
            pass  # a stale or broken cache: decode again and overwrite it below
    train, classes = _read_image_folder(directory / "train")
    test, test_classes = _read_image_folder(directory / "test")
    if test_classes != classes:
        raise ValueError(f"{directory}: train and test folders have different classes")
    if cache and os.access(directory.parent, os.W_OK):
        atomic_save({"train_images": train.images, "train_labels": train.labels,
                            "test_images": test.images, "test_labels": test.labels,
                            "classes": classes}, cache_path)
    return train, test, classes


def load_data(data: str, root: str | os.PathLike | None = None, limit: int | None = None,
              seed: int = 0) -> tuple[Split, Split, list[str]]:
    """``data`` is ``"cifar10"``, ``"synthetic"`` or a directory; ``limit`` caps images per split."""
    if data == "cifar10":
        train, test = load_cifar10(root or "data")
        classes = list(CIFAR10_CLASSES)
    elif data == "synthetic":
        train, test = synthetic_cifar(num_train=limit or 512, num_test=limit or 256, seed=seed)
        classes = list(CIFAR10_CLASSES)
    else:
        train, test, classes = load_image_folder(data)
    return train.subset(limit, seed), test.subset(limit, seed), classes


# ----------------------------------------------------------------------------------------------------
# The fast path: augmentation of a whole batch on the device
# ----------------------------------------------------------------------------------------------------

def random_crop_flip(images: torch.Tensor, padding: int = PADDING, flip: bool = True,
                     generator: torch.Generator | None = None,
                     offsets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8 batch, in one gather.

    Each image gets its own offsets ``dy, dx`` in ``[0, 2 * padding]`` and its own coin for the flip.
    Rather than looping over images, we build, for every image, the row and column indices its output
    reads from the padded batch; a flip just reads the columns right to left. ``offsets`` (dy, dx,
    flipped) may be passed to make the result predictable (tests do).
    """
    n, c, h, w = images.shape
    device = images.device
    dy, dx, flipped = crop_flip_offsets(n, padding, flip, generator, device) if offsets is None else offsets
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))  # zeros, like RandomCrop
    rows = dy[:, None] + torch.arange(h, device=device)                       # (N, H)
    ascending = torch.arange(w, device=device)
    cols = dx[:, None] + torch.where(flipped[:, None], w - 1 - ascending, ascending)  # (N, W)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def crop_flip_offsets(n: int, padding: int = PADDING, flip: bool = True,
                      generator: torch.Generator | None = None, device="cpu") -> tuple:
    """The random draws of :func:`random_crop_flip` for ``n`` images: offsets ``dy``, ``dx`` and flips."""
    dy = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    flipped = (torch.rand(n, device=device, generator=generator) < 0.5) if flip \
        else torch.zeros(n, dtype=torch.bool, device=device)
    return dy, dx, flipped


def cutout(images: torch.Tensor, size: int, centres: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cutout (DeVries and Taylor, 2017): a ``size`` x ``size`` square of each normalised image set to 0,
    the data set's mean colour, centred on that image's ``centres`` (rows, columns) and clipped at the
    border, so a square near an edge erases less. One mask for the whole batch, no per-image Python."""
    n, _, h, w = images.shape
    device = images.device
    top, left = centres[0] - size // 2, centres[1] - size // 2
    rows = torch.arange(h, device=device)[None, :] - top[:, None]   # (N, H): offset into the square
    cols = torch.arange(w, device=device)[None, :] - left[:, None]  # (N, W)
    inside = ((rows >= 0) & (rows < size))[:, None, :, None] & ((cols >= 0) & (cols < size))[:, None, None, :]
    return images.masked_fill(inside, 0)


def cutout_centres(n: int, height: int, width: int, generator: torch.Generator | None = None,
                   device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of :func:`cutout` for ``n`` images: each square's centre, anywhere in the image."""
    return (torch.randint(0, height, (n,), device=device, generator=generator),
            torch.randint(0, width, (n,), device=device, generator=generator))


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> float in [0, 1] -> (x - mean) / std per channel, as ToDtype(scale=True) + Normalize."""
    mean = torch.as_tensor(mean, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    return (images.to(dtype) / 255 - mean) / std


def epoch_generator(seed: int, epoch: int, step: int | None = None, device="cpu") -> torch.Generator:
    """A generator seeded by (seed, epoch[, step]): resuming mid-run replays exactly the same draws."""
    value = (seed * 1_000_003 + epoch) * 1_000_003 + (0 if step is None else step + 1)
    return torch.Generator(device=device).manual_seed(value % (2 ** 63))


class DeviceLoader:
    """The fast path: batches cut from one uint8 tensor that lives on the training device.

    Iterating gives ``(images, labels)`` with images already augmented (if ``train``: random crop and
    flip, and with ``cutout`` > 0 a square of that size erased, :func:`cutout`), normalised, float32 and in
    ``channels_last`` layout. ``set_epoch(e)`` fixes the shuffling and augmentation of
    epoch ``e`` (seeded by ``seed`` and ``e``), and ``start_step`` skips batches already trained on.

    In a run of ``world_size`` processes, ``batch_size`` is the global batch: every process draws the
    same order and the same crops and flips for the whole batch, and keeps its own slice (``rank``), so
    the slices put together are the one-process batch whatever the number of processes.
    """

    def __init__(self, split: Split, batch_size: int, device, train: bool, seed: int = 0,
                 channels_last: bool = True, rank: int = 0, world_size: int = 1, cutout: int = 0):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.train = train  # shuffle, drop the last partial batch and augment; else plain, ordered batches
        self.seed = seed
        self.channels_last = channels_last
        self.cutout = cutout
        # Made once: copying the constants to the GPU for every batch would wait for the GPU each time.
        self.mean = torch.tensor(CIFAR10_MEAN, device=self.device)
        self.std = torch.tensor(CIFAR10_STD, device=self.device)
        self.epoch = 0
        self.start_step = 0
        if train and batch_size % world_size:
            raise ValueError(f"the batch size {batch_size} does not split evenly between {world_size} "
                             f"processes")
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (of its indices, or of its random draws)."""
        return batch if self.world_size == 1 else batch.tensor_split(self.world_size)[self.rank]

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for step in range(self.start_step, len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.images[self.share(index)]
            if self.train:  # the draws for the whole global batch, then this process's slice
                generator = epoch_generator(self.seed, self.epoch, step, device=self.device)
                offsets = crop_flip_offsets(len(index), generator=generator, device=self.device)
                images = random_crop_flip(images, offsets=tuple(map(self.share, offsets)))
            images = normalize(images, self.mean, self.std)
            if self.train and self.cutout:  # drawn after the crops: without cutout, those stay the same
                centres = cutout_centres(len(index), *images.shape[2:], generator, self.device)
                images = cutout(images, self.cutout, tuple(map(self.share, centres)))
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[self.share(index)]


# ----------------------------------------------------------------------------------------------------
# The reference: a per-image DataLoader with torchvision.transforms.v2
# ----------------------------------------------------------------------------------------------------

def reference_transform(augment: bool):
    """The usual per-image CIFAR-10 transform, written with torchvision.transforms.v2."""
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(32, padding=PADDING), v2.RandomHorizontalFlip()] if augment else []
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    return v2.Compose(steps + to_float)


class TransformedSplit(Dataset):
    """A :class:`Split` seen one image at a time through a transform (what a DataLoader needs)."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.transform(self.split.images[i]), self.split.labels[i]


def make_dataloader(split: Split, batch_size: int, train: bool, num_workers: int = 0,
                    seed: int = 0, epoch: int = 0) -> DataLoader:
    """The reference pipeline; with ``train`` it shuffles (seeded by seed and epoch) and augments."""
    return DataLoader(TransformedSplit(split, reference_transform(augment=train)), batch_size=batch_size,
                      shuffle=train, drop_last=train, num_workers=num_workers,
                      generator=epoch_generator(seed, epoch), persistent_workers=False)


class ReferenceLoader:
    """The reference pipeline behind the same interface as :class:`DeviceLoader`.

    ``set_epoch(e, start_step)`` then iterating gives the batches of epoch ``e`` from ``start_step`` on.
    The per-image transforms draw from torch's global generator (in the workers, from seeds it hands
    them), so each epoch seeds it from ``(seed, epoch)``: a resumed epoch draws the same crops again.
    """

    def __init__(self, split: Split, batch_size: int, num_workers: int = 0, seed: int = 0):
        self.split, self.batch_size, self.num_workers, self.seed = split, batch_size, num_workers, seed
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return len(self.split) // self.batch_size

    def __iter__(self):
        torch.manual_seed(epoch_generator(self.seed, self.epoch).initial_seed())
        loader = make_dataloader(self.split, self.batch_size, train=True, num_workers=self.num_workers,
                                 seed=self.seed, epoch=self.epoch)
        return itertools.islice(iter(loader), self.start_step, None)


# ----------------------------------------------------------------------------------------------------
# ImageNet-sized folders: the paper's recipe, one image at a time, each process its own share
# ----------------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transform(train: bool, size: int = 224):
    """The paper's augmentation as Megvii's training code applies it: a random resized crop, colour
    jitter (brightness, contrast and saturation 0.4) and a horizontal flip; for evaluation, the shorter
    side resized to 256 and the central 224 x 224."""
    from torchvision.transforms import v2

    if train:
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.ColorJitter(0.4, 0.4, 0.4),
                 v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class SeededImageFolder(Dataset):
    """An :class:`~torchvision.datasets.ImageFolder` whose random transform is seeded by (seed, epoch,
    image): an image gets the same crop in an epoch whichever process, worker or step loads it, so a
    resumed run sees exactly the images the uninterrupted one saw."""

    def __init__(self, folder: str | os.PathLike, transform, seed: int = 0):
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(folder))
        self.classes = list(self.folder.classes)
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        image = self.folder.loader(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_generator(self.seed, self.epoch, i).initial_seed())
            return self.transform(image), label


class FolderLoader:
    """Batches of an ImageNet-style folder, behind the same interface as :class:`DeviceLoader`.

    Training: a :class:`~torch.utils.data.distributed.DistributedSampler` (``set_epoch`` reshuffles)
    deals each process every ``world_size``-th image of one permutation, so step ``k`` of all processes
    together covers the same ``batch_size`` images as step ``k`` of one process. Evaluation: each process
    takes a contiguous share of the images, each image once. Decoding runs in ``num_workers`` processes.
    """

    def __init__(self, folder, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False, size: int = 224):
        from torch.utils.data.distributed import DistributedSampler

        if batch_size % world_size:
            raise ValueError(f"the batch size {batch_size} does not split evenly between {world_size} "
                             f"processes")
        self.dataset = SeededImageFolder(folder, imagenet_transform(train, size), seed)
        self.classes, self.train, self.batch_size = self.dataset.classes, train, batch_size
        self.local_batch = batch_size // world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        if train:
            self.sampler = DistributedSampler(self.dataset, world_size, rank, shuffle=True, seed=seed,
                                              drop_last=True)
        else:
            self.sampler = torch.arange(len(self.dataset)).tensor_split(world_size)[rank].tolist()
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        if self.train:
            return len(self.dataset) // self.batch_size
        return -(-len(self.sampler) // self.local_batch)

    def __iter__(self):
        self.dataset.epoch = self.epoch
        if self.train:
            self.sampler.set_epoch(self.epoch)
        indices = list(self.sampler)[self.start_step * self.local_batch:]
        return iter(DataLoader(self.dataset, batch_size=self.local_batch, sampler=indices,
                               num_workers=self.num_workers, pin_memory=self.pin_memory,
                               drop_last=self.train, persistent_workers=False))
