"""Published numbers the package and the book are checked against.

Complexities are in millions of multiply-adds ("MFLOPs" in the paper, which counts a multiply-add as one
operation) at 224x224; parameters in millions.
"""

# Zhang et al. (2018), Table 1: ShuffleNet 1x, complexity by number of groups g.
PAPER_TABLE1_MFLOPS = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}

# Zhang et al. (2018), Table 2: complexity of ShuffleNet s x (scale s), and ImageNet top-1 error (%)
# for each number of groups.
PAPER_TABLE2_MFLOPS = {1.0: 140, 0.5: 38, 0.25: 13}
PAPER_TABLE2_TOP1_ERROR = {
    1.0: {1: 33.6, 2: 32.7, 3: 32.6, 4: 32.8, 8: 32.4},
    0.5: {1: 45.1, 2: 44.4, 3: 43.2, 4: 41.6, 8: 42.3},
    0.25: {1: 57.1, 2: 56.8, 3: 55.0, 4: 54.2, 8: 52.7},
}

# Zhang et al. (2018), Table 3: ImageNet top-1 error (%) without and with channel shuffle, all six rows:
# (scale, groups) -> errors. The "shuffle" column repeats Table 2's numbers for the same networks.
PAPER_TABLE3_TOP1_ERROR = {
    (1.0, 3): {"no shuffle": 34.5, "shuffle": 32.6},
    (1.0, 8): {"no shuffle": 37.6, "shuffle": 32.4},
    (0.5, 3): {"no shuffle": 45.7, "shuffle": 43.2},
    (0.5, 8): {"no shuffle": 48.1, "shuffle": 42.3},
    (0.25, 3): {"no shuffle": 56.3, "shuffle": 55.0},
    (0.25, 8): {"no shuffle": 56.5, "shuffle": 52.7},
}

# Zhang et al. (2018), Table 5: ShuffleNet against MobileNet (Howard et al., 2017) at similar complexity, in
# the paper's order: model -> (MFLOPs, ImageNet top-1 error %). Each MobileNet row is followed by the
# ShuffleNet rows the paper compares with it; "shallow" removes half of the units of Stages 2 to 4.
PAPER_TABLE5 = {
    "1.0 MobileNet-224": (569, 29.4),
    "ShuffleNet 2x (g = 3)": (524, 26.3),
    "ShuffleNet 2x (with SE, g = 3)": (527, 24.7),
    "0.75 MobileNet-224": (325, 31.6),
    "ShuffleNet 1.5x (g = 3)": (292, 28.5),
    "0.5 MobileNet-224": (149, 36.3),
    "ShuffleNet 1x (g = 8)": (140, 32.4),
    "0.25 MobileNet-224": (41, 49.4),
    "ShuffleNet 0.5x (g = 4)": (38, 41.6),
    "ShuffleNet 0.5x (shallow, g = 3)": (40, 42.8),
}

# The networks of Chapter 4's comparison, as their authors publish them: model -> (M multiply-adds at
# 224x224, M parameters, ImageNet top-1 error %). ShuffleNet V2: Ma et al. (2018), Table 8 (69.4% top-1);
# MobileNet V2: Sandler et al. (2018), Table 4 (72.0%); MobileNet V3-Small: Howard et al. (2019), Table 3
# (67.4%). ShuffleNet V1 is in OFFICIAL below.
PUBLISHED_NEIGHBOURS = {
    "ShuffleNet V2 1x": (146, 2.3, 30.6),
    "MobileNet V2 1.0": (300, 3.4, 28.0),
    "MobileNet V3-Small": (56, 2.5, 32.6),
}

# The official implementation (megvii-model/ShuffleNet-Series, ShuffleNetV1/README.md): (groups, scale) ->
# (MFLOPs, M parameters, ImageNet top-1 error %). Its FLOPs include the classifier and its classifier
# has no bias.
OFFICIAL = {
    (3, 0.5): (38, 0.7, 42.7),
    (3, 1.0): (138, 1.9, 32.2),
    (3, 1.5): (292, 3.4, 28.4),
    (3, 2.0): (524, 5.4, 25.9),
    (8, 0.5): (40, 1.0, 41.2),
    (8, 1.0): (138, 2.4, 32.0),
    (8, 1.5): (290, 4.3, 29.0),
    (8, 2.0): (522, 6.5, 27.1),
}
