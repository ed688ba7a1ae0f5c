"""Fail at start, with the offending key and the valid options, not deep inside a jitted step.

A mistake found after training has begun costs the steps since the last checkpoint (an eval
size too small for the data fails at the first evaluation), and one that surfaces as a NaN
(labels beyond `num_classes`, a crop the networks shrink to nothing) sends users after the
learning rate. So sizes are checked against the networks (by tracing them abstractly, which
costs no compute) and against the dataset before the first step.

`resolve` is a run's one pass over its config: the keys left to the dataset (`num_classes`,
`input.eval_size`) are filled in and the checks made from a single `dataset_facts.DatasetFacts`,
so the dataset is read once and every check sees what the run will use.
"""

import copy
import functools
import math
import os
from typing import Dict, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from advseg_jax import accumulation
from advseg_jax import checkpointing
from advseg_jax import encodings
from advseg_jax import losses
from advseg_jax import models
from advseg_jax import optim
from advseg_jax.data import class_info
from advseg_jax.data import dataset_facts
from advseg_jax.models import exact_taps

_REFERENCE_SIZE = 1024  # A power of two: every network's downsampling divides it.
# input.eval_size meaning "the dataset's largest image, rounded up to the segmentor's multiple".
AUTO_EVAL_SIZE = (0, 0)
# What the dataset checks take: the run's facts, or a builder (read afresh at each call).
_Dataset = Union[dataset_facts.DatasetFacts, tfds.core.DatasetBuilder]


class ConfigError(ValueError):
    """A config (or config file) that cannot work; the message names the key, value and fix."""


