"""Acceptance tests of the package against the paper (Zhang et al., 2018) and the official Megvii code."""

import pytest
import torch
from torch import nn

from shufflenet import (GROUPS, SCALES, WIDTHS, ShuffleNetV1, ShuffleUnit, channel_shuffle, conv1x1, conv3x3,
                        count_macs, count_params, scaled_widths, shufflenet_v1, width_source)
from shufflenet.reference import (OFFICIAL, PAPER_TABLE1_MFLOPS, PAPER_TABLE2_MFLOPS,
                                  PAPER_TABLE2_TOP1_ERROR, PAPER_TABLE5)


def megvii_param_count(groups, widths, num_classes=1000):
    """Parameters of the official network, counted from its architecture by formula (no torch)."""
    stem, *stages = widths
    total = 3 * stem * 9 + 2 * stem                           # stem conv + BN
    in_ch = stem
    for stage, (repeats, out_ch) in enumerate(zip((4, 8, 4), stages)):
        for i in range(repeats):
            mid = out_ch // 4
            branch = out_ch - in_ch if i == 0 else out_ch
            g_first = 1 if (stage == 0 and i == 0) else groups
            total += in_ch * mid // g_first + 2 * mid          # 1x1 group conv + BN
            total += 9 * mid + 2 * mid                         # 3x3 depthwise + BN
            total += mid * branch // groups + 2 * branch       # 1x1 group conv + BN
            in_ch = out_ch
    return total + in_ch * num_classes                         # classifier without bias


@pytest.mark.parametrize("groups", GROUPS)
def test_table1_complexity_within_2_percent(groups):
    macs = count_macs(shufflenet_v1(groups)) / 1e6
    assert macs == pytest.approx(PAPER_TABLE1_MFLOPS[groups], rel=0.02)


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_table2_complexity_of_smaller_networks(scale):
    macs = count_macs(shufflenet_v1(3, scale)) / 1e6
    assert macs == pytest.approx(PAPER_TABLE2_MFLOPS[scale], rel=0.05)


@pytest.mark.parametrize("groups, scale", sorted(OFFICIAL))
def test_parameters_match_official_implementation(groups, scale):
    model = shufflenet_v1(groups, scale)
    without_bias = count_params(model) - model.classifier.bias.numel()
    assert without_bias == megvii_param_count(groups, WIDTHS[(groups, scale)])
    assert round(without_bias / 1e6, 1) == OFFICIAL[(groups, scale)][1]


@pytest.mark.parametrize("groups, scale", sorted(OFFICIAL))
def test_complexity_matches_official_implementation(groups, scale):
    # The official FLOPs include the classifier; the published numbers are rounded to 1 M.
    macs = count_macs(shufflenet_v1(groups, scale), exclude_classifier=False) / 1e6
    assert macs == pytest.approx(OFFICIAL[(groups, scale)][0], abs=1.0, rel=0.01)


def test_width_table_follows_the_documented_rule():
    for (groups, scale), widths in WIDTHS.items():
        if (groups, scale) in OFFICIAL:
            assert scaled_widths(groups, scale)[1:] == widths[1:]   # the official stems differ at 1.5x
        else:
            assert scaled_widths(groups, scale) == widths
    assert set(WIDTHS) == {(g, s) for g in GROUPS for s in SCALES}


def test_table5_rows_reproduce_the_papers_error_differences():
    # The paper's last column (MobileNet's error minus ShuffleNet's) checks each row of PAPER_TABLE5.
    published_delta = {"ShuffleNet 2x (g = 3)": 3.1, "ShuffleNet 2x (with SE, g = 3)": 4.7,
                       "ShuffleNet 1.5x (g = 3)": 3.1, "ShuffleNet 1x (g = 8)": 3.9,
                       "ShuffleNet 0.5x (g = 4)": 7.8, "ShuffleNet 0.5x (shallow, g = 3)": 6.6}
    mobilenet = None
    for name, (mflops, error) in PAPER_TABLE5.items():
        if "MobileNet" in name:
            mobilenet = error
        else:
            assert round(mobilenet - error, 1) == published_delta.pop(name), name
    assert not published_delta
    assert PAPER_TABLE5["ShuffleNet 1x (g = 8)"] == (140, 32.4)
    assert PAPER_TABLE5["0.5 MobileNet-224"] == (149, 36.3)
    assert PAPER_TABLE5["ShuffleNet 0.5x (g = 4)"] == (38, 41.6)
    assert PAPER_TABLE5["0.25 MobileNet-224"] == (41, 49.4)
    assert PAPER_TABLE5["ShuffleNet 0.5x (g = 4)"][1] == PAPER_TABLE2_TOP1_ERROR[0.5][4]
    assert PAPER_TABLE5["ShuffleNet 1x (g = 8)"][1] == PAPER_TABLE2_TOP1_ERROR[1.0][8]


