"""The ShuffleNet V1 network (Zhang et al., 2018, Table 1) and its builder."""

import torch
from torch import nn

from ._checks import check_choice, check_positive_int
from .reference import OFFICIAL
from .unit import ShuffleUnit

GROUPS = (1, 2, 3, 4, 8)
SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)
STAGE_REPEATS = (4, 8, 4)

# (groups, scale) -> (stem, stage 2, stage 3, stage 4) output channels. Three sources, which
# `width_source` below returns for each row:
#   paper:   Table 1 of the paper (1x, every g; the stem is 24 channels throughout);
#   megvii:  the official implementation (megvii-model/ShuffleNet-Series), g = 3 and 8 at 0.5x, 1.5x, 2x;
#   rule:    `scaled_widths` below, for the combinations neither publishes.
WIDTHS = {
    (1, 0.25): (12, 36, 72, 144),
    (1, 0.5): (12, 72, 144, 288),
    (1, 1.0): (24, 144, 288, 576),
    (1, 1.5): (36, 216, 432, 864),
    (1, 2.0): (48, 288, 576, 1152),
    (2, 0.25): (12, 48, 104, 200),
    (2, 0.5): (12, 104, 200, 400),
    (2, 1.0): (24, 200, 400, 800),
    (2, 1.5): (36, 304, 600, 1200),
    (2, 2.0): (48, 400, 800, 1600),
    (3, 0.25): (12, 60, 120, 240),
    (3, 0.5): (12, 120, 240, 480),
    (3, 1.0): (24, 240, 480, 960),
    (3, 1.5): (24, 360, 720, 1440),
    (3, 2.0): (48, 480, 960, 1920),
    (4, 0.25): (12, 64, 144, 272),
    (4, 0.5): (12, 144, 272, 544),
    (4, 1.0): (24, 272, 544, 1088),
    (4, 1.5): (36, 416, 816, 1632),
    (4, 2.0): (48, 544, 1088, 2176),
    (8, 0.25): (16, 96, 192, 384),
    (8, 0.5): (16, 192, 384, 768),
    (8, 1.0): (24, 384, 768, 1536),
    (8, 1.5): (24, 576, 1152, 2304),
    (8, 2.0): (48, 768, 1536, 3072),
}


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(value / multiple + 0.5) * multiple)


def scaled_widths(groups: int, scale: float) -> tuple:
    """The rule behind the ``rule`` rows of :data:`WIDTHS`: scale Table 1's 1x widths by ``scale``.

    Each stage width is rounded (half up) to a multiple of ``4 * groups``, so that the bottleneck
    (``width // 4``) and every grouped 1x1 convolution split evenly into ``groups``; the stem's 24
    channels are scaled, kept at 12 or more, and rounded to a multiple of ``groups``, so that the first
    unit's main branch (``stage 2 - stem`` channels) splits evenly too. The floor of 12 is what makes
    0.25x cost the 13 M multiply-adds of the paper's Table 2 (a 6-channel stem gives 11 M). For the
    official widths the rule gives the same stage widths; the official code keeps a 24-channel stem at
    1.5x where the rule gives 36 (40 for g = 8).
    """
    stem = _round_to_multiple(max(WIDTHS[(groups, 1.0)][0] * scale, 12), groups)
    stages = tuple(_round_to_multiple(w * scale, 4 * groups) for w in WIDTHS[(groups, 1.0)][1:])
    return (stem,) + stages


