"""Pascal VOC 2012 with a fraction of the labels: Hung et al. 2018 on Dilated-8 (accelerators).

Hung et al.'s protocol (BMVC 2018, arXiv 1802.07934) with our VOC segmentor: Dilated-8 on an
ImageNet VGG16 (`voc.py`; we have no DeepLab-v2 ResNet-101), so the published mIoU (73.6 → 74.9
with full labels, about 68.8 with 1/8) is a reference, not a target. The labeled fraction is a
slice of train_aug's fixed record order, the rest its unlabeled stream; the run records both
id lists in data_splits.json. One command per fraction (docs/experiments.md,
"Semi-supervised"): 1/8 = train_aug[:1323], 1/4 = [:2646], 1/2 = [:5291] of the 10,582 images.
  * Hung et al.'s weights and schedule: λ_adv = 0.01, λ_adv_unlabeled = 0.001, λ_semi = 0.1,
    T_semi = 0.2, self-training from step 5,000 of 20,000; discriminator Adam lr 1e-4, β1 0.9,
    poly decay; the fcn on Basic maps at the labels' resolution.
  * Ours: voc.py's segmentor optimiser, crop 320 and batch 16 (labeled) + 16 (unlabeled).
"""

import ml_collections

from advseg_jax.configs import _hung2018
from advseg_jax.configs import voc


def get_config() -> ml_collections.ConfigDict:
    config = voc.get_config()
    config.train_split = "train_aug[:1323]"  # 1/8 of the labels.
    config.unlabeled_split = "train_aug[1323:]"
    config.unlabeled_batch_size = 16

    config.num_train_steps = 20_000  # Hung et al.
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    config.semi_start_step = 5_000  # Hung et al.
    return _hung2018.apply(config)
