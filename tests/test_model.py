"""Tests of shufflenet.model: the network's architecture, its width table, and its argument checks.

The complexity and parameter counts against the paper's and Megvii's tables are in test_paper.py.
"""

import pytest
import torch
from torch import nn

from shufflenet import (
    GROUPS,
    SCALES,
    WIDTHS,
    ShuffleNetV1,
    ShuffleUnit,
    count_params,
    scaled_widths,
    shufflenet_v1,
    width_source,
)
from shufflenet.reference import OFFICIAL


def test_width_table_follows_the_documented_rule():
    for (groups, scale), widths in WIDTHS.items():
        if (groups, scale) in OFFICIAL:
            assert scaled_widths(groups, scale)[1:] == widths[1:]   # the official stems differ at 1.5x
        else:
            assert scaled_widths(groups, scale) == widths
    assert set(WIDTHS) == {(g, s) for g in GROUPS for s in SCALES}


def test_width_source_is_the_provenance_of_every_row():
    sources = {key: width_source(*key) for key in WIDTHS}
    assert {key for key, s in sources.items() if "paper" in s} == {(g, 1.0) for g in GROUPS}
    assert {key for key, s in sources.items() if "megvii" in s} == set(OFFICIAL)
    assert sources[(3, 1.0)] == {"paper", "megvii"} and sources[(4, 1.0)] == {"paper"}
    assert sources[(8, 0.5)] == {"megvii"} and sources[(1, 0.25)] == {"rule"}
    assert {key for key, s in sources.items() if s == {"rule"}} == \
        set(WIDTHS) - set(OFFICIAL) - {(g, 1.0) for g in GROUPS}  # the rule's exactly when none publishes it
    with pytest.raises(ValueError, match="scale"):
        width_source(3, 0.75)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_configuration_builds_and_runs(groups, scale):
    model = shufflenet_v1(groups, scale, num_classes=10, small_input=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_input_gives_1000_logits():
    with torch.no_grad():
        assert shufflenet_v1().eval()(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_architecture_follows_the_paper():
    model = shufflenet_v1(3)
    assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]
    for unit in model.modules():
        if isinstance(unit, ShuffleUnit):
            dw = unit.depthwise[0]
            assert dw.groups == dw.in_channels == dw.out_channels  # depthwise, not grouped
            assert not any(isinstance(m, nn.ReLU) for m in unit.depthwise)  # no ReLU after depthwise
            assert unit.compress[0].out_channels == unit.expand[0].in_channels == dw.in_channels
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.stem[0].stride == (2, 2)
    cifar = shufflenet_v1(3, small_input=True)
    assert isinstance(cifar.maxpool, nn.Identity) and cifar.stem[0].stride == (1, 1)


def test_no_shuffle_variant():
    """The same weights without the shuffle: every unit drops it, and the network computes something else."""
    torch.manual_seed(0)
    with_shuffle = shufflenet_v1(3, 0.25, num_classes=10, small_input=True).eval()
    without = shufflenet_v1(3, 0.25, num_classes=10, small_input=True, mixing="none").eval()
    assert all(u.mixing == "none" for u in without.modules() if isinstance(u, ShuffleUnit))
    assert count_params(without) == count_params(with_shuffle)
    without.load_state_dict(with_shuffle.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(without(x), with_shuffle(x))


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


def test_widths_that_groups_cannot_split_are_reported_by_our_code():
    with pytest.raises(ValueError, match="groups=3 must divide"):
        ShuffleNetV1((24, 100, 200, 400), groups=3)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32), (1, 4, 32, 32)])
def test_forward_rejects_non_rgb_input(shape):
    model = shufflenet_v1(small_input=True, num_classes=10)
    with pytest.raises(ValueError, match=r"expects RGB images as an \(N, 3, H, W\) tensor"):
        model(torch.randn(*shape))


def test_zero_init_residual_starts_every_stride_1_unit_as_the_identity():
    torch.manual_seed(0)
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True, zero_init_residual=True).eval()
    units = [u for u in model.modules() if isinstance(u, ShuffleUnit)]
    assert sum(u.stride == 1 for u in units) == 13
    for unit in units:
        scale = unit.expand[-1].weight
        assert (scale == 0).all() if unit.stride == 1 else (scale == 1).all()
        if unit.stride == 1:
            x = torch.randn(1, unit.expand[0].out_channels, 4, 4).relu()  # a unit's input is a ReLU's
            with torch.no_grad():
                torch.testing.assert_close(unit(x), x)
    torch.manual_seed(0)
    plain = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    assert all((u.expand[-1].weight == 1).all() for u in plain.modules() if isinstance(u, ShuffleUnit))
