"""Stanford Background (Luc et al. 2016, Sec. 4.1): Farabet's multi-scale net, two-branch adversary.

Where the paper gives no value, each line says where ours comes from. Folds: the paper reports
cross-validated results; `dataset` names one fold's builder config (fold0 … fold4).
"""

import ml_collections

from advseg_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset = "stanford_background/fold0"
    config.train_split = "train"
    config.eval_split = "test"
    config.num_classes = 8  # Gould et al. 2009's eight classes (unknown → void).

    config.batch_size = 16  # Our choice.
    config.eval_batch_size = 16  # Our choice.
    # ~1000 epochs of a fold's 572 training images (35.75 steps an epoch), as in Fig. 4.
    config.num_train_steps = 35_750
    config.log_every_steps = 50  # Our choice.
    config.eval_every_steps = 1_788  # ~50 epochs: 20 points per curve (Fig. 4's x-axis).
    config.checkpoint_every_steps = 1_788  # Our choice.
    config.num_train_eval_examples = -1  # All training images, unaugmented (Fig. 4, left).
    # Fig. 4's metric. Reported curves and finals are every evaluation and the last step, never
    # this test-fold-selected checkpoint (selecting on the reported split would be tuning on it).
    config.best_checkpoint_metric = "mean_class_accuracy"

    config.lambda_adv = 0.5  # Our choice: the paper tunes λ; see experiments/.
    config.lambda_adv_warmup_steps = 0  # Constant λ, as in the paper.

    # Images are ~320x240 (landscape or portrait): the crop is a whole landscape image.
    config.input.crop_size = (240, 320)  # Our choice (multiple of 16 for the 3-level pyramid).
    config.input.min_scale = 0.8  # Our choice; Farabet et al. jitter scale, flips, rotation.
    config.input.max_scale = 1.2
    config.input.random_flip = True  # Outdoor scenes are mirror-symmetric.
    config.input.eval_size = (320, 320)  # Covers both orientations of the ≤320x240 images.
    config.input.shuffle_buffer = 1_000  # More than the whole training split.

    config.segmentor.name = "multiscale"
    config.segmentor.widths = (16, 64, 256)  # Farabet et al. 2013.
    config.segmentor.kernel_size = 7  # Farabet et al. 2013.
    config.segmentor.activation = "tanh"  # Farabet et al. 2013.
    config.segmentor.num_scales = 3  # Farabet et al. 2013: scales 1, 1/2, 1/4.
    config.segmentor.pretrained = ""  # Trained from scratch (paper).
    config.segmentor.optimizer = "adam"  # Our choice (Farabet et al. used SGD).
    config.segmentor.learning_rate = 1e-3  # Our choice.
    config.segmentor.schedule = "cosine"  # Our choice.
    config.segmentor.warmup_steps = 200  # Our choice.
    config.segmentor.momentum = 0.9  # Adam's default beta1.
    config.segmentor.weight_decay = 0.0  # Our choice.

    config.adversary.name = "stanford"  # The paper's two-branch adversary (Fig. 2).
    # The image enters through the adversary's own image branch, so the map is the plain
    # class-probability map.
    config.adversary.encoding = "basic"
    config.adversary.width_divisor = 1  # The paper's full widths.
    # Our choice. The rest of the adversary's optimizer is default.py's (our choice too): one
    # update per segmentor step, Adam with beta1 0.5 (DCGAN), constant rate, no weight decay.
    config.adversary.learning_rate = 1e-4
    return config
