"""Your own data: a folder of images and masks (`--config=folder`), CPU-sized defaults.

Point it at the data and name the classes; nothing else needs setting:

    python -m advseg_jax.main --config=folder --workdir=runs/mine \\
        --config.folder.root=~/data/mine --config.folder.class_names=classes.txt

The keys of `config.folder` are this interface (docs/datasets.md has the layouts, the
examples and what each build error means):
  root             a dataset root in a known layout (VOC-style JPEGImages/ + SegmentationClass/
                   [+ ImageSets/Segmentation/{train,val}.txt], or images/{train,val}/ +
                   masks|annotations/{train,val}/, also training/validation); the four
                   directory keys below, when set, win over what it finds.
  train_images, train_masks, eval_images, eval_masks
                   directories, searched recursively; images and masks pair by their path
                   below the directory without extension (sub-folders kept).
  mask_suffix      what mask names add to the image stem, e.g. "_mask" (a.jpg ↔ a_mask.png).
  eval_fraction    with no eval_images: the fraction of training pairs held out (chosen by a
                   hash of each stem: reproducible, and recorded in the dataset's metadata).
  class_names      "a,b,c" or a text file with one name a line; its length is num_classes.
  void_label       the mask value meaning "ignore" (mapped to 255 at build time); the other
                   values are the classes in increasing order, the void value skipped.
  colors           for colour masks: a file of "R G B name" lines ("void" to ignore a colour);
                   also the colours of predicted masks and TensorBoard strips.
  unlabeled_images a directory of images without masks: split "unlabeled" (all-void masks)
                   for semi-supervised training (config.unlabeled_split="unlabeled").

Defaults, for a few hundred photographs of about 360x480 on a 2-core CPU in under 30 minutes
(27.5 minutes measured on Stanford Background as a folder, 2-core AMD EPYC; over 3 seeds no
worse than the former 5,000 steps, experiments/results/folder_stanford_steps), are the Stanford
Background CPU protocol (`stanford_cpu.py`) at fewer steps: Farabet's multi-scale net trained
from scratch on images downscaled by 4 (metrics at that scale; predicted masks come out at each
image's own size), 64x80 crops (a random window of a downscaled 90x120 photo), batch 8, 3,500
steps, evaluation every 700 on the eval split and 256 training images, and the paper's
two-branch adversary at half width with λ = 0.1 (the Stanford sweep found 0.1 and 0.5 within a
point of each other and 2 clearly worse: the smaller is the safer guess on data nobody has
tuned). `input.eval_size` (0, 0) is taken from the largest evaluated image. Measured on the 715
Stanford images as a folder: docs/datasets.md "Your own data".

On an accelerator, scale up to the paper's VOC setting (`voc.py`): full resolution
(`input.image_scale=1.0`, `input.crop_size=(320, 320)` or larger, `input.min_scale=0.5`,
`input.max_scale=2.0`), Dilated-8 on ImageNet VGG16 (`segmentor.name="dilated8"`,
`segmentor.pretrained="imagenet"`, SGD lr 1e-3 momentum 0.9 poly, weight decay 5e-4,
`input.fill_rgb=(124, 117, 104)`), the LargeFOV adversary with the Product encoding,
`batch_size=16`, `dtype="bfloat16"`, and tens of thousands of steps (`voc.py`: 52,500).
"""

import ml_collections

from advseg_jax.configs import stanford_cpu


def get_config() -> ml_collections.ConfigDict:
    config = stanford_cpu.get_config()
    config.dataset = "segmentation_folder"
    config.train_split = "train"
    config.eval_split = "validation"
    config.num_classes = 0  # As many as config.folder.class_names names.

    config.folder = ml_collections.ConfigDict()
    config.folder.root = ""
    config.folder.train_images = ""
    config.folder.train_masks = ""
    config.folder.eval_images = ""
    config.folder.eval_masks = ""
    config.folder.mask_suffix = ""
    config.folder.eval_fraction = 0.1
    config.folder.class_names = ""
    config.folder.void_label = 255
    config.folder.colors = ""
    config.folder.unlabeled_images = ""

    config.input.image_scale = 0.25  # ~360x480 → ~90x120: the CPU protocol's step cost.
    config.input.crop_size = (64, 80)  # Multiple of 16 (the 3-level pyramid).
    config.input.eval_size = (0, 0)  # The largest evaluated image, rounded up to 16.
    config.input.shuffle_buffer = 2_000

    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 3_500  # ~49 epochs of 572 images; ≤ 30 min wall on 2 cores.
    config.eval_every_steps = 700
    config.checkpoint_every_steps = 700
    config.log_every_steps = 50
    # A train/eval gap curve without scoring every training image at each evaluation.
    config.num_train_eval_examples = 256
    config.best_checkpoint_metric = "mean_iou"

    config.lambda_adv = 0.1  # See the module docstring.
    config.lambda_adv_warmup_steps = 0
    return config
