"""ShuffleNet V1 (Zhang et al., CVPR 2018) in PyTorch: the companion package of the book.

The chapters build each piece by hand and then import it from here.
"""

from .complexity import count_macs, count_params
from .conv import conv1x1, conv3x3
from .model import GROUPS, SCALES, WIDTHS, ShuffleNetV1, scaled_widths, shufflenet_v1, width_source
from .shuffle import channel_shuffle
from .unit import MIXINGS, ShuffleUnit

__all__ = [
    "GROUPS", "MIXINGS", "SCALES", "WIDTHS", "ShuffleNetV1", "ShuffleUnit", "channel_shuffle", "conv1x1",
    "conv3x3", "count_macs", "count_params", "scaled_widths", "shufflenet_v1", "width_source",
]
