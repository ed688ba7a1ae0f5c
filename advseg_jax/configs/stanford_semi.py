"""Stanford Background fold 0 with 1/8 of the labels: Hung et al. 2018 at the CPU scale.

Semi-supervised adversarial learning (Hung, Tsai, Liou, Lin & Yang, BMVC 2018, arXiv 1802.07934)
on the protocol of `stanford_cpu.py` (1/4 resolution, the multi-scale segmentor, batch 8):
  * Labels for 72 of fold 0's 572 training images (1/8, Hung et al.'s smallest fraction): the
    slice `train[:72]` of TFDS's fixed record order; the run records their ids in
    data_splits.json. The other 500 are the unlabeled stream (`train[72:]`); their masks
    never reach a loss (only the diagnostic of the selected pixels' accuracy reads them).
  * The discriminator is Hung et al.'s fully convolutional one, on Basic label maps at the
    labels' resolution (predictions upsampled bilinearly, as theirs): at the segmentor's
    16x20 output its fifth convolution would be empty.
  * Hung et al.'s loss weights, unchanged and not tuned here: λ_adv = 0.01 (labeled),
    λ_adv_unlabeled = 0.001, λ_semi = 0.1, T_semi = 0.2, self-training from a quarter of the
    run (their step 5,000 of 20,000); their discriminator optimiser (Adam, lr 1e-4, β1 0.9,
    poly decay). Equal labeled and unlabeled batches, as theirs.
  * The run length is the protocol's: ~45 minutes for the costliest arm on 2 cores (docs/).
The sweep `stanford_semi` (experiments/ablations.py) runs the three arms: supervised on the 72
only, + adversarial (labeled + unlabeled), + adversarial + self-training.
"""

import ml_collections

from advseg_jax.configs import _hung2018
from advseg_jax.configs import stanford_cpu


def get_config() -> ml_collections.ConfigDict:
    config = stanford_cpu.get_config()
    config.train_split = "train[:72]"
    config.unlabeled_split = "train[72:]"
    config.unlabeled_batch_size = 8  # = batch_size, as Hung et al.

    config.num_train_steps = 3_600  # 400 epochs of the 72 labeled images at batch 8.
    config.eval_every_steps = 450  # 8 evaluations.
    config.checkpoint_every_steps = 450
    config.semi_start_step = 900  # A quarter of the run, as Hung et al.'s 5,000 of 20,000.
    # Issue 32: the held-out slice, 72 of the unlabeled images (they stay in the unlabeled
    # stream; their masks only score the selection and choose the thresholds).
    config.selection_curves_split = "train[72:144]"
    return _hung2018.apply(config)
