"""Hung et al. 2018's semi-supervised settings, shared by `stanford_semi` and `voc_semi`.

"Adversarial Learning for Semi-Supervised Semantic Segmentation" (BMVC 2018, arXiv 1802.07934):
their loss weights and discriminator, as published and not tuned here. Private (leading
underscore): not a config of its own, only the part two configs share.
"""

import ml_collections


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with Hung et al.'s weights, T_semi and fully convolutional discriminator."""
    config.lambda_adv = 0.01
    config.lambda_adv_warmup_steps = 0
    config.lambda_adv_unlabeled = 0.001
    config.lambda_semi = 0.1
    config.semi_threshold = 0.2

    config.adversary.name = "fcn"
    config.adversary.encoding = "basic"
    config.adversary.label_resolution = "input"  # Their maps are at the image's resolution.
    config.adversary.optimizer = "adam"
    config.adversary.learning_rate = 1e-4
    config.adversary.momentum = 0.9
    config.adversary.schedule = "poly"
    return config
