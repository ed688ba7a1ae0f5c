"""Pascal VOC 2012 (Luc et al. 2016, Sec. 4.2): Dilated-8 segmentor, LargeFOV adversary, Product.

Where the paper gives no value, each line says where ours comes from. "Yu & Koltun" is their
Dilated-8 front-end training (SGD, lr 1e-3, momentum 0.9, batch 14, 60K iterations).
"""

import ml_collections

from advseg_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset = "voc2012_segmentation"
    config.train_split = "train_aug"  # VOC 2012 train + Hariharan et al.'s SBD: 10,582 images.
    config.eval_split = "validation"  # The 1,449 val images, as in the paper.
    config.num_classes = 21  # Background + 20 object classes.

    config.batch_size = 16  # Yu & Koltun use 14; 16 divides evenly over 1/2/4/8/16 devices.
    config.eval_batch_size = 16  # Our choice: 512x512 Dilated-8 activations fit at 2/device.
    # Yu & Koltun's 60K iterations x 14 images, at batch 16 (~80 epochs of train_aug).
    config.num_train_steps = 52_500
    config.log_every_steps = 100  # Our choice.
    config.eval_every_steps = 5_000  # Our choice: ~10 evaluations per run.
    config.checkpoint_every_steps = 5_000  # Our choice.

    config.lambda_adv = 0.1  # Our choice: the paper tunes λ per setting; see experiments/.
    config.lambda_adv_warmup_steps = 0  # Constant λ, as in the paper.
    config.dtype = "float32"  # "bfloat16" on GPU/TPU: ~2x faster, params stay float32.

    config.input.crop_size = (320, 320)  # Our choice (multiple of 8); Yu & Koltun crop larger.
    config.input.min_scale = 0.5  # DeepLab-style random rescaling; our choice.
    config.input.max_scale = 2.0
    config.input.random_flip = True  # VOC objects are mirror-symmetric classes.
    # ≈ ImageNet RGB mean: padding is ~0 after Caffe preprocessing (DeepLab, Yu & Koltun).
    config.input.fill_rgb = (124, 117, 104)
    config.input.eval_size = (512, 512)  # VOC images are at most 500x500.
    config.input.shuffle_buffer = 10_582  # The whole train_aug split.

    config.segmentor.name = "dilated8"
    config.segmentor.pretrained = "imagenet"  # Or a path to Keras's vgg16_..._kernels.h5.
    config.segmentor.dropout_rate = 0.5  # VGG16's / Yu & Koltun's fc6/fc7 dropout.
    config.segmentor.context_module = True  # Yu & Koltun's basic context module (Dilated-8).
    config.segmentor.optimizer = "sgd"  # Yu & Koltun.
    config.segmentor.learning_rate = 1e-3  # Yu & Koltun.
    config.segmentor.schedule = "poly"  # DeepLab's poly decay; Yu & Koltun keep it fixed.
    config.segmentor.warmup_steps = 0  # Our choice: pretrained weights need no warm-up.
    config.segmentor.momentum = 0.9  # Yu & Koltun.
    config.segmentor.weight_decay = 5e-4  # VGG16 / Yu & Koltun's Caffe solver.

    config.adversary.name = "largefov"
    config.adversary.encoding = "product"  # The paper's best VOC setting with LargeFOV.
    config.adversary.tau = 0.9  # Paper's τ for the Scaling encoding (unused with Product).
    config.adversary.concat_image = False  # Product already holds the image (paper).
    # Our choice. The rest of the adversary's optimizer is default.py's (our choice too): one
    # update per segmentor step, Adam with beta1 0.5 (DCGAN), constant rate, no weight decay.
    config.adversary.learning_rate = 1e-4
    return config
