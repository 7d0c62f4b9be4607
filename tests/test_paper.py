"""The paper's tables as the package stores them (shufflenet.reference) agree with each other."""

from shufflenet.reference import PAPER_TABLE2_TOP1_ERROR, PAPER_TABLE3_TOP1_ERROR


def test_table3_has_all_six_rows_and_its_shuffle_column_is_table2():
    assert sorted(PAPER_TABLE3_TOP1_ERROR) == [(0.25, 3), (0.25, 8), (0.5, 3), (0.5, 8), (1.0, 3), (1.0, 8)]
    for (scale, groups), errors in PAPER_TABLE3_TOP1_ERROR.items():
        assert errors["shuffle"] == PAPER_TABLE2_TOP1_ERROR[scale][groups]


def test_table3_shuffle_always_helps_and_more_with_eight_groups():
    gain = {key: e["no shuffle"] - e["shuffle"] for key, e in PAPER_TABLE3_TOP1_ERROR.items()}
    assert all(value > 0 for value in gain.values())
    assert all(gain[scale, 8] > gain[scale, 3] for scale in (0.25, 0.5, 1.0))
    assert round(gain[0.25, 3], 1) == 1.3 and round(gain[0.25, 8], 1) == 3.8
