"""Tests of shufflenet.unit: the ShuffleNet unit, and the facts Chapter 3 (notebooks/03_shufflenet_unit.ipynb)
relies on."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shufflenet import MIXINGS, ShuffleUnit, channel_shuffle, shufflenet_v1


def unit_macs(unit, channels, size):
    counter = FlopCounterMode(display=False)
    unit.eval()
    with counter, torch.no_grad():
        unit(torch.zeros(1, channels, size, size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("channels, size, groups", [(240, 28, g) for g in (1, 2, 3, 4)]
                         + [(480, 14, g) for g in (1, 2, 3, 4, 8)])
def test_stride1_unit_matches_section_3_2_formula(channels, size, groups):
    m = channels // 4
    unit = ShuffleUnit(channels, channels, stride=1, groups=groups)
    assert unit_macs(unit, channels, size) == size * size * (2 * channels * m // groups + 9 * m)
    conv_weights = sum(p.numel() for name, p in unit.named_parameters() if name.endswith("0.weight"))
    assert conv_weights == 2 * channels * m // groups + 9 * m


@pytest.mark.parametrize("c_in, c_out, size, groups",
                         [(240, 480, 28, 3), (384, 768, 28, 8), (200, 400, 28, 2)])
def test_stride2_unit_cost(c_in, c_out, size, groups):
    m = c_out // 4
    unit = ShuffleUnit(c_in, c_out, stride=2, groups=groups)
    expected = size * size * c_in * m // groups + (size // 2) ** 2 * (9 * m + m * (c_out - c_in) // groups)
    assert unit_macs(unit, c_in, size) == expected


def test_no_relu_after_depthwise_and_shortcut_first_in_concat():
    unit = ShuffleUnit(240, 480, stride=2, groups=3)
    assert [type(m).__name__ for m in unit.depthwise] == ["Conv2d", "BatchNorm2d"]
    assert unit.depthwise[0].groups == unit.depthwise[0].in_channels == 120
    x = torch.randn(1, 240, 28, 28)
    with torch.no_grad():
        out = unit.eval()(x)
    assert torch.equal(out[:, :240], torch.relu(torch.nn.functional.avg_pool2d(x, 3, 2, 1)))


def test_relu_after_concat_matches_the_official_relu_on_the_main_branch_for_non_negative_input():
    """Figure 2(c) puts the ReLU after the concatenation; the official code applies it to the main branch
    only. Inside the network a unit's input comes out of a ReLU, so its average pool is non-negative:
    both agree."""
    torch.manual_seed(0)
    unit = ShuffleUnit(240, 480, stride=2, groups=3).eval()
    x = torch.relu(torch.randn(2, 240, 28, 28))
    with torch.no_grad():
        main = unit.expand(unit.depthwise(channel_shuffle(unit.compress(x), 3)))
        official = torch.cat((torch.nn.functional.avg_pool2d(x, 3, 2, 1), torch.relu(main)), dim=1)
        assert torch.equal(unit(x), official)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_only_stage2_first_unit_keeps_its_first_conv_dense(groups):
    model = shufflenet_v1(groups)
    units = list(model.stage2) + list(model.stage3) + list(model.stage4)
    assert [u.compress[0].groups for u in units] == [1] + [groups] * (len(units) - 1)
    assert model.stage2[0].compress[0].weight.shape[1] == 24


def test_stage2_first_unit_grouping_options():
    dense = ShuffleUnit(24, 240, stride=2, groups=3, group_first_conv=False)
    grouped = ShuffleUnit(24, 240, stride=2, groups=3, group_first_conv=True)
    assert dense.compress[0].weight.shape == (60, 24, 1, 1)
    assert grouped.compress[0].weight.shape == (60, 8, 1, 1)
    with pytest.raises(ValueError, match="216"):
        ShuffleUnit(24, 240, stride=2, groups=5, group_first_conv=False)


def test_unit_shapes_and_bottleneck():
    unit = ShuffleUnit(240, 480, stride=2, groups=3).eval()
    assert unit.compress[0].out_channels == 480 // 4
    assert unit.expand[0].out_channels == 480 - 240
    assert unit(torch.randn(1, 240, 28, 28)).shape == (1, 480, 14, 14)
    same = ShuffleUnit(480, 480, stride=1, groups=3).eval()
    assert same(torch.randn(1, 480, 14, 14)).shape == (1, 480, 14, 14)


def test_stride1_unit_is_residual():
    unit = ShuffleUnit(48, 48, stride=1, groups=3).eval()
    nn.init.zeros_(unit.expand[1].weight)                     # main branch outputs zero
    x = torch.randn(2, 48, 8, 8)
    torch.testing.assert_close(unit(x), torch.relu(x))


def _mixed(unit, between, mixing):
    if mixing == "shuffle":
        return channel_shuffle(between, unit.groups)
    if mixing == "random":
        return between[:, unit.permutation]
    return between


@pytest.mark.parametrize("mixing", MIXINGS)
def test_mixing_decides_what_connects_the_group_convolutions(mixing):
    torch.manual_seed(0)
    unit = ShuffleUnit(48, 48, stride=1, groups=3, mixing=mixing).eval()
    x = torch.randn(2, 48, 8, 8)
    with torch.no_grad():
        between = _mixed(unit, unit.compress(x), mixing)
        expected = torch.relu(unit.expand(unit.depthwise(between)) + x)
        assert torch.equal(unit(x), expected)
        for other_mixing in set(MIXINGS) - {mixing}:  # the same weights, mixed otherwise, differ
            other = ShuffleUnit(48, 48, stride=1, groups=3, mixing=other_mixing).eval()
            other.load_state_dict(unit.state_dict(), strict=False)
            assert not torch.allclose(other(x), expected)


def test_random_mixing_is_a_fixed_permutation_drawn_from_the_seed_and_saved():
    torch.manual_seed(0)
    unit = ShuffleUnit(240, 240, stride=1, groups=3, mixing="random")
    permutation = unit.permutation
    assert sorted(permutation.tolist()) == list(range(60))        # a permutation of the bottleneck
    assert not torch.equal(permutation, torch.arange(60))
    assert torch.equal(unit.state_dict()["permutation"], permutation)  # travels with the weights
    torch.manual_seed(0)
    assert torch.equal(ShuffleUnit(240, 240, stride=1, groups=3, mixing="random").permutation, permutation)
    # With one group there is nothing to mix: every variant is the plain unit, with no buffer.
    assert ShuffleUnit(240, 240, stride=1, groups=1, mixing="random").mixing == "none"


def test_unknown_mixing_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mixing must be one of \{shuffle, none, random\}, got 'shufle'"):
        ShuffleUnit(48, 48, stride=1, groups=3, mixing="shufle")
    with pytest.raises(ValueError, match=r"mixing must be one of"):
        shufflenet_v1(3, 0.25, mixing=False)


@pytest.mark.parametrize("args, match", [
    ((24, 48, 1, 3), r"a stride-1 unit adds its input, so out_channels \(48\) must equal in_channels \(24\)"),
    ((24, 240, 2, 5), r"groups=5 must divide in_channels = 24"),
    ((48, 48, 2, 3), r"a stride-2 unit concatenates its input, so out_channels \(48\) must exceed"),
    ((24, 240, 3, 3), r"stride must be one of \{1, 2\}, got 3"),
])
def test_unit_rejects_bad_arguments_naming_them(args, match):
    with pytest.raises(ValueError, match=match):
        ShuffleUnit(*args)