def config_from_flag(flag_values, name: str = "config") -> ml_collections.ConfigDict:
    """The config of a `DEFINE_config_file` flag, or ConfigError naming the file and the problem.

    ml_collections defers a load failure to the first attribute access and then names the
    file "config_config"; this names the path the user typed instead.
    """
    value = flag_values[name].value
    if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        return value
    path = flag_values[name].config_filename
    file = path.split(":", 1)[0]
    if not os.path.isfile(file):
        raise ConfigError(f"--{name}={path}: config file {file!r} not found (working directory "
                          f"{os.getcwd()}). Pass a path such as --{name}=configs/default.py.")
    try:
        _ = value.seed  # Re-raises the deferred load error.
        reason = f"it did not return a ConfigDict but {type(value).__name__}"
    except Exception as error:  # Whatever the config file raised (syntax, import, ...).
        reason = str(error).replace(f"{name}_config", repr(file))
    raise ConfigError(f"--{name}={path}: cannot load config file {file!r}: {reason}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the key, its value and what to use instead.

    The config alone, so it costs no read of the dataset: `check_dataset` checks it against
    the data, and `resolve` makes both checks.
    """
    if config.lambda_adv < 0:
        raise ConfigError(f"lambda_adv={config.lambda_adv} must be >= 0 "
                          "(0 = baseline, no adversary).")
    if config.lambda_adv_warmup_steps < 0:
        raise ConfigError(f"lambda_adv_warmup_steps={config.lambda_adv_warmup_steps} must be >= 0.")
    if config.segmentor.name not in models.segmentor_names():
        raise ConfigError(f"Unknown segmentor.name={config.segmentor.name!r}; valid options: "
                          f"{models.segmentor_names()}.")
    if config.segmentor.conv_algorithm not in exact_taps.SETTINGS:
        raise ConfigError(f"Unknown segmentor.conv_algorithm={config.segmentor.conv_algorithm!r}; "
                          f"valid options: {list(exact_taps.SETTINGS)}.")
    for key, divisor in (("segmentor.width_divisor", config.segmentor.width_divisor),
                         ("adversary.fcn_width_divisor", config.adversary.fcn_width_divisor)):
        if not isinstance(divisor, int) or divisor < 1:
            raise ConfigError(f"{key}={divisor!r} must be an integer >= 1 (1 = the published "
                              "widths).")
    divisor = config.segmentor.width_divisor
    if divisor > 1 and config.segmentor.pretrained:
        raise ConfigError(f"segmentor.pretrained={config.segmentor.pretrained!r} needs VGG16's "
                          f"widths, but segmentor.width_divisor={divisor}; set "
                          "--config.segmentor.width_divisor=1 or --config.segmentor.pretrained=''.")
    if config.accumulation_loop not in accumulation.LOOPS:
        raise ConfigError(f"Unknown accumulation_loop={config.accumulation_loop!r}; valid "
                          f"options: {list(accumulation.LOOPS)} (\"auto\": unrolled on CPU, "
                          "a scan on GPU/TPU).")
    _validate_semi_supervised(config)
    if optim.uses_adversary(config):
        if config.adversary.label_resolution not in ("output", "input"):
            raise ConfigError(f"Unknown adversary.label_resolution="
                              f"{config.adversary.label_resolution!r}; valid options: "
                              "['output', 'input'].")
        if config.adversary.name not in models.adversary_names():
            raise ConfigError(f"Unknown adversary.name={config.adversary.name!r}; valid options: "
                              f"{models.adversary_names()}.")
        encodings.check_encoding(config.adversary.encoding)
        if not 0.0 < config.adversary.tau < 1.0:
            raise ConfigError(f"adversary.tau={config.adversary.tau} must lie in (0, 1).")
        if config.adversary.steps_per_segmentor_step < 1:
            raise ConfigError(f"adversary.steps_per_segmentor_step="
                              f"{config.adversary.steps_per_segmentor_step} must be >= 1.")
    if config.adversarial_loss not in losses.ADVERSARIAL_FORMS:
        raise ConfigError(f"Unknown adversarial_loss={config.adversarial_loss!r}; valid options: "
                          f"{list(losses.ADVERSARIAL_FORMS)}.")
    for part in ("segmentor", "adversary"):
        sub = config[part]
        if sub.optimizer not in optim.OPTIMIZERS:
            raise ConfigError(f"Unknown {part}.optimizer={sub.optimizer!r}; valid options: "
                              f"{list(optim.OPTIMIZERS)}.")
        if sub.schedule not in optim.SCHEDULES:
            raise ConfigError(f"Unknown {part}.schedule={sub.schedule!r}; valid options: "
                              f"{list(optim.SCHEDULES)}.")
    if config.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype={config.dtype!r}; valid options: "
                          "['float32', 'bfloat16', 'float16'].")
    if config.num_classes < 1:
        raise ConfigError(f"num_classes={config.num_classes}: resolve it from the dataset first "
                          "(config_checks.resolve), or set it to the class count.")
    if config.best_checkpoint_metric not in ("", *checkpointing.BEST_METRICS):
        raise ConfigError(f"Unknown best_checkpoint_metric={config.best_checkpoint_metric!r}; "
                          f"valid options: {['', *checkpointing.BEST_METRICS]}.")
    devices = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if config[key] <= 0 or config[key] % devices:
            suggestion = max(devices, config[key] // devices * devices)
            raise ConfigError(f"{key}={config[key]} must be a positive multiple of the device "
                              f"count ({devices}); e.g. {key}={suggestion}.")
    rows = config.batch_size // devices
    size = config.microbatch_size
    if size < 0 or (0 < size < rows and rows % size):
        divisors = [m for m in range(1, rows + 1) if rows % m == 0]
        raise ConfigError(f"microbatch_size={size}: use 0 (automatic: the largest that fits "
                          f"the device's memory) or a divisor of the per-device batch "
                          f"batch_size/devices = {rows}: one of {divisors}.")
    if config.memory_limit_gb < 0:
        raise ConfigError(f"memory_limit_gb={config.memory_limit_gb} must be >= 0 "
                          "(0 = the device's detected limit).")
    for key in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if config[key] <= 0:
            raise ConfigError(f"{key}={config[key]} must be > 0.")


def _validate_semi_supervised(config: ml_collections.ConfigDict) -> None:
    """The unlabeled stream's keys: weights >= 0, and no weight without the data it needs."""
    for key in ("lambda_adv_unlabeled", "lambda_semi", "semi_start_step",
                "unlabeled_batch_size"):
        if config[key] < 0:
            raise ConfigError(f"{key}={config[key]} must be >= 0.")
    if not 0.0 <= config.semi_threshold < 1.0:
        raise ConfigError(f"semi_threshold={config.semi_threshold} must lie in [0, 1): it is a "
                          "threshold on the discriminator's confidence (Hung et al.: 0.2).")
    _validate_selection(config)
    if not config.unlabeled_split:
        for key in ("lambda_adv_unlabeled", "lambda_semi"):
            if config[key] > 0:
                raise ConfigError(f"{key}={config[key]} needs unlabeled images: set "
                                  "config.unlabeled_split (e.g. 'train[72:]'), or set "
                                  f"{key}=0.")
        return
    if config.unlabeled_split == config.train_split:
        raise ConfigError(f"unlabeled_split={config.unlabeled_split!r} is the labeled "
                          "train_split itself; use a disjoint split or slice (e.g. "
                          "train_split='train[:72]', unlabeled_split='train[72:]').")
    if config.lambda_adv_unlabeled == 0 and config.lambda_semi == 0:
        raise ConfigError(f"unlabeled_split={config.unlabeled_split!r} is set but no loss "
                          "term uses it: set lambda_adv_unlabeled and/or lambda_semi > 0, or "
                          "unlabeled_split='' (no stream, no cost).")
    if config.num_classes >= 254:
        raise ConfigError(f"num_classes={config.num_classes}: the unlabeled stream codes "
                          "labels in one uint8 channel and needs num_classes <= 253.")
    batch = config.unlabeled_batch_size or config.batch_size
    if batch % jax.device_count():
        raise ConfigError(f"unlabeled_batch_size={batch} must be a multiple of the device "
                          f"count ({jax.device_count()}).")
    rows, size = config.batch_size // jax.device_count(), config.microbatch_size
    unlabeled_rows = batch // jax.device_count()
    if 0 < size < rows and rows % size == 0 and unlabeled_rows % (rows // size):
        raise ConfigError(f"microbatch_size={size} cuts the {rows} labeled images per device "
                          f"into {rows // size} microbatches, which must also split the "
                          f"{unlabeled_rows} unlabeled ones (unlabeled_batch_size={batch}) "
                          "evenly: choose another microbatch_size (0 = automatic) or a "
                          "multiple of that count as unlabeled_batch_size.")
    if (config.lambda_semi > 0 and optim.discriminator_selects(config)
            and config.adversary.name != "fcn"):
        raise ConfigError(f"lambda_semi={config.lambda_semi} selects pixels by the "
                          "discriminator's per-pixel confidence, but adversary.name="
                          f"{config.adversary.name!r} gives one verdict per image. Use "
                          "adversary.name='fcn', or lambda_semi=0.")


def _validate_selection(config: ml_collections.ConfigDict) -> None:
    """`semi_selection` and the selection curves' keys: refused where they cannot mean anything."""
    if config.semi_selection not in optim.SEMI_SELECTIONS:
        raise ConfigError(f"Unknown semi_selection={config.semi_selection!r}; valid options: "
                          f"{list(optim.SEMI_SELECTIONS)}.")
    if config.semi_selection == "softmax" and config.lambda_semi > 0:
        if not 0.0 < config.semi_threshold < 1.0:
            raise ConfigError(f"semi_threshold={config.semi_threshold} with "
                              "semi_selection='softmax' must lie in (0, 1): a threshold on "
                              "the segmentor's maximum softmax (UniMatch: 0.95).")
    thresholds = list(config.selection_curve_thresholds)
    if config.selection_curves_split:
        if len(thresholds) < 10 or any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"selection_curve_thresholds={tuple(thresholds)} must be >= 10 "
                              "values in [0, 1] (confidences), e.g. 0.05, 0.1, ..., 0.95.")
        if thresholds != sorted(set(thresholds)):
            raise ConfigError(f"selection_curve_thresholds={tuple(thresholds)} must be "
                              "strictly increasing.")
        if config.selection_curves_split == config.train_split:
            raise ConfigError(f"selection_curves_split={config.selection_curves_split!r} is "
                              "the labeled train_split: the curves score the selection on "
                              "images trained on without their masks; use a slice of "
                              "unlabeled_split (e.g. 'train[72:144]').")


def _spatial_shapes(module, *inputs) -> Dict[str, Tuple[int, int]]:
    """(H, W) of every 4-D intermediate output of `module` on `inputs`, traced without compute."""
    init = functools.partial(module.init, train=False, capture_intermediates=True)
    variables = jax.eval_shape(init, jax.random.key(0), *inputs)
    return {"/".join(str(k.key) for k in path
                     if isinstance(k, jax.tree_util.DictKey) and k.key != "__call__"):
            tuple(leaf.shape[1:3])
            for path, leaf in jax.tree_util.tree_leaves_with_path(variables["intermediates"])
            if len(leaf.shape) == 4}


def _images(size: Tuple[int, int]) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)


