"""The ShuffleNet unit (Zhang et al., 2018, Section 3.2 and Figure 2)."""

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_positive_int
from .conv import conv1x1, conv3x3
from .shuffle import channel_shuffle

MIXINGS = ("shuffle", "none", "random")  # what connects the group convolutions (Table 3)


class ShuffleUnit(nn.Module):
    """A ShuffleNet unit: a ResNet bottleneck whose 1x1 convolutions are grouped and whose 3x3 is depthwise.

    Main branch (Figure 2b/c)::

        1x1 group conv -> BN -> ReLU -> channel shuffle -> 3x3 depthwise conv (stride) -> BN
        -> 1x1 group conv -> BN

    * ``stride=1`` (Figure 2b): ``out_channels == in_channels``; the input is added, then ReLU.
    * ``stride=2`` (Figure 2c): the shortcut is a 3x3 average pool with stride 2, and the main branch
      makes only ``out_channels - in_channels`` channels so that concatenating the two gives
      ``out_channels``; then ReLU.

    The bottleneck is ``out_channels // 4`` channels wide. There is no ReLU after the depthwise
    convolution: the paper follows Xception's suggestion there (Chollet's experiments found a
    nonlinearity right after the depthwise step hurts). MobileNet keeps one there: a ReLU in V1,
    a ReLU6 in V2. ``group_first_conv=False``
    keeps the first 1x1 convolution dense: the paper does this in the first unit of Stage 2, whose input
    has too few channels to be split (Table 1 caption).

    ``mixing`` is what connects the two group convolutions, the variants of the paper's Table 3:
    ``"shuffle"`` (the paper's unit), ``"none"`` (no shuffle: each group sees only its own channels
    from end to end) or ``"random"``, a control the paper does not run: a fixed random permutation of
    the bottleneck's channels, drawn from torch's generator when the unit is built (so
    ``torch.manual_seed`` fixes it, as it fixes the weights) and kept as a buffer, so it travels with
    the weights. Section 2 of the paper cites cuda-convnet's "random sparse convolution", which is
    equivalent to such a permutation before a group convolution. With one group there is nothing to
    mix, and every variant is the same unit.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 group_first_conv: bool = True, mixing: str = "shuffle"):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_choice("stride", stride, (1, 2))
        check_positive_int("groups", groups)
        check_choice("mixing", mixing, MIXINGS)
        if stride == 1 and out_channels != in_channels:
            raise ValueError(f"a stride-1 unit adds its input, so out_channels ({out_channels}) "
                             f"must equal in_channels ({in_channels})")
        if stride == 2 and out_channels <= in_channels:
            raise ValueError(f"a stride-2 unit concatenates its input, so out_channels ({out_channels}) "
                             f"must exceed in_channels ({in_channels})")
        mid_channels = out_channels // 4
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        first_groups = groups if group_first_conv else 1
        for name, channels, g in (("in_channels", in_channels, first_groups),
                                  ("out_channels // 4 (the bottleneck)", mid_channels, groups),
                                  ("the main branch's output channels", branch_channels, groups)):
            if channels % g:
                raise ValueError(f"groups={g} must divide {name} = {channels}")

        self.stride = stride
        self.groups = groups
        self.mixing = mixing if groups > 1 else "none"
        self.compress = nn.Sequential(conv1x1(in_channels, mid_channels, first_groups),
                                      nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(conv3x3(mid_channels, mid_channels, stride, groups=mid_channels),
                                       nn.BatchNorm2d(mid_channels))
        self.expand = nn.Sequential(conv1x1(mid_channels, branch_channels, groups),
                                    nn.BatchNorm2d(branch_channels))
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        if self.mixing == "random":
            self.register_buffer("permutation", torch.randperm(mid_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compress(x)
        if self.mixing == "shuffle":
            out = channel_shuffle(out, self.groups)
        elif self.mixing == "random":
            out = out.index_select(1, self.permutation)
        out = self.expand(self.depthwise(out))
        if self.stride == 1:
            return F.relu(out + x)
        return F.relu(torch.cat((self.shortcut(x), out), dim=1))