def test_width_source_is_the_provenance_of_every_row():
    sources = {key: width_source(*key) for key in WIDTHS}
    assert {key for key, s in sources.items() if "paper" in s} == {(g, 1.0) for g in GROUPS}
    assert {key for key, s in sources.items() if "megvii" in s} == set(OFFICIAL)
    assert sources[(3, 1.0)] == {"paper", "megvii"} and sources[(4, 1.0)] == {"paper"}
    assert sources[(8, 0.5)] == {"megvii"} and sources[(1, 0.25)] == {"rule"}
    for key, source in sources.items():      # a row is the rule's exactly when nothing publishes it
        if source == {"rule"}:
            assert scaled_widths(*key) == WIDTHS[key]
    with pytest.raises(ValueError, match="scale"):
        width_source(3, 0.75)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_configuration_builds_and_runs(groups, scale):
    model = shufflenet_v1(groups, scale, num_classes=10, small_input=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_output_shapes():
    with torch.no_grad():
        assert shufflenet_v1().eval()(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        assert shufflenet_v1(8, num_classes=10, small_input=True).eval()(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_architecture_follows_the_paper():
    model = shufflenet_v1(3)
    assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]
    first = model.stage2[0]
    assert first.compress[0].groups == 1                     # Table 1 caption: not grouped
    assert model.stage3[0].compress[0].groups == 3
    for unit in model.modules():
        if isinstance(unit, ShuffleUnit):
            dw = unit.depthwise[0]
            assert dw.groups == dw.in_channels == dw.out_channels  # depthwise, not grouped
            assert not any(isinstance(m, nn.ReLU) for m in unit.depthwise)  # no ReLU after depthwise
            assert unit.compress[0].out_channels == unit.expand[0].in_channels == unit.depthwise[0].in_channels
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.stem[0].stride == (2, 2)
    cifar = shufflenet_v1(3, small_input=True)
    assert isinstance(cifar.maxpool, nn.Identity) and cifar.stem[0].stride == (1, 1)


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


def test_stride2_unit_concatenates_pooled_input():
    unit = ShuffleUnit(24, 240, stride=2, groups=3, group_first_conv=False).eval()
    x = torch.rand(1, 24, 8, 8)                               # non-negative, as after a ReLU
    pooled = nn.functional.avg_pool2d(x, 3, stride=2, padding=1)
    torch.testing.assert_close(unit(x)[:, :24], pooled)


@pytest.mark.parametrize("channels, groups", [(12, 3), (240, 3), (384, 8), (8, 1), (6, 6)])
def test_channel_shuffle_matches_torch(channels, groups):
    x = torch.randn(2, channels, 5, 4)
    torch.testing.assert_close(channel_shuffle(x, groups), nn.ChannelShuffle(groups)(x), rtol=0, atol=0)


def test_channel_shuffle_is_the_papers_permutation():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_no_shuffle_variant():
    model = shufflenet_v1(3, shuffle=False)
    assert all(not u.shuffle for u in model.modules() if isinstance(u, ShuffleUnit))
    assert count_params(model) == count_params(shufflenet_v1(3))


def test_conv_helpers():
    assert conv1x1(24, 240, groups=3).groups == 3 and conv1x1(24, 240).bias is None
    dw = conv3x3(60, 60, stride=2, groups=60)
    assert (dw.kernel_size, dw.stride, dw.padding, dw.groups) == ((3, 3), (2, 2), (1, 1), 60)


@pytest.mark.parametrize("kwargs, match", [
    ({"groups": 0}, r"groups must be one of \{1, 2, 3, 4, 8\}, got 0"),
    ({"groups": 5}, r"groups must be one of \{1, 2, 3, 4, 8\}, got 5"),
    ({"groups": 7}, r"groups must be one of"),
    ({"scale": 0.3}, r"scale must be one of \{0.25, 0.5, 1.0, 1.5, 2.0\}, got 0.3"),
    ({"num_classes": 0}, r"num_classes must be a positive int, got 0"),
])
def test_builder_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shufflenet_v1(**kwargs)


def test_builder_rejects_wrong_types():
    with pytest.raises(TypeError, match="num_classes must be a positive int"):
        shufflenet_v1(num_classes=10.0)
    with pytest.raises(ValueError, match="groups must be one of"):
        shufflenet_v1(groups=True)


@pytest.mark.parametrize("x, groups, error, match", [
    (torch.randn(1, 10, 4, 4), 3, ValueError, r"groups=3 must divide the number of channels C=10"),
    (torch.randn(1, 12, 4, 4), 0, ValueError, r"groups must be a positive int, got 0"),
    (torch.randn(12, 4, 4), 3, ValueError, r"4-d \(N, C, H, W\) tensor, got shape \(12, 4, 4\)"),
    ([1, 2, 3], 3, TypeError, r"x must be a torch.Tensor"),
])
def test_channel_shuffle_rejects_bad_input(x, groups, error, match):
    with pytest.raises(error, match=match):
        channel_shuffle(x, groups)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32), (1, 4, 32, 32)])
def test_forward_rejects_non_rgb_input(shape):
    model = shufflenet_v1(small_input=True, num_classes=10)
    with pytest.raises(ValueError, match=r"expects RGB images as an \(N, 3, H, W\) tensor"):
        model(torch.randn(*shape))


def test_invalid_grouping_is_reported_by_our_code():
    with pytest.raises(ValueError, match="groups=5 must divide both in_channels=24"):
        conv1x1(24, 240, groups=5)
    with pytest.raises(ValueError, match=r"stride must be one of \{1, 2\}, got 3"):
        conv3x3(8, 8, stride=3)
    with pytest.raises(ValueError, match="must equal in_channels"):
        ShuffleUnit(24, 48, stride=1, groups=3)
    with pytest.raises(ValueError, match="groups=5 must divide in_channels = 24"):
        ShuffleUnit(24, 240, stride=2, groups=5)
    with pytest.raises(ValueError, match="must exceed in_channels"):
        ShuffleUnit(48, 48, stride=2, groups=3)
    with pytest.raises(ValueError, match="groups"):
        ShuffleNetV1((24, 100, 200, 400), groups=3)


def test_channel_shuffle_keeps_the_memory_format_and_gradients():
    x = torch.randn(2, 12, 5, 4).to(memory_format=torch.channels_last).requires_grad_()
    out = channel_shuffle(x, 3)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, nn.ChannelShuffle(3)(x.detach()), rtol=0, atol=0)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    torch.testing.assert_close(x.grad, channel_shuffle(weights, 12 // 3), rtol=0, atol=0)  # the inverse
