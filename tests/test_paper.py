"""The paper's tables (Zhang et al., 2018) and Megvii's published counts, against the package.

The tables as shufflenet.reference stores them agree with each other, and the networks the package builds
have the complexity and the parameters they publish.
"""

import pytest

from shufflenet import GROUPS, WIDTHS, count_macs, count_params, shufflenet_v1
from shufflenet.reference import (
    OFFICIAL,
    PAPER_TABLE1_MFLOPS,
    PAPER_TABLE2_MFLOPS,
    PAPER_TABLE2_TOP1_ERROR,
    PAPER_TABLE3_TOP1_ERROR,
    PAPER_TABLE5,
)


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


def test_table3_has_all_six_rows_and_its_shuffle_column_is_table2():
    assert sorted(PAPER_TABLE3_TOP1_ERROR) == [(0.25, 3), (0.25, 8), (0.5, 3), (0.5, 8), (1.0, 3), (1.0, 8)]
    for (scale, groups), errors in PAPER_TABLE3_TOP1_ERROR.items():
        assert errors["shuffle"] == PAPER_TABLE2_TOP1_ERROR[scale][groups]


def test_table3_shuffle_always_helps_and_more_with_eight_groups():
    gain = {key: e["no shuffle"] - e["shuffle"] for key, e in PAPER_TABLE3_TOP1_ERROR.items()}
    assert all(value > 0 for value in gain.values())
    assert all(gain[scale, 8] > gain[scale, 3] for scale in (0.25, 0.5, 1.0))
    assert round(gain[0.25, 3], 1) == 1.3 and round(gain[0.25, 8], 1) == 3.8


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