def size_multiple(config: ml_collections.ConfigDict) -> int:
    """The segmentor's largest downsampling factor: input sides must be multiples of it.

    Found from the network itself (at a large power-of-two size), not from a table that each
    new model would have to keep in step.
    """
    shapes = _spatial_shapes(models.build_segmentor(config),
                             _images((_REFERENCE_SIZE, _REFERENCE_SIZE)))
    return max(_REFERENCE_SIZE // min(shape) for shape in shapes.values() if min(shape) > 0)


def _too_small(config: ml_collections.ConfigDict, size: Tuple[int, int],
               with_adversary: bool) -> Optional[str]:
    """Why `size` is too small for the networks (an intermediate map of size 0), or None."""
    segmentor = models.build_segmentor(config)
    try:
        shapes = _spatial_shapes(segmentor, _images(size))
        if with_adversary:
            out = jax.eval_shape(functools.partial(segmentor.apply, train=False),
                                 jax.eval_shape(segmentor.init, jax.random.key(0),
                                                _images(size)), _images(size))
            h, w = (size if config.adversary.label_resolution == "input"
                    else out.shape[1:3])
            channels = encodings.encoded_channels(config.adversary.encoding, config.num_classes)
            adversary_shapes = _spatial_shapes(
                models.build_adversary(config), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32),
                jax.ShapeDtypeStruct((1, h, w, channels), jnp.float32))
            shapes.update({f"adversary/{k}": v for k, v in adversary_shapes.items()})
    except Exception as error:  # Shapes of 0 fail inside resizes and pools in various ways.
        return f"tracing the networks fails ({type(error).__name__}: {str(error)[:200]})"
    empty = [name for name, shape in shapes.items() if min(shape) == 0]
    return f"the output of layer {empty[0]} would be empty" if empty else None


