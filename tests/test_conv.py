"""Tests of shufflenet.conv: the convolution helpers Chapter 1 builds (grouping, cost, argument checks)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from shufflenet import conv1x1, conv3x3


def split_group_conv(x, weight, groups, stride=1, padding=0):
    """A group convolution as `groups` ordinary convolutions on consecutive channel chunks."""
    chunks = zip(x.split(x.shape[1] // groups, dim=1), weight.split(weight.shape[0] // groups, dim=0))
    return torch.cat([F.conv2d(c, w, stride=stride, padding=padding) for c, w in chunks], dim=1)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6, 12])
@pytest.mark.parametrize("stride", [1, 2])
def test_helpers_equal_split_group_convolution(groups, stride):
    torch.manual_seed(groups)
    x = torch.randn(2, 12, 9, 9)
    pointwise, spatial = conv1x1(12, 24, groups=groups), conv3x3(24, 24, stride=stride, groups=groups)
    with torch.no_grad():
        expected = split_group_conv(split_group_conv(x, pointwise.weight, groups), spatial.weight, groups,
                                    stride=stride, padding=1)
        torch.testing.assert_close(spatial(pointwise(x)), expected)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6, 8, 240])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_cost_is_dense_cost_divided_by_groups(groups, kernel_size):
    conv = conv1x1(240, 240, groups) if kernel_size == 1 else conv3x3(240, 240, groups=groups)
    params = kernel_size * kernel_size * 240 * 240 // groups
    assert conv.weight.numel() == params and conv.bias is None
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        conv(torch.zeros(1, 240, 14, 14, device="meta"))
    assert counter.get_total_flops() // 2 == params * 14 * 14


@pytest.mark.parametrize("groups", [1, 4, 12])
def test_output_channel_sees_only_its_group(groups):
    conv = conv3x3(12, 12, groups=groups)
    size = 12 // groups
    for i in range(12):
        x = torch.zeros(1, 12, 5, 5)
        x[0, i] = torch.randn(5, 5)
        with torch.no_grad():
            reached = (conv(x)[0].abs().sum(dim=(1, 2)) > 0).nonzero().flatten().tolist()
        first = i // size * size
        assert reached == list(range(first, first + size))


@pytest.mark.parametrize("make", [conv1x1, conv3x3])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"groups": 0}, ValueError, r"groups must be a positive int, got 0"),
    ({"groups": -3}, ValueError, r"groups must be a positive int, got -3"),
    ({"groups": 2.0}, TypeError, r"groups must be a positive int, got float 2.0"),
    ({"groups": True}, TypeError, r"groups must be a positive int, got bool True"),
    ({"groups": 7}, ValueError, r"groups=7 must divide both in_channels=12 and out_channels=24"),
    ({"groups": 8}, ValueError, r"groups=8 must divide both"),
])
def test_helpers_reject_bad_groups(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(12, 24, **kwargs)


@pytest.mark.parametrize("make", [conv1x1, conv3x3])
def test_helpers_reject_bad_channel_counts(make):
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        make(0, 24)
    with pytest.raises(TypeError, match="out_channels must be a positive int"):
        make(12, 24.0)


@pytest.mark.parametrize("stride", [2.0, True, 3, 0])
def test_conv3x3_rejects_a_stride_other_than_1_or_2(stride):
    with pytest.raises(ValueError, match=rf"stride must be one of \{{1, 2\}}, got {stride!r}"):
        conv3x3(8, 8, stride=stride)


@pytest.mark.parametrize("size, stride, expected", [(28, 1, 28), (28, 2, 14), (7, 2, 4), (56, 2, 28)])
def test_conv3x3_keeps_the_size_at_stride_1_and_halves_it_at_stride_2(size, stride, expected):
    depthwise = conv3x3(60, 60, stride=stride, groups=60)
    assert depthwise.weight.shape == (60, 1, 3, 3)  # one 3x3 filter per channel
    with torch.no_grad():
        assert depthwise(torch.zeros(1, 60, size, size, device="meta")).shape == (1, 60, expected, expected)
