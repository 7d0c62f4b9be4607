"""Tests of shufflenet.shuffle: `channel_shuffle` and the facts Chapter 2 demonstrates, over many shapes."""

import pytest
import torch
from torch import nn

from shufflenet import channel_shuffle

CASES = [(1, 1), (2, 1), (2, 2), (6, 2), (6, 3), (12, 3), (12, 4), (16, 2), (24, 8), (60, 5), (240, 3),
         (544, 4), (9, 3), (7, 7), (384, 8)]


def source_of(c, groups):
    """source[p] = the input channel that the shuffle puts at position p."""
    return channel_shuffle(torch.arange(c).reshape(1, c, 1, 1), groups).flatten()


@pytest.mark.parametrize("c, groups", CASES)
def test_matches_torch_channel_shuffle(c, groups):
    x = torch.randn(3, c, 4, 5)
    assert torch.equal(channel_shuffle(x, groups), nn.ChannelShuffle(groups)(x))


@pytest.mark.parametrize("c, groups", CASES)
def test_is_a_permutation_of_channels(c, groups):
    assert torch.equal(source_of(c, groups).sort().values, torch.arange(c))
    x = torch.randn(2, c, 3, 3)
    y = channel_shuffle(x, groups)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y.sort(dim=1).values, x.sort(dim=1).values)


@pytest.mark.parametrize("c, groups", CASES)
def test_position_formula(c, groups):
    """Channel i * (C/g) + j (the j-th channel of group i) lands at position j * g + i."""
    source = source_of(c, groups)
    size = c // groups
    for i in range(groups):
        for j in range(size):
            assert source[j * groups + i] == i * size + j


@pytest.mark.parametrize("c", [1, 5, 12, 240])
def test_one_group_and_one_channel_per_group_are_identity(c):
    x = torch.randn(2, c, 3, 3)
    assert torch.equal(channel_shuffle(x, 1), x)
    assert torch.equal(channel_shuffle(x, c), x)