def check_input_sizes(config: ml_collections.ConfigDict) -> None:
    """`input.crop_size` and `input.eval_size` against the networks' downsampling.

    A side that is no multiple of the segmentor's downsampling misaligns its output grid with
    the labels (or fails in a resize); one that leaves an empty map makes every loss NaN.
    """
    multiple = size_multiple(config)
    for key in ("crop_size", "eval_size"):
        size = tuple(config.input[key])
        if key == "eval_size" and size == AUTO_EVAL_SIZE:
            continue  # Resolved from the dataset (`with_eval_size`), a multiple by construction.
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ConfigError(f"input.{key}={size} must be two positive integers (height, width).")
        with_adversary = key == "crop_size" and optim.uses_adversary(config)
        networks = (f"segmentor {config.segmentor.name!r}" + (
            f" and adversary {config.adversary.name!r}" if with_adversary else ""))
        fix = tuple(math.ceil(s / multiple) * multiple for s in size)
        reason = None if size != fix else _too_small(config, size, with_adversary)
        if size != fix or reason:
            if _too_small(config, fix, with_adversary):
                side = next(k * multiple for k in range(1, 257)
                            if not _too_small(config, (k * multiple,) * 2, with_adversary))
                fix = tuple(max(side, s) for s in fix)
            problem = (f"segmentor {config.segmentor.name!r} downsamples by {multiple}, so each "
                       f"side must be a multiple of {multiple}" if reason is None else
                       f"it is too small for {networks}: {reason}, so every loss would be NaN")
            raise ConfigError(f"input.{key}={size}: {problem}. Use e.g. "
                              f"--config.input.{key}='{fix}'.")


def resolve(config: ml_collections.ConfigDict,
            facts: Optional[dataset_facts.DatasetFacts] = None, *, check: bool = True
            ) -> Tuple[ml_collections.ConfigDict, dataset_facts.DatasetFacts]:
    """`config` resolved against its dataset, and checked, from one read of the dataset.

    `num_classes` 0 becomes the dataset's class count and `input.eval_size` (0, 0) the largest
    evaluated image's size; with `check`, the config is validated and checked against the
    data (`check_dataset`). Without `facts`, the dataset is prepared on first use
    (`dataset_facts.load`). Writes nothing, so a run refuses before touching its workdir.
    """
    validated = check and bool(config.num_classes)
    if validated:  # A config mistake refused before a first-time build.
        validate_config(config)
    if facts is None:
        try:
            facts = dataset_facts.load(config)
        except ValueError as error:  # FolderError, a TFRecord build, no class names, ...
            raise ConfigError(str(error)) from error
    config = dataset_facts.with_num_classes(config, facts)
    if check and not validated:  # num_classes came from the data: now the config is whole.
        validate_config(config)  # Before sizes: they trace the configured networks.
    config = with_eval_size(config, facts)
    if check:
        check_input_sizes(config)
        check_dataset(config, facts)
    return config, facts


def largest_image(builder: tfds.core.DatasetBuilder, split: str,
                  num_examples: Optional[int] = None) -> Tuple[int, int]:
    """(max height, max width) over `split` (its first `num_examples`); see
    `dataset_facts.largest_image`, and `DatasetFacts.largest_image`, which computes it once."""
    return dataset_facts.largest_image(builder, split, num_examples)


def _evaluated_splits(config: ml_collections.ConfigDict) -> List[Tuple[str, Optional[int]]]:
    splits = [(config.eval_split, None)]
    if config.num_train_eval_examples:
        count = config.num_train_eval_examples
        splits.append((config.train_split, count if count > 0 else None))
    return splits


