"""The two convolutions ShuffleNet is built from: 1x1 (pointwise) and 3x3, either optionally grouped.

Neither has a bias: in ShuffleNet every convolution is followed by a BatchNorm, whose shift makes a
bias redundant (Zhang et al., 2018; Ioffe and Szegedy, 2015).
"""

from torch import nn

from ._checks import check_choice, check_positive_int


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    check_positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}; "
            f"allowed groups here are the common divisors of the two"
        )


def conv1x1(in_channels: int, out_channels: int, groups: int = 1) -> nn.Conv2d:
    """A 1x1 (pointwise) convolution with ``groups`` groups and no bias.

    With ``groups=g`` each output channel sees only the ``in_channels / g`` input channels of its own
    group, which divides parameters and multiply-adds by ``g``: the paper's pointwise group convolution.
    """
    _check_groups(in_channels, out_channels, groups)
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, groups=groups, bias=False)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1, ``stride`` 1 or 2, ``groups`` groups and no bias.

    The depthwise convolution of the ShuffleNet unit is ``conv3x3(c, c, stride, groups=c)``: one filter
    per channel. ``groups=g`` with ``g < c`` is a group convolution, not a depthwise one.
    """
    _check_groups(in_channels, out_channels, groups)
    check_choice("stride", stride, (1, 2))
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, groups=groups,
                     bias=False)