def width_source(groups: int, scale: float) -> frozenset:
    """Where the :data:`WIDTHS` row of ``(groups, scale)`` comes from: a set of "paper", "megvii", "rule".

    "paper" for the 1x rows (Table 1 of the paper), "megvii" for the eight networks the official code
    publishes (the keys of ``reference.OFFICIAL``), and "rule" (:func:`scaled_widths`) for the others.
    """
    check_choice("groups", groups, GROUPS)
    check_choice("scale", scale, SCALES)
    sources = set()
    if float(scale) == 1.0:
        sources.add("paper")
    if (groups, float(scale)) in OFFICIAL:
        sources.add("megvii")
    return frozenset(sources or {"rule"})


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 (Zhang et al., 2018): a stem, three stages of ShuffleNet units, a classifier.

    ``widths`` is ``(stem, stage 2, stage 3, stage 4)`` output channels. The stem is a 3x3 convolution
    with stride 2, BatchNorm and ReLU, followed by a 3x3 max pool with stride 2 (224x224 becomes 56x56);
    each stage starts with a stride-2 unit. ``small_input=True`` is the variant for 32x32 images
    (CIFAR): the stem has stride 1 and no max pool, so Stage 2 starts from 32x32 rather than 8x8.

    Weights are initialised as torchvision initialises its ResNets: Kaiming-normal convolutions
    (fan-out, for ReLU networks; He et al., 2015), BatchNorm scale 1 and shift 0, and a classifier
    drawn from N(0, 0.01) with zero bias. The official code (megvii-model/ShuffleNet-Series,
    ShuffleNetV1/network.py) differs: the first convolution is drawn from N(0, 0.01); every other
    convolution from a normal distribution whose standard deviation is ``1 / (c_in / groups)``, one over
    the input channels of one group (so 1 for a depthwise convolution), not one over the fan-in
    ``c_in / groups * k * k``; BatchNorm shifts start at 1e-4; the classifier, N(0, 0.01), has no bias.
    The package keeps torchvision's scheme; BatchNorm after every convolution rescales each layer's
    output whatever the initial scale of its weights.

    ``mixing`` is passed to every unit (:class:`ShuffleUnit`: ``"shuffle"``, ``"none"`` or
    ``"random"``, the variants of Table 3). ``zero_init_residual=True`` sets the last BatchNorm scale of
    every residual branch to zero, as torchvision's ResNet does under the same name (Goyal et al.,
    2017): each stride-1 unit (13 of the 16) then starts as the identity, and the network as a shallow
    one, which keeps the first steps of training stable (Chapter 5 of the book).
    """

    def __init__(self, widths, groups: int = 3, num_classes: int = 1000, small_input: bool = False,
                 mixing: str = "shuffle", zero_init_residual: bool = False, stage_repeats=STAGE_REPEATS):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        stem_width, *stage_widths = widths
        self.groups = groups
        self.small_input = small_input
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=1 if small_input else 2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        stages, in_channels = [], stem_width
        for index, (repeats, out_channels) in enumerate(zip(stage_repeats, stage_widths)):
            units = [ShuffleUnit(in_channels, out_channels, stride=2, groups=groups,
                                 group_first_conv=index > 0, mixing=mixing)]
            units += [ShuffleUnit(out_channels, out_channels, stride=1, groups=groups, mixing=mixing)
                      for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages
        self.classifier = nn.Linear(in_channels, num_classes)
        self._initialize_weights(zero_init_residual)

    def _initialize_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for unit in self.modules():
                if isinstance(unit, ShuffleUnit) and unit.stride == 1:
                    nn.init.zeros_(unit.expand[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ShuffleNetV1 expects RGB images as an (N, 3, H, W) tensor, "
                             f"got shape {tuple(x.shape)}")
        x = self.maxpool(self.stem(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def shufflenet_v1(groups: int = 3, scale: float = 1.0, num_classes: int = 1000, small_input: bool = False,
                  mixing: str = "shuffle", zero_init_residual: bool = False) -> ShuffleNetV1:
    """Build "ShuffleNet ``scale``x (g = ``groups``)" of Zhang et al. (2018), Tables 1 and 2.

    ``groups`` is one of 1, 2, 3, 4, 8 and ``scale`` one of 0.25, 0.5, 1.0, 1.5, 2.0; the channel
    widths come from :data:`WIDTHS`. ``small_input=True`` builds the 32x32 (CIFAR) variant;
    ``mixing="none"`` the variant without channel shuffle and ``mixing="random"`` a random-permutation
    control (Table 3's ablation); ``zero_init_residual=True`` starts every residual branch at zero.

    For inference, ``model.to(memory_format=torch.channels_last)`` is faster on every device we
    measured, and ``torch.compile`` faster still (Chapter 6 of the book).
    """
    check_choice("groups", groups, GROUPS)
    check_choice("scale", scale, SCALES)
    check_positive_int("num_classes", num_classes)
    return ShuffleNetV1(WIDTHS[(groups, float(scale))], groups, num_classes, small_input, mixing,
                        zero_init_residual)