def _evaluated_sizes(config: ml_collections.ConfigDict,
                     facts: dataset_facts.DatasetFacts) -> List[Tuple[str, Tuple[int, int]]]:
    """(split, largest image) of each evaluated split, after `input.image_scale` (evaluation
    sees images rescaled by it, with augment.rescale's rounding)."""
    return [(split, tuple(max(1, int(np.round(side * config.input.image_scale)))
                          for side in facts.largest_image(split, count)))
            for split, count in _evaluated_splits(config)]


def largest_evaluated_image(config: ml_collections.ConfigDict, dataset: _Dataset
                            ) -> Tuple[int, int]:
    """(max height, max width) over the evaluated images, after `input.image_scale`."""
    largest = (1, 1)
    for _, size in _evaluated_sizes(config, dataset_facts.of(config, dataset)):
        largest = (max(largest[0], size[0]), max(largest[1], size[1]))
    return largest


def with_eval_size(config: ml_collections.ConfigDict,
                   dataset: _Dataset) -> ml_collections.ConfigDict:
    """`config`, or a copy whose `input.eval_size` (0, 0) is the largest evaluated image's
    size rounded up to the segmentor's multiple: a dataset nobody has measured just works."""
    if tuple(config.input.eval_size) != AUTO_EVAL_SIZE:
        return config
    multiple = size_multiple(config)
    resolved = copy.deepcopy(config)
    resolved.input.eval_size = tuple(math.ceil(side / multiple) * multiple
                                     for side in largest_evaluated_image(config, dataset))
    return resolved


def check_class_count(config: ml_collections.ConfigDict,
                      facts: dataset_facts.DatasetFacts) -> None:
    """`num_classes` against the dataset's classes (also for tools that need no data)."""
    try:
        facts.check_num_classes(config.num_classes)
    except ValueError as error:
        raise ConfigError(f"{error} (label ids 0..num_classes-1; 255 = void)") from None


def check_dataset(config: ml_collections.ConfigDict, dataset: _Dataset) -> None:
    """`num_classes` against the dataset's classes, the unlabeled split's size, and
    `input.eval_size` against the largest evaluated image."""
    facts = dataset_facts.of(config, dataset)
    check_class_count(config, facts)
    if config.unlabeled_split:
        try:
            count = facts.num_examples(config.unlabeled_split)
        except (KeyError, ValueError) as error:
            raise ConfigError(f"unlabeled_split={config.unlabeled_split!r} is not a split of "
                              f"{config.dataset!r} ({error}); its splits: "
                              f"{sorted(facts.split_sizes)}. Slices such as 'train[72:]' "
                              "work too.") from None
        if count < (config.unlabeled_batch_size or config.batch_size) // jax.process_count():
            raise ConfigError(f"unlabeled_split={config.unlabeled_split!r} has {count} "
                              "examples, fewer than one unlabeled batch.")
    multiple = size_multiple(config)
    eval_size = tuple(config.input.eval_size)
    for split, largest in _evaluated_sizes(config, facts):
        if largest[0] > eval_size[0] or largest[1] > eval_size[1]:
            fix = tuple(math.ceil(max(a, b) / multiple) * multiple
                        for a, b in zip(largest, eval_size))
            raise ConfigError(
                f"input.eval_size={eval_size} is smaller than the largest image of "
                f"{config.dataset!r} split {split!r} ({largest[0]}x{largest[1]}, HxW, after "
                f"input.image_scale={config.input.image_scale}); "
                f"evaluation pads every image to eval_size. Use "
                f"--config.input.eval_size='{fix}'.")


def check_labels(labels: np.ndarray, config: ml_collections.ConfigDict, step: int) -> None:
    """Every label of a training batch is a class id below `num_classes` or void (255).

    Out-of-range labels make the cross-entropy NaN and would be reported as a non-finite
    step, pointing at the learning rate instead of at the data or `num_classes`.
    """
    bad = (labels >= config.num_classes) & (labels != class_info.IGNORE_LABEL)
    if bad.any():
        found = np.unique(labels[bad])
        raise ConfigError(
            f"The training batch of step {step} has label id(s) {found[:10].tolist()} in "
            f"dataset {config.dataset!r}, but num_classes={config.num_classes} allows 0.."
            f"{config.num_classes - 1} and 255 (void). Set --config.num_classes to the "
            "dataset's class count, or fix its labels.")
    if (labels < 0).any():
        raise ConfigError(f"The training batch of step {step} has negative label ids in "
                          f"dataset {config.dataset!r}; labels must be 0..num_classes-1 or 255.")