@pytest.mark.parametrize("c, groups", CASES)
def test_inverse_is_shuffle_with_c_over_g_groups(c, groups):
    x = torch.randn(2, c, 3, 3)
    assert torch.equal(channel_shuffle(channel_shuffle(x, groups), c // groups), x)
    assert torch.equal(channel_shuffle(channel_shuffle(x, c // groups), groups), x)


@pytest.mark.parametrize("c, groups", [(12, 3), (12, 4), (16, 4), (24, 8), (52, 2), (240, 3)])
def test_order_is_multiplicative_order_of_g_mod_c_minus_1(c, groups):
    start = torch.arange(c).reshape(1, c, 1, 1)
    x, steps = channel_shuffle(start, groups), 1
    while not torch.equal(x, start):
        x, steps = channel_shuffle(x, groups), steps + 1
    expected = next(k for k in range(1, c) if pow(groups, k, c - 1) == 1 % (c - 1))
    assert steps == expected


def test_every_next_group_receives_every_source_group_when_c_at_least_g_squared():
    for c, groups in [(9, 3), (12, 3), (16, 4), (64, 8), (240, 3), (96, 8)]:
        size = c // groups
        source_group = source_of(c, groups) // size
        for band in range(groups):
            assert set(source_group[band * size:(band + 1) * size].tolist()) == set(range(groups))


def test_batch_and_spatial_positions_are_untouched():
    x = torch.randn(4, 12, 5, 6)
    y = channel_shuffle(x, 3)
    source = source_of(12, 3)
    assert torch.equal(y, x[:, source])


def test_output_is_contiguous_and_input_unchanged():
    x = torch.randn(2, 12, 3, 3)
    before = x.clone()
    y = channel_shuffle(x, 4)
    assert y.is_contiguous()
    assert torch.equal(x, before)


def test_gradient_flows_back_through_the_inverse_permutation():
    x = torch.randn(1, 12, 2, 2, requires_grad=True)
    weights = torch.randn(1, 12, 2, 2)
    (channel_shuffle(x, 3) * weights).sum().backward()
    assert torch.equal(x.grad, channel_shuffle(weights, 4))


@pytest.mark.parametrize("x, groups, error, match", [
    (torch.randn(1, 10, 4, 4), 3, ValueError, r"groups=3 must divide the number of channels C=10"),
    (torch.randn(1, 12, 2, 2), 5, ValueError, r"groups=5 must divide the number of channels C=12"),
    (torch.randn(1, 12, 4, 4), 0, ValueError, r"groups must be a positive int, got 0"),
    (torch.randn(1, 12, 2, 2), 2.0, TypeError, r"groups must be a positive int, got float 2.0"),
    (torch.randn(1, 12, 2, 2), True, TypeError, r"groups must be a positive int, got bool True"),
    (torch.randn(12, 4, 4), 3, ValueError, r"4-d \(N, C, H, W\) tensor, got shape \(12, 4, 4\)"),
    ([1, 2, 3], 3, TypeError, r"x must be a torch.Tensor"),
])
def test_rejects_bad_input_naming_the_argument(x, groups, error, match):
    with pytest.raises(error, match=match):
        channel_shuffle(x, groups)


def test_keeps_the_channels_last_memory_format():
    x = torch.randn(2, 12, 5, 4).to(memory_format=torch.channels_last)
    out = channel_shuffle(x, 3)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, nn.ChannelShuffle(3)(x.contiguous()))


def _paths(layers, c):
    """Boolean (output, input) matrix: True where output channel o depends on input channel i."""
    point = torch.randn(1, c, 1, 1, dtype=torch.float64)
    return torch.autograd.functional.jacobian(layers, point).reshape(c, c) != 0


@pytest.mark.parametrize("c, groups", [(12, 3), (16, 4), (24, 2), (64, 8)])
def test_shuffle_connects_every_group_of_two_stacked_group_convolutions(c, groups):
    """Chapter 2: without the shuffle the paths are block-diagonal; with it (c >= g^2) they are complete."""
    torch.manual_seed(c)
    first = nn.Conv2d(c, c, 1, groups=groups, bias=False).double()
    second = nn.Conv2d(c, c, 1, groups=groups, bias=False).double()
    group_of = torch.arange(c) // (c // groups)
    assert torch.equal(_paths(lambda x: second(first(x)), c), group_of[:, None] == group_of[None, :])
    assert _paths(lambda x: second(channel_shuffle(first(x), groups)), c).all()


@pytest.mark.parametrize("c, groups", [(24, 8), (48, 8), (8, 4)])
def test_one_shuffle_reaches_only_c_over_g_source_groups_when_c_below_g_squared(c, groups):
    size = c // groups
    assert size < groups
    source_group = source_of(c, groups) // size
    for band in range(groups):
        assert len(set(source_group[band * size:(band + 1) * size].tolist())) == size


@pytest.mark.parametrize("stride", [1, 2])
def test_shuffle_commutes_with_depthwise_conv_and_batchnorm_when_their_parameters_move(stride):
    """Shuffle-then-depthwise (the paper) equals depthwise-then-shuffle (official code), weights permuted."""
    torch.manual_seed(stride)
    c, groups = 12, 3
    before = nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c))
    with torch.no_grad():
        before[1].weight.uniform_(0.5, 1.5)
        before[1].bias.normal_()
        before[1].running_mean.normal_()
        before[1].running_var.uniform_(0.5, 2.0)
    before.eval()
    source = source_of(c, groups)
    after = nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c)).eval()
    state = {}
    for name, tensor in before.state_dict().items():
        if tensor.dim() > 0:
            moved = tensor.clone()
            moved[source] = tensor
            tensor = moved
        state[name] = tensor
    after.load_state_dict(state)
    x = torch.randn(2, c, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(before(channel_shuffle(x, groups)), channel_shuffle(after(x), groups))
