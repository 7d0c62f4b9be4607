"""Tests of shufflenet.complexity: count_params and count_macs on modules whose counts are known by hand."""

import pytest
from torch import nn

from shufflenet import count_macs, count_params


class Tiny(nn.Module):
    """A 3x3 convolution (3 -> 8 channels, stride 2), global pooling and a classifier, as the network ends."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8, classes)

    def forward(self, x):
        return self.classifier(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def test_count_params_with_and_without_the_classifier():
    model = Tiny()
    conv, bn, classifier = 8 * 3 * 9, 2 * 8, 8 * 5 + 5
    assert count_params(model) == conv + bn + classifier
    assert count_params(model, exclude_classifier=True) == conv + bn


@pytest.mark.parametrize("size", [32, 224])
def test_count_macs_counts_convolutions_and_the_classifier_only(size):
    model = Tiny()
    conv = (size // 2) ** 2 * 8 * 3 * 9          # one multiply-add per weight per output position
    assert count_macs(model, size) == conv        # BatchNorm, ReLU and pooling are not counted
    assert count_macs(model, size, exclude_classifier=False) == conv + 8 * 5


def test_count_macs_leaves_the_mode_as_it_found_it():
    model = Tiny().train()
    count_macs(model, 32)
    assert model.training
    model.eval()
    count_macs(model, 32)
    assert not model.training
