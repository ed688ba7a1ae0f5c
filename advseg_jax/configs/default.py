"""Default config: adversarial training on the embedded `digit_scenes` data, minutes on a CPU.

Every hyper-parameter lives here; the other configs of this package import this and override
fields.
"""

import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # TFDS data directory; datasets are built here on first use (digit_scenes offline, in seconds).
    config.data_dir = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    # Where a builder finds archives that cannot or should not be downloaded (e.g. the real
    # Stanford Background archive in ../shared/data/stanford_background); "" = TFDS's default.
    config.manual_dir = ""
    config.dataset = "digit_scenes"
    config.train_split = "train"
    config.eval_split = "validation"
    config.num_classes = 11  # background + ten digits.

    config.batch_size = 32  # Global: split over all devices of all processes.
    config.eval_batch_size = 64  # Global.
    config.num_train_steps = 1500
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2  # The latest ones; the best one (below) is kept besides.
    # Validation metric whose best evaluated checkpoint is kept (saved at the evaluation that
    # improves it, named in best_checkpoint.json; `--step=best` in evaluate and predict):
    # "mean_iou" | "pixel_accuracy" | "mean_class_accuracy", or "" for none.
    config.best_checkpoint_metric = "mean_iou"
    config.num_image_summaries = 4  # Validation examples drawn as image | truth | prediction.
    # Train-split examples also scored at each eval (no augmentation), for train/val curves
    # (Fig. 4). -1 = the whole training split; 0 = none.
    config.num_train_eval_examples = 256

    # Weight of the adversarial term in the segmentor loss; 0 is the baseline (no adversary).
    # Tuned on digit_scenes: λ = 0.1 (or 0.5) lets the adversary's term dominate and the
    # cross-entropy rise; 0.02 keeps both terms of the same order once λ is fully ramped in.
    config.lambda_adv = 0.02
    # λ ramps linearly from 0 over these steps (0 = constant λ, as in the paper). On digit_scenes
    # the segmentor needs ~600 steps to tell digits apart; an adversary at full weight before
    # that only teaches it to look confident.
    config.lambda_adv_warmup_steps = 750
    # "non_saturating": λ·BCE(a(x, s(x)), 1), the paper's choice for training.
    # "saturating": −λ·BCE(a(x, s(x)), 0), the original minimax form, for the ablation.
    config.adversarial_loss = "non_saturating"
    # Semi-supervised training (Hung et al. 2018; docs/ "Semi-supervised adversarial
    # learning"). A split (or slice) of config.dataset streamed beside the labeled batch with
    # its own seeded order; its masks, if any, are never trained on (only the diagnostic of
    # the selected pixels' accuracy reads them). "" = none: no stream, no cost.
    config.unlabeled_split = ""
    config.unlabeled_batch_size = 0  # Global; 0 = batch_size (Hung et al.: equal batches).
    # Segmentor loss = CE + lambda_adv·L_adv(labeled) + lambda_adv_unlabeled·L_adv(unlabeled)
    #   + lambda_semi·L_semi; λ_adv's warm-up ramp scales both adversarial terms.
    config.lambda_adv_unlabeled = 0.0  # Hung et al.: 0.001.
    # L_semi: cross-entropy against the segmentor's own argmax on the unlabeled pixels whose
    # discriminator confidence exceeds semi_threshold, from semi_start_step on. Needs a
    # per-pixel adversary (adversary.name = "fcn").
    config.lambda_semi = 0.0  # Hung et al.: 0.1.
    # Who picks L_semi's pixels: "discriminator" (Hung et al.: sigmoid of the fcn adversary's
    # per-pixel output > semi_threshold) or "softmax" (the segmentor's max softmax >
    # semi_threshold, FixMatch-style; no discriminator needed, none built when
    # lambda_adv = lambda_adv_unlabeled = 0). docs/experiments.md, "Self-training selection".
    config.semi_selection = "discriminator"
    config.semi_threshold = 0.2  # Hung et al.'s T_semi; a softmax threshold lies in (0, 1).
    # Precision-coverage curves of both criteria at every evaluation, on this split's pixels
    # (its masks score the selection and never reach a loss). "" = none, no cost.
    config.selection_curves_split = ""
    # The thresholds of those curves (>= 10), applied to each criterion's confidence in [0, 1].
    config.selection_curve_thresholds = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                         0.9, 0.95, 0.99)
    config.semi_start_step = 0  # Hung et al.: 5,000 of 20,000.
    config.dtype = "float32"  # Activations; params and losses stay float32. "bfloat16" on TPU/GPU.
    config.skip_nonfinite_steps = False  # False: stop on a non-finite loss/grad; True: skip it.
    # With skipping on, the run still stops once more than this fraction of its steps were
    # skipped (a lone skipped step never stops it): skipping is for rare spikes.
    config.max_nonfinite_fraction = 0.1
    # Images per microbatch: the step accumulates the gradients of a device's rows microbatch
    # by microbatch, so only one microbatch's activations are alive (the same loss and
    # gradients; advseg_jax/accumulation.py). 0 = automatic: the largest that fits the
    # device's memory (advseg_jax/memory_fit.py); otherwise a divisor of the per-device batch
    # (>= it: no accumulation). On CPU the models also run in cache-sized chunks within a
    # microbatch (advseg_jax/microbatch.py), which only changes speed.
    config.microbatch_size = 0
    # How a step runs its microbatches (advseg_jax/accumulation.py): "auto" = Python-unrolled
    # on CPU (XLA:CPU runs convolutions in loops ~10x slower), a `lax.scan` on GPU/TPU (one
    # compiled body), judged from the mesh's devices; "scan" or "unrolled" forces one (the same
    # losses and gradients up to float summation order), e.g. to test the GPU/TPU path on CPU.
    config.accumulation_loop = "auto"
    # Memory one device may use, in GB (1e9 bytes), for microbatch_size = 0; 0 = detected
    # (GPU/TPU: memory_stats()["bytes_limit"]; CPU: the host's available memory).
    config.memory_limit_gb = 0.0
    # Persistent XLA compilation cache (advseg_jax/compilation_cache.py): a resumed or repeated
    # run loads its compiled steps from here instead of compiling them again (minutes for the
    # paper's models). "" = off. A set JAX_COMPILATION_CACHE_DIR environment variable wins.
    config.compilation_cache_dir = "~/.cache/advseg_jax/xla"

    config.input = ml_collections.ConfigDict()
    config.input.crop_size = (48, 48)  # digit_scenes images are 48x48: the crop is the whole image.
    # Every image (and its labels) is rescaled by this before anything else, in training and
    # evaluation alike; metrics are then scored at that resolution. < 1 for CPU-scale protocols.
    config.input.image_scale = 1.0
    config.input.min_scale = 1.0  # Random rescaling range before padding/cropping.
    config.input.max_scale = 1.0
    # Digits are not mirror-symmetric: a flipped "2" is no digit, so no flips on digit_scenes.
    config.input.random_flip = False
    config.input.fill_rgb = (128, 128, 128)  # Image padding colour (the mask pads with void).
    config.input.eval_size = (48, 48)  # Eval pads every image to this shape (>= the largest image).
    config.input.shuffle_buffer = 2_000  # Unused (Grain shuffles epochs); old configs load.
    config.input.prefetch = 2  # Batches made ahead (and, in Grain, threads making them).
    # Grain pipeline: processes making batches (0 = the training process); any value gives the
    # same batches. cache_decoded keeps the split decoded in host memory (small datasets only).
    config.input.num_workers = 0
    config.input.cache_decoded = False

    config.segmentor = ml_collections.ConfigDict()
    config.segmentor.name = "digit_net"
    config.segmentor.width = 16
    config.segmentor.pretrained = ""
    config.segmentor.optimizer = "adam"
    config.segmentor.learning_rate = 3e-3
    config.segmentor.schedule = "cosine"  # "constant" | "cosine" | "poly"
    config.segmentor.warmup_steps = 50
    config.segmentor.momentum = 0.9  # SGD momentum / Adam beta1.
    config.segmentor.weight_decay = 0.0
    # Settings of the other segmentors, read only by the one `name` selects (each factory reads
    # its keys once, with no fallback in code); voc.py and stanford_background.py set theirs.
    config.segmentor.dropout_rate = 0.5  # dilated8: VGG16's fc6/fc7 dropout (Yu & Koltun).
    config.segmentor.context_module = True  # dilated8: Yu & Koltun's basic context module.
    # dilated8: how convolutions compute, the same function either way: "auto" (on CPU, 1x1 and
    # mostly-padding ones as one matmul per tap; advseg_jax/models/exact_taps.py), "taps", "lax".
    config.segmentor.conv_algorithm = "auto"
    # dilated8: VGG16's widths (64..512, fc6/fc7 4096) divided by this: the same network, narrow,
    # for tests and CPU trials. 1 = Yu & Koltun's, the only one `pretrained` weights fit.
    config.segmentor.width_divisor = 1
    config.segmentor.widths = (16, 64, 256)  # multiscale: stage widths (Farabet et al. 2013).
    config.segmentor.kernel_size = 7  # multiscale (Farabet et al. 2013).
    config.segmentor.activation = "tanh"  # multiscale: "tanh" | "relu" (Farabet et al.: tanh).
    config.segmentor.num_scales = 3  # multiscale: pyramid levels 1, 1/2, 1/4 (Farabet et al.).

    config.adversary = ml_collections.ConfigDict()
    config.adversary.name = "stanford"  # The paper's two-branch adversary.
    config.adversary.encoding = "product"  # "basic" | "product" | "scaling"
    config.adversary.tau = 0.9  # Scaling encoding's floor for the true class (paper: 0.9).
    # The paper's adversary widths (image 16→64, labels 64, trunk 128/256/512) divided by this,
    # so that the adversary does not dominate a CPU step on 48x48 digits. 1 = the paper's widths.
    config.adversary.width_divisor = 4
    # fcn (Hung et al. 2018): its widths (64, 128, 256, 512) divided by this, for tests and CPU
    # trials. 1 = theirs; apart from width_divisor, whose default above is not theirs.
    config.adversary.fcn_width_divisor = 1
    config.adversary.steps_per_segmentor_step = 1
    config.adversary.optimizer = "adam"
    config.adversary.learning_rate = 2e-4  # DCGAN's discriminator rate; 1e-3 wins at once.
    config.adversary.schedule = "constant"
    config.adversary.warmup_steps = 0
    config.adversary.momentum = 0.5  # Adam beta1 0.5, the DCGAN setting for discriminators.
    config.adversary.weight_decay = 0.0
    # largefov / smallfov (-light): also feed the RGB image next to the map (the paper does
    # not for Product/Scaling, which already hold it).
    config.adversary.concat_image = False
    # Resolution of the label maps the adversary judges: "output" (the segmentor's, the paper's
    # choice) or "input" (the labels', predictions upsampled bilinearly: Hung et al.'s fcn).
    config.adversary.label_resolution = "output"
    return config

