"""Channel shuffle (Zhang et al., 2018, Section 3.1 and Figure 1).

Stacked group convolutions let each output group see only its own input group. Shuffling the channels
between them, so that every group receives channels from every other group, restores the flow of
information across groups at the price of one memory copy.
"""

import torch

from ._checks import check_positive_int


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Shuffle the channels of an ``(N, C, H, W)`` tensor among ``groups`` groups.

    The paper's recipe: reshape the channel axis to ``(groups, C // groups)``, transpose it to
    ``(C // groups, groups)`` and flatten it back. Channel ``c = i * (C // groups) + j`` (the ``j``-th
    channel of group ``i``) moves to position ``j * groups + i``. The result equals
    ``torch.nn.ChannelShuffle(groups)(x)``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    check_positive_int("groups", groups)
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"groups={groups} must divide the number of channels C={c}")
    # Equivalent to `x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)`, but the
    # copy goes into a tensor laid out like x, so a channels_last network stays channels_last (the
    # reshape would return NCHW and make the next convolution convert back).
    out = torch.empty_like(x)
    out.view(n, c // groups, groups, h, w).copy_(x.view(n, groups, c // groups, h, w).transpose(1, 2))
    return out
