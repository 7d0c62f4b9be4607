"""Counting parameters and multiply-adds, the two numbers the paper compares networks by."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, exclude_classifier: bool = False) -> int:
    """Number of learnable parameters; ``exclude_classifier`` leaves out a final ``model.classifier``."""
    total = sum(p.numel() for p in model.parameters())
    if exclude_classifier:
        total -= sum(p.numel() for p in model.classifier.parameters())
    return total


def count_macs(model: nn.Module, input_size: int = 224, exclude_classifier: bool = True) -> int:
    """Multiply-adds of one forward pass on one ``3 x input_size x input_size`` image.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which reports 2 FLOPs per multiply-add for
    convolutions and matrix products and ignores BatchNorm, ReLU, pooling and the shuffle, as the paper
    does. The classifier is left out by default because Table 1 appears to leave it out. That is an
    inference (the paper does not say): without it all five counts of Table 1 round to the paper's,
    with it only two do; but Table 2's 0.5x (38 M) fits only with it (37.6 M, against 37.1 M without).
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    macs = counter.get_total_flops() // 2
    if exclude_classifier:
        macs -= model.classifier.in_features * model.classifier.out_features
    return macs
