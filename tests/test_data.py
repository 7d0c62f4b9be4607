"""Tests of shufflenet.data: loading, the fast on-device augmentation and its DataLoader reference."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from shufflenet.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PADDING,
    DeviceLoader,
    Split,
    cutout,
    load_data,
    make_dataloader,
    normalize,
    random_crop_flip,
    synthetic_cifar,
)


def distinct_images(n, seed=0):
    """Images whose pixels are all different, so a crop can be located in its source unambiguously."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randperm(n * 3 * 32 * 32, generator=g)
    return values.view(n, 3, 32, 32)  # int64; random_crop_flip does not care about the dtype


def test_crop_flip_keeps_shape_and_dtype():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_flip_is_exactly_a_flip():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    centre = torch.full((4,), PADDING)
    flipped = random_crop_flip(images, offsets=(centre, centre, torch.ones(4, dtype=torch.bool)))
    kept = random_crop_flip(images, offsets=(centre, centre, torch.zeros(4, dtype=torch.bool)))
    assert torch.equal(flipped, images.flip(-1))
    assert torch.equal(kept, images)


def test_crop_matches_slicing_the_padded_image():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    dy, dx, flip = torch.tensor([0, 8, 3]), torch.tensor([8, 0, 5]), torch.tensor([True, False, True])
    out = random_crop_flip(images, offsets=(dy, dx, flip))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(3):
        expected = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(out[i], expected.flip(-1) if flip[i] else expected)


def test_random_offsets_stay_within_the_padding():
    images = distinct_images(48) + 1  # + 1: the zero padding never matches an image pixel
    out = random_crop_flip(images, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    seen_offsets, flips = set(), 0
    for i in range(len(images)):
        crops = {(dy, dx): padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
        found = [(dy, dx, f) for (dy, dx), crop in crops.items() for f in (False, True)
                 if torch.equal(out[i], crop.flip(-1) if f else crop)]
        assert len(found) == 1, f"image {i}: crop not found exactly once in its padded source"
        seen_offsets.add(found[0][:2])
        flips += found[0][2]
    assert all(0 <= dy <= 8 and 0 <= dx <= 8 for dy, dx in seen_offsets)
    assert len(seen_offsets) > 20 and 10 <= flips <= 38  # draws really vary


def test_normalize_matches_torchvision():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    torch.testing.assert_close(normalize(images), reference(images), rtol=0, atol=1e-6)


def test_fast_path_equals_dataloader_without_augmentation():
    _, test, _ = load_data("synthetic", limit=100)
    fast = list(DeviceLoader(test, 32, "cpu", train=False))
    reference = list(make_dataloader(test, 32, train=False))
    assert len(fast) == len(reference) == 4
    for (xf, yf), (xr, yr) in zip(fast, reference):
        assert torch.equal(yf, yr)
        assert xf.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xf, xr, rtol=0, atol=1e-6)


def test_device_loader_is_seeded_by_epoch():
    train, _, _ = load_data("synthetic", limit=96)
    loader = DeviceLoader(train, 32, "cpu", train=True, seed=0)
    assert len(loader) == 3
    first = [x for x, _ in loader]
    again = [x for x, _ in loader]
    loader.set_epoch(1)
    other = [x for x, _ in loader]
    loader.set_epoch(0, start_step=2)
    tail = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert len(tail) == 1 and torch.equal(tail[0], first[2])  # skipping batches replays the rest exactly
    assert first[0].shape == (32, 3, 32, 32) and first[0].dtype == torch.float32


def test_cutout_erases_a_square_clipped_at_the_border():
    images = torch.ones(3, 2, 8, 8)
    out = cutout(images, 4, (torch.tensor([4, 0, 7]), torch.tensor([4, 0, 7])))
    erased = (out == 0).sum(dim=(1, 2, 3)).tolist()
    assert erased == [2 * 16, 2 * 4, 2 * 9]  # 4x4 inside; 2x2 and 3x3 where the border clips it
    assert torch.equal(out[0, :, 2:6, 2:6], torch.zeros(2, 4, 4))  # rows and columns 2 to 5
    assert out[0].sum() == 2 * (64 - 16) and torch.equal(images, torch.ones(3, 2, 8, 8))  # not in place


def test_cutout_in_the_fast_path_leaves_the_crops_as_they_were():
    """--cutout 8 only adds erased squares (value 0, the mean colour) to the batches of a run without it,
    and a process's share of a global batch is the same slice with or without it."""
    train, _, _ = load_data("synthetic", limit=96)
    plain, cut = (DeviceLoader(train, 32, "cpu", train=True, seed=1, cutout=size) for size in (0, 8))
    for (a, labels_a), (b, labels_b) in zip(plain, cut, strict=True):
        changed = a != b
        assert torch.equal(labels_a, labels_b) and (b[changed] == 0).all()
        per_image = (b == 0).all(dim=1).sum(dim=(1, 2))  # erased positions of each image
        assert per_image.max() <= 64 and (per_image >= 16).all()  # at least a clipped 4x4 corner
    halves = [DeviceLoader(train, 32, "cpu", train=True, seed=1, cutout=8, rank=r, world_size=2)
              for r in (0, 1)]
    for whole, *shares in zip(cut, *halves, strict=True):
        assert torch.equal(whole[0], torch.cat([x for x, _ in shares]))


def test_subset_is_fixed_and_mixes_classes():
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as ImageFolder gives them
    split = Split(torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), labels)
    a, b = split.subset(200), split.subset(200)
    assert len(a) == 200 and torch.equal(a.labels, b.labels)
    assert torch.bincount(a.labels, minlength=10).min() >= 10
    assert split.subset(None) is split and split.subset(5000) is split


def test_synthetic_data_is_deterministic_and_learnable():
    (train_a, test_a), (train_b, _) = synthetic_cifar(64, 32), synthetic_cifar(64, 32)
    assert torch.equal(train_a.images, train_b.images) and train_a.images.dtype == torch.uint8
    assert train_a.images.shape == (64, 3, 32, 32) and test_a.labels.shape == (32,)
    # each class has its own mean colour, so a nearest-mean classifier already does well
    means = torch.stack([train_a.images[train_a.labels == c].float().mean(dim=(0, 2, 3))
                         for c in train_a.labels.unique()])
    assert means.std(0).mean() > 10


def test_image_folder(tmp_path, image_folder):
    root, written = image_folder("tiny")
    train, test, classes = load_data(str(root))
    assert classes == ["cat", "dog"]
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and test.labels.tolist() == [0, 0, 1, 1]
    # PNG is lossless: the decoded pixels are the written ones
    assert np.array_equal(train.images[4].permute(1, 2, 0).numpy(), written[("train", "dog", 1)])
    cache = tmp_path / "tiny.pt"
    assert cache.is_file()
    again, _, _ = load_data(str(root))  # now from the cache
    assert torch.equal(again.images, train.images)


def test_image_folder_needs_train_and_test(tmp_path):
    (tmp_path / "only_train" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="test"):
        load_data(str(tmp_path / "only_train"))
